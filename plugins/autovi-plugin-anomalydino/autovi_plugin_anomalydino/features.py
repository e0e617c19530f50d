"""Input geometry, reference rotations and patch features of AnomalyDINO.

- **Geometry.** As in the paper, an image is resized so that its shorter side is ``resize`` pixels
  (448 for DINOv2 ViT-S/14) with its aspect ratio kept; the longer side is rounded to the nearest
  multiple of the feature grid's step (14 for ViT-S/14, 16 for the CNN preset), so the grid covers
  the whole image and no border is left unseen.
- **Rotations** of reference images: multiples of 90 degrees are exact (:func:`torch.rot90`); other
  angles resample the image (bilinear) about its centre into a frame of the same size. The corners
  that come from outside the original are marked unusable: a grid cell is used only when it and its
  eight neighbours lie wholly inside the original image.
- **Features.** A ViT (the paper's DINOv2) gives one token per 14 x 14 patch: the last block's
  normalised tokens (``forward_features``) without the class and register tokens, laid out on the
  patch grid (:class:`VitPatchTokens`). A CNN (the offline ``fast`` profile) gives the maps of its
  preset layers, the deeper ones bilinearly upsampled to the first one's grid and concatenated
  (:class:`CnnPatchFeatures`, on the core's :class:`~autovi_core.backbones.FeatureExtractor`).
  Weights come from :func:`autovi_core.backbones.load_backbone` in both cases: never random.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autovi_core.backbones import FeatureExtractor, LayerPreset, load_backbone, module_from_state, normalize_imagenet
from autovi_core.errors import ConfigError


# --- geometry --------------------------------------------------------------------------------------
def network_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(H, W) the network sees for an image of ``height`` x ``width``: the shorter side becomes
    ``short_side`` (a multiple of ``multiple``), the longer one keeps the aspect ratio, rounded to the
    nearest multiple of ``multiple`` (at least ``short_side``)."""
    scale = short_side / min(height, width)

    def longer(side: int) -> int:
        return max(short_side, int(round(side * scale / multiple)) * multiple)

    if height <= width:
        return short_side, longer(width) if width != height else short_side
    return longer(height), short_side


def to_tensor(images: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) float32 ImageNet-normalised batch from (h, w, 3) uint8 RGB images (bilinear, antialiased)."""
    out = torch.empty((len(images), 3, *size), dtype=torch.float32)
    for i, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {array.shape} {array.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        if tuple(tensor.shape[-2:]) != tuple(size):
            tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[i] = tensor[0]
    return normalize_imagenet(out.clamp_(0.0, 1.0))


def group_by_size(images: Sequence[np.ndarray], short_side: int, multiple: int) -> dict[tuple[int, int], list[int]]:
    """Indices of ``images`` grouped by the network size they get, in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        h, w = np.asarray(image).shape[:2]
        groups.setdefault(network_size(h, w, short_side, multiple), []).append(index)
    return groups


# --- rotations ----------------------------------------------------------------------------------------
def rotate_resampled(batch: torch.Tensor, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` (N, C, H, W) turned counter-clockwise (as displayed) by ``degrees`` about its centre,
    bilinearly, in a frame of the same size; and the (H, W) coverage in [0, 1] of each output pixel by
    the original image (1 inside, 0 in the corners that came from outside, where the values are 0)."""
    n, _, h, w = batch.shape
    angle = math.radians(degrees)
    c, s = math.cos(angle), math.sin(angle)
    # output pixel (u, v) about the centre reads input pixel (c u - s v, s u + c v); in normalised coordinates:
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=torch.float32, device=batch.device)
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, 1, h, w], align_corners=False)
    turned = F.grid_sample(batch.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones((1, 1, h, w), dtype=torch.float32, device=batch.device)
    coverage = F.grid_sample(ones, grid[:1], mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0]
    return turned, coverage


def rotate(batch: torch.Tensor, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` turned by ``degrees`` and its (H', W') coverage: exact for multiples of 90 degrees
    (the frame turns with the image, so nothing is lost), resampled otherwise (:func:`rotate_resampled`)."""
    quarter = degrees / 90.0
    if math.isclose(quarter, round(quarter), abs_tol=1e-9):
        turned = torch.rot90(batch, int(round(quarter)) % 4, dims=(-2, -1))
        return turned, torch.ones(turned.shape[-2:], dtype=torch.float32, device=batch.device)
    return rotate_resampled(batch, degrees)


def usable_cells(coverage: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: grid cells lying wholly inside the original image, and whose eight neighbours do too
    (the features of a cell see somewhat beyond it). All True when nothing was lost."""
    if bool((coverage >= 1.0 - 1e-4).all()):
        return np.ones(grid, dtype=bool)
    inside = (coverage >= 1.0 - 1e-4).float()[None, None]
    cells = F.adaptive_avg_pool2d(inside, grid) >= 1.0 - 1e-6
    # erosion by one cell; max_pool pads with -inf, so the frame's own edge does not erode
    eroded = -F.max_pool2d(-cells.float(), 3, stride=1, padding=1)
    return (eroded[0, 0] > 0.5).cpu().numpy()


# --- features --------------------------------------------------------------------------------------------
def tokens_to_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """(N, D, h, w) patch features from (N, prefix + h*w, D) ViT tokens: the first ``prefix`` tokens
    (class and register tokens) are dropped and the rest, in row-major patch order, laid on the grid."""
    n, count, dims = tokens.shape
    h, w = grid
    if count != prefix + h * w:
        raise ValueError(f"{count} tokens are not {prefix} prefix tokens + a {h} x {w} patch grid")
    return tokens[:, prefix:, :].reshape(n, h, w, dims).permute(0, 3, 1, 2).contiguous()


class VitPatchTokens:
    """Patch tokens of a pretrained timm ViT at any input size that its patch side divides.

    The weights are resolved and checked by :func:`autovi_core.backbones.load_backbone` on the model
    as timm builds it (DINOv2: 518 x 518 position embeddings) and copied into the same model built with
    ``dynamic_img_size``, which interpolates the position embeddings to each input's grid.
    """

    def __init__(self, backbone: str, weights: str | os.PathLike[str] | None, device: torch.device) -> None:
        import timm

        full, self.weights_source = load_backbone(backbone, weights)
        try:
            model = module_from_state(lambda: timm.create_model(backbone, pretrained=False, dynamic_img_size=True), full.state_dict())
        except TypeError as exc:
            raise ConfigError(f"backbone {backbone!r} is not a timm ViT that takes dynamic input sizes ({exc})".splitlines()[0]) from None
        del full
        if not all(hasattr(model, attribute) for attribute in ("forward_features", "patch_embed", "num_prefix_tokens")):
            raise ConfigError(f"backbone {backbone!r} is not a timm VisionTransformer (no patch tokens)")
        patch = tuple(model.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise ConfigError(f"backbone {backbone!r} has non-square patches {patch}")
        self.backbone = backbone
        self.stride = int(patch[0])
        self.multiple = self.stride
        self.prefix = int(model.num_prefix_tokens)
        self.dims = int(model.embed_dim)
        self.device = device
        self.model = model.eval().requires_grad_(False).to(device)
        self.kind = f"{backbone}: last-block patch tokens ({self.dims} dims, {self.prefix} class/register token(s) dropped)"

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"input {h} x {w} is not a multiple of the patch side {self.stride}")
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            tokens = self.model.forward_features(batch.to(self.device))
        return tokens_to_grid(tokens.float(), self.prefix, (h // self.stride, w // self.stride))


class CnnPatchFeatures:
    """The preset (or chosen) layers of a pretrained CNN on the first layer's grid, concatenated."""

    def __init__(self, hparams: Mapping[str, Any], preset: LayerPreset, device: torch.device) -> None:
        self.extractor = FeatureExtractor.from_hparams(hparams, preset, str(device))
        self.weights_source = self.extractor.weights_source
        layers = self.extractor.layers
        self.stride = int(self.extractor.strides[layers[0]])
        self.multiple = int(max(self.extractor.strides.values()))
        self.dims = int(self.extractor.total_channels)
        self.kind = f"{hparams['backbone']}: layers {', '.join(layers)} on the stride-{self.stride} grid ({self.dims} dims)"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        maps = self.extractor(batch)
        ordered = [maps[name] for name in self.extractor.layers]
        grid = ordered[0].shape[-2:]
        aligned = [m if m.shape[-2:] == grid else F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in ordered]
        return torch.cat(aligned, dim=1)
