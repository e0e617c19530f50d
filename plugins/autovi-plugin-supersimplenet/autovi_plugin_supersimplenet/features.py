"""SuperSimpleNet's backbone features (paper, Sec. 3.1).

The feature maps of the chosen layers (WideResNet-50 ``layer2`` and ``layer3`` in the paper) are each
bilinearly upsampled to a common grid (the shallowest layer's grid times ``upscale``; the paper doubles
SimpleNet's resolution), concatenated, and every position is replaced by the mean of its
``patch_size`` x ``patch_size`` neighbourhood (zero padding counted at the border).
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


def combine_layers(features: Mapping[str, torch.Tensor], layers: Sequence[str], upscale: int, patch_size: int) -> torch.Tensor:
    """(N, D, h, w) features: each layer upsampled to the first layer's grid x ``upscale``, concatenated, locally averaged."""
    first = features[layers[0]]
    grid = (first.shape[-2] * upscale, first.shape[-1] * upscale)
    maps = [
        features[name]
        if features[name].shape[-2:] == grid
        else F.interpolate(features[name], size=grid, mode="bilinear", align_corners=False)
        for name in layers
    ]
    return local_average(torch.cat(maps, dim=1), patch_size)
