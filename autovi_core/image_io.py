"""Reading and writing images, ground-truth masks and anomaly maps, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .files import atomic_write

MAP_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc})") from None
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({exc})") from None


IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "I;16", "I;16B", "I;16L", "I")
"""Modes read as inspection images; others (CMYK, YCbCr, LAB, HSV, float) are refused."""


def read_rgb(path: Path) -> np.ndarray:
    """An image as (H, W, 3) uint8 RGB; grayscale is replicated, alpha dropped, 16-bit scaled."""
    image = _open(Path(path))
    if image.mode not in IMAGE_MODES:
        raise DataError(f"{path}: image mode {image.mode!r} is not supported; use grey, RGB or RGBA (8 or 16 bit)")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(array / 257.0 if array.max() > 255 else array, 0, 255).astype(np.uint8)
        return np.repeat(array[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_mask(path: Path) -> tuple[np.ndarray, int | None]:
    """A ground-truth mask as (bool (H, W) mask, its single non-zero value or None when empty).

    RGB, RGBA, grayscale and palette PNGs are accepted. Across the colour channels the non-zero
    values must all be one value (AutoVI stores the defect's ``pixel_value`` there), as the official
    evaluator requires; the mask is the non-zero pixels of the first channel.
    """
    image = _open(Path(path))
    if image.mode == "P":
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3:
        # grey+alpha keeps only the grey channel; RGB(A) keeps the three colour channels
        array = array[:, :, :1] if array.shape[2] == 2 else array[:, :, : min(3, array.shape[2])]
        first = array[:, :, 0]
    elif array.ndim == 2:
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        first = array
    else:
        raise DataError(f"{path}: a mask must be a 2-D image, got shape {array.shape}")
    nonzero = [int(v) for v in np.unique(array[array != 0])]  # defects are small: sort only their pixels
    if len(nonzero) > 1:
        raise DataError(f"{path}: a mask must hold one non-zero value, found {nonzero[:8]}")
    return first != 0, (nonzero[0] if nonzero else None)


def read_map(path: Path) -> np.ndarray:
    """An anomaly map as a 2-D array in its stored dtype (uint8 PNGs stay uint8).

    PNG (8/16-bit grey, or RGB/RGBA with equal colour channels), float TIFF and ``.npy`` are read.
    NaN or infinite values are an error.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        array = np.squeeze(array)
    elif suffix in (".png", ".tif", ".tiff"):
        image = _open(path)
        if image.mode in ("RGB", "RGBA", "LA", "P"):
            rgb = np.asarray(image.convert("RGB"))
            if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])):
                raise DataError(f"{path}: colour anomaly map (channels differ); write a single-channel map")
            array = rgb[:, :, 0].copy()
        else:
            array = np.asarray(image).copy()
    else:
        raise DataError(f"{path}: unsupported anomaly-map type {path.suffix!r}; use one of {', '.join(MAP_SUFFIXES)}")
    if array.ndim != 2:
        raise DataError(f"{path}: an anomaly map must be 2-D, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
        raise DataError(f"{path}: an anomaly map must be numeric, got {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{path}: anomaly map holds NaN or infinite values")
    return array


def resize_map(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a map to ``shape`` (H, W) as the official evaluator does.

    8-bit (and 16-bit) maps: Pillow's bicubic filter in their own integer form (clipped, may
    overshoot before clipping). Other maps: bilinear in float32.
    """
    height, width = shape
    if array.shape == (height, width):
        return array
    if array.dtype == np.uint8:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC))
    if array.dtype == np.uint16:
        resized = Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC)
        return np.asarray(resized).astype(np.uint16)
    resized = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(resized.resize((width, height), Image.Resampling.BILINEAR))


def write_png8(path: Path, array: np.ndarray) -> None:
    """Write a map already scaled to [0, 255] as an 8-bit grey PNG (rounded, saturated), atomically."""
    data = np.clip(np.rint(np.asarray(array, dtype=np.float64)), 0, 255).astype(np.uint8)
    with atomic_write(path) as tmp:
        Image.fromarray(data).save(tmp, format="PNG")


def write_float_tiff(path: Path, array: np.ndarray) -> None:
    """Write a float32 map as a single-channel TIFF, atomically."""
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.float32)).save(tmp, format="TIFF")
