"""DRAEM's two sub-networks.

* Reconstructive sub-network: an encoder-decoder *without* skip connections (so it cannot copy an
  anomaly through), 3 -> 3 channels, base width 128 in the paper.
* Discriminative sub-network: a U-Net *with* skip connections over the input image concatenated with
  its reconstruction (6 channels), giving 2-channel logits (normal, anomalous); base width 64.

Block ``i`` of an encoder has ``base * min(2**i, 8)`` channels; the paper's depths are 5 (reconstructive)
and 6 (discriminative) blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + batch norm + ReLU layers."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def widths(base: int, depth: int) -> list[int]:
    return [base * min(2**i, 8) for i in range(depth)]


class Encoder(nn.Module):
    """``depth`` conv blocks with 2x max-pooling between them; returns every block's output."""

    def __init__(self, cin: int, base: int, depth: int) -> None:
        super().__init__()
        chans = widths(base, depth)
        self.blocks = nn.ModuleList(conv_block(a, b) for a, b in zip([cin, *chans[:-1]], chans))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`: 2x upsampling + conv blocks, with or without skip connections."""

    def __init__(self, base: int, depth: int, cout: int, skips: bool) -> None:
        super().__init__()
        chans = widths(base, depth)
        self.skips = skips
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i in range(depth - 1, 0, -1):
            self.ups.append(
                nn.Sequential(nn.Conv2d(chans[i], chans[i - 1], 3, padding=1), nn.BatchNorm2d(chans[i - 1]), nn.ReLU(inplace=True))
            )
            self.blocks.append(conv_block(chans[i - 1] * (2 if skips else 1), chans[i - 1]))
        self.out = nn.Conv2d(chans[0], cout, 3, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for j, (up, block) in enumerate(zip(self.ups, self.blocks)):
            x = up(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
            if self.skips:
                x = torch.cat([x, features[-2 - j]], dim=1)
            x = block(x)
        return self.out(x)


class ReconstructiveSubNetwork(nn.Module):
    """Encoder-decoder without skips: reconstructs the anomaly-free appearance of the input."""

    def __init__(self, base: int = 128, depth: int = 5) -> None:
        super().__init__()
        self.encoder = Encoder(3, base, depth)
        self.decoder = Decoder(base, depth, 3, skips=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[-1:])


class DiscriminativeSubNetwork(nn.Module):
    """U-Net over ``cat(image, reconstruction)``: 2-channel logits of the anomaly mask."""

    def __init__(self, base: int = 64, depth: int = 6, cin: int = 6) -> None:
        super().__init__()
        self.encoder = Encoder(cin, base, depth)
        self.decoder = Decoder(base, depth, 2, skips=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
