"""Traceable building blocks of an exported inference path (``autovi export``, docs/deploy.md).

An exported model takes a batch of raw images, ``(N, H, W, 3)`` uint8 RGB of one size, and returns
``(scores (N,), maps (N, H, W))``: the maps at the images' own size, as ``autovi predict`` asks for.
These modules do what :class:`~autovi_core.backbones.InputGeometry` and
:class:`~autovi_core.backbones.FeatureExtractor` do image by image, but as tensor operations whose
shapes follow the input, so that ``torch.onnx.export`` records one graph for every image size:

- :class:`ImageInput`: uint8 NHWC -> the normalised network input (antialiased bilinear resize to
  ``resize``, centre crop, ImageNet normalisation), equal to ``InputGeometry.to_tensor``;
- :class:`FeatureTaps`: the backbone's named feature maps, float32, in layer order (always computed in
  float32: its ``substitutions`` say so where the detector's ``precision`` is lower);
- :func:`to_frame`: input-resolution maps -> full-frame maps at the images' size, equal to
  ``InputGeometry.to_frame``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .features import FeatureExtractor
from .geometry import InputGeometry, normalize_imagenet


class ImageInput(torch.nn.Module):
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size) float32 ImageNet-normalised, as ``InputGeometry.to_tensor``.

    ``normalize=False`` stops at values in [0, 1] (detectors that normalise otherwise)."""

    def __init__(self, geometry: InputGeometry, normalize: bool = True) -> None:
        super().__init__()
        self.geometry = geometry
        self.normalize = normalize

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        x = images.permute(0, 3, 1, 2).float() / 255.0
        # Resizing to the same size is the identity (centre-aligned samples, a one-tap filter), so the
        # graph resizes always, where to_tensor skips images already at the working size.
        x = F.interpolate(x, size=(g.resize, g.resize), mode="bilinear", align_corners=False, antialias=True)
        o = g.offset
        x = x[:, :, o : o + g.size, o : o + g.size].clamp(0.0, 1.0)
        return normalize_imagenet(x) if self.normalize else x


class FeatureTaps(torch.nn.Module):
    """The frozen backbone of a :class:`FeatureExtractor`: its layers' feature maps as a float32 list."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        # a copy in the default memory format: the detector keeps its own (channels-last) model
        self.model = copy.deepcopy(extractor.model).to("cpu", memory_format=torch.contiguous_format).eval()
        self.layers = extractor.layers
        dtype = extractor.autocast_dtype
        self.substitutions = (  # for the ExportPlan: the graph's backbone is float32 whatever the detector's precision
            [] if dtype is None else [f"backbone in float32 (the detector runs it under {str(dtype).removeprefix('torch.')} autocast)"]
        )

    def forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return [out.float() for out in self.model(batch)]


def to_frame(maps: torch.Tensor, geometry: InputGeometry, images: torch.Tensor) -> torch.Tensor:
    """(N, size, size) input-resolution maps -> (N, H, W) maps at the size of ``images`` (N, H, W, 3),
    as ``InputGeometry.to_frame``: a crop's map placed in the resized frame, its unseen border at the
    map's minimum, then a bilinear resize."""
    if geometry.size != geometry.resize:
        pad = geometry.offset
        rest = geometry.resize - geometry.size - pad
        floor = maps.flatten(1).amin(dim=1).view(-1, 1, 1)
        maps = F.pad(maps - floor, (pad, rest, pad, rest)) + floor
    height, width = images.shape[1], images.shape[2]
    return F.interpolate(maps.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False).squeeze(1)


__all__ = ["FeatureTaps", "ImageInput", "to_frame"]
