"""Input geometry (:class:`InputGeometry`): resize (+ centre crop) of (H, W, 3) uint8 RGB images to a
normalised NCHW tensor, and the inverse for anomaly maps: crop-grid maps back to the full frame."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_imagenet(batch: torch.Tensor) -> torch.Tensor:
    """Normalise an NCHW float batch in [0, 1] with the ImageNet mean and standard deviation."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


BLUR_MATRIX_MAX_SIDE = 1024
"""Maps up to this side are blurred by two matrix products, longer ones by two 1-D convolutions. Same
result to float rounding; at 256 x 256 and sigma 4.6 the products took 0.34 ms a map and the
convolutions 2.9 ms (oneDNN runs a one-channel convolution far below the CPU's speed)."""


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (N, H, W) maps with a separable Gaussian (kernel 2*ceil(4 sigma)+1, reflected borders;
    on a side shorter than the kernel, the kernel is cut to what reflection reaches and renormalised)."""
    if sigma <= 0:
        return maps
    if max(maps.shape[-2:]) <= BLUR_MATRIX_MAX_SIDE:
        return _blur_by_matrices(maps, sigma)
    return _blur_by_convolutions(maps, sigma)


def _gaussian_taps(sigma: float, side: int) -> np.ndarray:
    """The normalised kernel, cut to at most ``side - 1`` taps each way (reflection reaches no further)."""
    radius = int(np.ceil(4 * sigma))
    pad = min(radius, side - 1)
    taps = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma) ** 2)
    return taps / taps.sum()


@functools.lru_cache(maxsize=64)
def blur_matrix(side: int, sigma: float) -> np.ndarray:
    """(side, side) float64 matrix B with ``B @ x`` = x blurred along its first axis, reflected borders
    folded in: B[i, j] sums the taps whose reflected source index ``i + t`` is j."""
    taps = _gaussian_taps(sigma, side)
    pad = len(taps) // 2
    source = np.abs(np.arange(side)[:, None] + np.arange(-pad, pad + 1)[None, :])
    source = np.where(source > side - 1, 2 * (side - 1) - source, source)
    matrix = np.zeros((side, side))
    np.add.at(matrix, (np.repeat(np.arange(side), len(taps)), source.ravel()), np.tile(taps, side))
    return matrix


def _blur_by_matrices(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    rows = torch.from_numpy(blur_matrix(int(maps.shape[-2]), float(sigma))).to(maps)
    columns = torch.from_numpy(blur_matrix(int(maps.shape[-1]), float(sigma))).to(maps)
    return rows @ maps @ columns.T


def _blur_by_convolutions(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    out = maps.unsqueeze(1)
    for dim in (2, 3):  # rows then columns
        taps = torch.from_numpy(_gaussian_taps(sigma, out.shape[dim])).to(maps)
        pad = len(taps) // 2
        padding = (0, 0, pad, pad) if dim == 2 else (pad, pad, 0, 0)
        weight = taps.view(1, 1, -1, 1) if dim == 2 else taps.view(1, 1, 1, -1)
        out = F.conv2d(F.pad(out, padding, mode="reflect") if pad else out, weight)
    return out.squeeze(1)


@dataclass(frozen=True)
class InputGeometry:
    """Resize every image to ``resize`` x ``resize`` (aspect ratio not kept), then centre-crop ``crop``.

    ``crop=None`` (or ``crop == resize``) means no crop. Maps computed on the crop are returned for
    the full frame by :meth:`maps_to_frame`: the crop's map is placed at its position in the resized
    frame, the unseen border is filled with that map's minimum, and the frame is resized to the
    requested output size. The image score is thus computed on the crop only, as in the papers.
    """

    resize: int
    crop: int | None = None

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> InputGeometry:
        """The geometry of a detector's ``resize`` / ``crop`` hyperparameters."""
        crop = hparams["crop"]
        return cls(int(hparams["resize"]), None if crop is None else int(crop))

    def __post_init__(self) -> None:
        if self.crop is not None and not 0 < self.crop <= self.resize:
            raise ConfigError(f"crop {self.crop} must be between 1 and resize {self.resize}")

    @property
    def size(self) -> int:
        """Side of the network's input."""
        return self.crop or self.resize

    @property
    def offset(self) -> int:
        return (self.resize - self.size) // 2

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 3, size, size) float32 ImageNet-normalised tensor from (H, W, 3) uint8 RGB arrays."""
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.float32)
        for i, image in enumerate(images):
            array = np.asarray(image)
            if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB images, got {array.shape} {array.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
            if tensor.shape[-2:] != (self.resize, self.resize):
                tensor = F.interpolate(tensor, size=(self.resize, self.resize), mode="bilinear", align_corners=False, antialias=True)
            o = self.offset
            out[i] = tensor[0, :, o : o + self.size, o : o + self.size]
        return normalize_imagenet(out.clamp_(0.0, 1.0))

    def batches(self, images: Sequence[np.ndarray], batch_size: int) -> Iterator[torch.Tensor]:
        """:meth:`to_tensor` over consecutive chunks of ``images``."""
        for start in range(0, len(images), batch_size):
            yield self.to_tensor(images[start : start + batch_size])

    def upsample_and_blur(self, grid_maps: torch.Tensor, sigma: float) -> torch.Tensor:
        """(N, h, w) score grids -> (N, size, size) maps on the network input: bilinear, then Gaussian blur."""
        maps = F.interpolate(grid_maps.float().unsqueeze(1), size=(self.size, self.size), mode="bilinear", align_corners=False)
        return gaussian_blur(maps.squeeze(1), sigma)

    def to_frame(self, maps: torch.Tensor, output_size: tuple[int, int]) -> np.ndarray:
        """(N, size, size) input-resolution maps -> (N, H, W) float32 full-frame maps.

        The crop is placed into the resized frame (the unseen border gets each map's minimum) and the
        frame is resized bilinearly to ``output_size``.
        """
        if self.size != self.resize:
            floor = maps.flatten(1).min(dim=1).values.view(-1, 1, 1)
            frame = floor.expand(-1, self.resize, self.resize).clone()
            o = self.offset
            frame[:, o : o + self.size, o : o + self.size] = maps
            maps = frame
        if tuple(maps.shape[-2:]) != tuple(output_size):
            maps = F.interpolate(maps.unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False).squeeze(1)
        return maps.cpu().numpy().astype(np.float32)

    def maps_to_frame(self, grid_maps: torch.Tensor, output_size: tuple[int, int], sigma: float) -> np.ndarray:
        """(N, h, w) score grids -> (N, H, W) full-frame maps: :meth:`upsample_and_blur` then :meth:`to_frame`.

        ``sigma`` is in input pixels (paper: 4 at 224).
        """
        return self.to_frame(self.upsample_and_blur(grid_maps, sigma), output_size)
