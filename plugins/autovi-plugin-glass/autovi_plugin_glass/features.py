"""GLASS's backbone features (paper: feature extraction, after SimpleNet and PatchCore).

Every chosen layer (WideResNet-50 ``layer2`` and ``layer3`` in the paper) is aggregated over the
``patch_size`` x ``patch_size`` neighbourhood of each position on its own grid (the mean, zero
padding counted at the border), the deeper layers are upsampled bilinearly to the first layer's grid,
and the layers are concatenated along the channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def local_average(feature: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Mean of every position of (N, C, H, W) over its ``patch_size`` x ``patch_size`` window (zeros outside)."""
    if patch_size <= 1:
        return feature
    return F.avg_pool2d(feature, patch_size, stride=1, padding=patch_size // 2, count_include_pad=True)


def combine_layers(features: Mapping[str, torch.Tensor], layers: Sequence[str], patch_size: int) -> torch.Tensor:
    """(N, D, h, w): each layer locally averaged on its own grid, upsampled to the first layer's grid, concatenated."""
    grid = tuple(features[layers[0]].shape[-2:])
    maps = []
    for name in layers:
        aggregated = local_average(features[name], patch_size)
        if tuple(aggregated.shape[-2:]) != grid:
            aggregated = F.interpolate(aggregated, size=grid, mode="bilinear", align_corners=False)
        maps.append(aggregated)
    return torch.cat(maps, dim=1)
