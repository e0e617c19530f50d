"""CFLOW-AD's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`CFlow.infer` for a batch of raw images: resize and normalise, the
encoder's layers, every fibre's log-likelihood under its layer's conditional flow (the positional
conditions, each block's weights, mixing matrix and the constant part of its log-determinant as
constants), exp(log p / C - normaliser) clamped at 1, upsampled and summed over the layers; the map
is the number of layers minus that sum, the image score its maximum. ``infer`` subtracts the
normaliser in float64 and the graph in float32.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from autovi_core.backbones import InputGeometry
from autovi_core.backbones.graph import FeatureTaps, ImageInput, to_frame

from .flow import CouplingBlock, positional_encoding_2d


def _block_step(block: CouplingBlock, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:meth:`CouplingBlock.forward` without its constant log-determinant terms (added once per flow)."""
    x1, x2 = x[:, : block.split], x[:, block.split :]
    s, t = block._scale_shift(x1, condition)
    y = torch.cat([x1, x2 * torch.exp(s) + t], dim=1)
    return (y * block._global_scale() + block.global_offset) @ block.mixing.T, s.sum(dim=1)


def _constant_log_det(block: CouplingBlock) -> torch.Tensor:
    """The input-independent part of a block's log|det J|, in float32 as the flow computes it."""
    return torch.log(block._global_scale()).sum() + torch.linalg.slogdet(block.mixing.float()).logabsdet


class CFlowGraph(torch.nn.Module):
    def __init__(self, taps: FeatureTaps, flows: torch.nn.ModuleList, normaliser, size: int, condition_dims: int, grids) -> None:
        super().__init__()
        self.input, self.taps, self.size = ImageInput(InputGeometry(size)), taps, size
        self.flows = copy.deepcopy(flows).cpu().float().eval()  # the detector keeps its own
        self.normaliser = [float(v) for v in normaliser]
        for i, (h, w) in enumerate(grids):
            self.register_buffer(f"pe{i}", positional_encoding_2d(condition_dims, h, w).reshape(condition_dims, h * w).T.contiguous())
        with torch.no_grad():  # log|det| of the global scales and mixing matrices: constants of a fitted flow
            self.constant = [sum(float(_constant_log_det(b)) for b in f.blocks) for f in flows]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probability = None
        for i, (feature, flow) in enumerate(zip(self.taps(self.input(images)), self.flows)):
            n, c, h, w = feature.shape
            x, condition = feature.permute(0, 2, 3, 1).reshape(-1, c), getattr(self, f"pe{i}").repeat(n, 1)
            log_det = torch.zeros_like(x[:, 0])
            for block in flow.blocks:
                x, step = _block_step(block, x, condition)
                log_det = log_det + step
            ll = -0.5 * c * math.log(2 * math.pi) - 0.5 * (x * x).sum(dim=1) + log_det + self.constant[i]
            p = torch.exp(ll.reshape(n, 1, h, w) / c - self.normaliser[i]).clamp(max=1.0)
            p = F.interpolate(p, size=(self.size, self.size), mode="bilinear", align_corners=False).squeeze(1)
            probability = p if probability is None else probability + p
        grids = len(self.flows) - probability
        return grids.flatten(1).amax(dim=1), to_frame(grids, self.input.geometry, images)
