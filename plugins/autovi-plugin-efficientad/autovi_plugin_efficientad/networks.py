"""The networks of EfficientAD: patch description networks (PDN) and the autoencoder.

A PDN is a small fully convolutional network whose every output position sees a 33 x 33 pixel
patch of the input. Without padding (anomaly detection) a 256-px input gives a 56 x 56 grid (stride
4, offset 16 px); with padding (teacher distillation) it gives 64 x 64, aligned with stride-8
features of a 512-px input to the pretrained backbone.

- PDN-S: conv4-128, avgpool2, conv4-256, avgpool2, conv3-256, conv4-out.
- PDN-M: conv4-256, avgpool2, conv4-512, avgpool2, conv1-512, conv3-512, conv4-out, conv1-out.

``width`` scales the hidden channels (1.0 in the paper) so that CPU smoke runs stay small. The layers
are an ``nn.Sequential`` in the order above (ReLU after every convolution but the last).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MODEL_SIZES = ("small", "medium")


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


def pdn(size: str, out_channels: int, *, width: float = 1.0, padding: bool = False) -> nn.Sequential:
    """A patch description network (``size`` = ``small`` or ``medium``) with ``out_channels`` outputs."""
    p = 1 if padding else 0
    pad = {1: 0, 3: p, 4: 3 * p}  # padding per kernel size when padded ("same"-ish, as in the paper's code)
    if size == "small":
        a, b = _scaled(128, width), _scaled(256, width)
        layers: list[nn.Module] = [
            nn.Conv2d(3, a, 4, padding=pad[4]), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(a, b, 4, padding=pad[4]), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(b, b, 3, padding=pad[3]), nn.ReLU(inplace=True),
            nn.Conv2d(b, out_channels, 4, padding=pad[4]),
        ]  # fmt: skip
    elif size == "medium":
        a, b = _scaled(256, width), _scaled(512, width)
        layers = [
            nn.Conv2d(3, a, 4, padding=pad[4]), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(a, b, 4, padding=pad[4]), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2, padding=p),
            nn.Conv2d(b, b, 1), nn.ReLU(inplace=True),
            nn.Conv2d(b, b, 3, padding=pad[3]), nn.ReLU(inplace=True),
            nn.Conv2d(b, out_channels, 4, padding=pad[4]), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        ]  # fmt: skip
    else:
        raise ValueError(f"model_size must be one of {MODEL_SIZES}, got {size!r}")
    return nn.Sequential(*layers)


def receptive_field(network: nn.Sequential) -> tuple[int, int]:
    """(receptive field, stride) in input pixels of a stack of convolutions and poolings."""
    field, jump = 1, 1
    for layer in network:
        if isinstance(layer, (nn.Conv2d, nn.AvgPool2d)):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            field += (k - 1) * jump
            jump *= s
    return field, jump


def output_side(image_size: int) -> int:
    """Side of an unpadded PDN's output grid for a square input (both model sizes): 256 -> 56."""
    side = (image_size - 3) // 2  # conv4 then avgpool2
    side = (side - 3) // 2  # conv4 then avgpool2
    return side - 2 - 3  # conv3, conv4 (1x1 convolutions keep the size)


class Autoencoder(nn.Module):
    """Encoder of six strided convolutions down to a 1 x 1 code; decoder of upsampling + convolutions.

    The paper's decoder upsamples to 3, 8, 15, 32, 63, 127 for a 256-px input, each step followed by
    a 4 x 4 convolution (padding 2) with ReLU and dropout 0.2, then resizes to the PDN grid. Other
    input sizes scale these sizes; the last encoder kernel covers the remaining image_size / 32 grid.
    """

    def __init__(self, out_channels: int, image_size: int, *, code: int = 64, width: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if image_size % 32 or image_size < 32:
            raise ValueError(f"EfficientAD's autoencoder needs an image size divisible by 32, got {image_size}")
        c1, c2 = _scaled(32, width), _scaled(64, width)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 4, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, code, image_size // 32),
        )  # fmt: skip
        self.sizes = [max(1, round(s * image_size / 256)) for s in (3, 8, 15, 32, 63, 127)]
        self.grid = output_side(image_size)
        self.stages = nn.ModuleList()
        for i in range(len(self.sizes)):
            self.stages.append(nn.Sequential(nn.Conv2d(code if i == 0 else c2, c2, 4, 1, 2), nn.ReLU(inplace=True), nn.Dropout(dropout)))
        self.head = nn.Sequential(nn.Conv2d(c2, c2, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(c2, out_channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        for size, stage in zip(self.sizes, self.stages):
            x = stage(F.interpolate(x, size=size, mode="bilinear"))
        return self.head(F.interpolate(x, size=self.grid, mode="bilinear"))
