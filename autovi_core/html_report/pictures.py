"""Thumbnails for the report: images, ground-truth outlines, anomaly-map overlays and threshold contours.

Composed with NumPy and Pillow; the only matplotlib use is a colour map's lookup table
(:func:`colormap_lut`). Everything is downscaled first (``THUMB`` pixels on the longer side), so
a full-size image or map is held only while its thumbnail is made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

THUMB = 160
"""Longer side of a thumbnail, in pixels."""
COLORMAP = "jet"
GT_COLOUR = (40, 255, 40)
CONTOUR_COLOUR = (255, 255, 255)
OVERLAY_ALPHA = 0.55


def colormap_lut(name: str = COLORMAP) -> np.ndarray:
    """The colour map as a (256, 3) uint8 table (index 0 = lowest value)."""
    import matplotlib

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255.0).astype(np.uint8)


def thumb_size(shape: tuple[int, int], size: int = THUMB) -> tuple[int, int]:
    """(width, height) of a thumbnail of an ``(H, W)`` picture: longer side ``size``, never upscaled."""
    height, width = shape[:2]
    scale = min(1.0, size / max(height, width, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 image resized to ``size`` (width, height)."""
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS if picture.width > size[0] else Image.Resampling.BILINEAR)
    return np.asarray(picture.convert("RGB"))


def thumbnail_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map averaged down to ``size`` (width, height), as float32."""
    picture = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32))
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.BOX if picture.width >= size[0] else Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.float32)


def thumbnail_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask at ``size`` (width, height): a thumbnail pixel is set when any part of it was.

    Small regions (a few pixels at full size) therefore stay visible after downscaling.
    """
    picture = Image.fromarray(np.asarray(mask, dtype=np.uint8) * np.uint8(255))
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.BOX)
    return np.asarray(picture) > 0


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` next to a pixel outside it (4-neighbourhood; outside the picture counts
    as outside), thickened inwards to ``width`` pixels."""
    mask = np.asarray(mask, dtype=bool)
    inner = mask.copy()
    for _ in range(max(1, width)):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def draw(rgb: np.ndarray, pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """A copy of ``rgb`` with ``pixels`` painted ``colour``."""
    out = rgb.copy()
    out[pixels] = colour
    return out


def colourise(values: np.ndarray, low: float, high: float, lut: np.ndarray) -> np.ndarray:
    """Map values to colours on the fixed scale [low, high] (clipped)."""
    span = high - low
    scaled = (values - low) / span if span > 0 else np.zeros_like(values)
    index = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.intp)
    return lut[index]


def overlay(rgb: np.ndarray, map_thumb: np.ndarray, low: float, high: float, lut: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The map's colours blended over the image (both already at thumbnail size)."""
    colours = colourise(map_thumb, low, high, lut).astype(np.float32)
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def colour_bar(lut: np.ndarray, width: int = THUMB, height: int = 10) -> np.ndarray:
    """A horizontal bar of the colour map, low on the left."""
    index = np.linspace(0, 255, width).round().astype(np.intp)
    return np.repeat(lut[index][None, :, :], height, axis=0)


def save_png(rgb: np.ndarray, path: Path) -> None:
    """Write an RGB picture as PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, format="PNG", compress_level=4)
