"""Anomaly sources, DRAEM's source augmentation and the blend that pastes a source into an image.

All images here are ``(H, W, 3)`` float32 arrays in [0, 1]. A source draws a texture of a requested
size from a :class:`numpy.random.Generator`, so a synthesis pipeline seeded per sample is exactly
reproducible. DRAEM uses DTD textures (:class:`TextureFolderSource`); offline, procedural textures
(:class:`ProceduralTextureSource`) and augmented crops of the training images
(:class:`TrainingCropSource`) stand in for them (see the spec's offline table).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from scipy.ndimage import rotate as nd_rotate

from ..errors import ConfigError, DataError
from ..files import IMAGE_SUFFIXES, is_image_file
from .perlin import perlin_mask, perlin_noise

__all__ = [
    "AnomalySource",
    "TextureFolderSource",
    "ProceduralTextureSource",
    "TrainingCropSource",
    "MixedSource",
    "SolidColourSource",
    "SOURCE_KINDS",
    "make_source",
    "augment_source",
    "blend_anomaly",
    "synthesize_anomaly",
    "resize_float",
]

SOURCE_KINDS = ("auto", "folder", "procedural", "train_crops")


class AnomalySource(Protocol):
    """Draws ``(H, W, 3)`` float32 textures in [0, 1]."""

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray: ...

    def describe(self) -> str: ...


def resize_float(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``(h, w, 3)`` float image in [0, 1] to ``shape = (H, W)``."""
    if image.shape[:2] == tuple(shape):
        return image.astype(np.float32, copy=False)
    channels = [
        np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR))
        for c in range(image.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def _to_float(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


# --- sources --------------------------------------------------------------------------------------
class TextureFolderSource:
    """Texture images from a user-given folder (searched recursively), e.g. the DTD images."""

    def __init__(self, folder: str | Path, cache_size: int = 256) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: texture folder does not exist")
        self.files = sorted(p for p in self.folder.rglob("*") if is_image_file(p))
        if not self.files:
            raise DataError(f"{self.folder}: texture folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.cache_size = cache_size
        self._cache: dict[Path, np.ndarray] = {}

    def _load(self, path: Path) -> np.ndarray:
        image = self._cache.get(path)
        if image is None:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB"), dtype=np.float32) / 255.0
            if len(self._cache) < self.cache_size:
                self._cache[path] = image
        return image

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        return resize_float(self._load(self.files[int(rng.integers(len(self.files)))]), shape)

    def describe(self) -> str:
        return f"folder({self.folder}, {len(self.files)} images)"


class ProceduralTextureSource:
    """Random procedural textures: stripes, multi-octave noise, checkerboards and colour blobs."""

    KINDS = ("stripes", "noise", "checker", "blobs")

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        kind = self.KINDS[int(rng.integers(len(self.KINDS)))]
        return getattr(self, f"_{kind}")(shape, rng).astype(np.float32)

    @staticmethod
    def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(0.0, 1.0, size=(n, 3)).astype(np.float32)

    @staticmethod
    def _coords(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates in a random rotated frame, scaled to [about -0.5, 0.5]."""
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        y, x = y / max(shape) - 0.5, x / max(shape) - 0.5
        theta = rng.uniform(0.0, math.pi)
        return math.cos(theta) * x + math.sin(theta) * y, -math.sin(theta) * x + math.cos(theta) * y

    def _stripes(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        u, _ = self._coords(shape, rng)
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(2.0, 24.0) * u + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            wave = (wave > rng.uniform(0.3, 0.7)).astype(np.float32)
        a, b = self._colours(rng, 2)
        return a + wave[..., None] * (b - a)

    def _noise(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        channels = []
        for _ in range(3):
            total = np.zeros(shape, np.float32)
            for octave in range(int(rng.integers(2, 5))):
                freq = float(2 ** (octave + 1))
                total += perlin_noise(shape, (freq, freq), rng) / (2**octave)
            channels.append(total)
        noise = np.stack(channels, axis=-1)
        noise = (noise - noise.min()) / max(float(noise.max() - noise.min()), 1e-6)
        return noise * rng.uniform(0.4, 1.0) + rng.uniform(0.0, 0.3)

    def _checker(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        u, v = self._coords(shape, rng)
        cells = rng.uniform(3.0, 16.0)
        board = (np.floor(u * cells) + np.floor(v * cells)) % 2
        a, b = self._colours(rng, 2)
        return a + board[..., None].astype(np.float32) * (b - a)

    def _blobs(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        n = int(rng.integers(2, 6))
        colours = self._colours(rng, n)
        k = int(rng.integers(1, 4))
        fields = np.stack([perlin_noise(shape, (2.0**k, 2.0**k), rng) for _ in range(n)])
        return colours[np.argmax(fields, axis=0)]

    def describe(self) -> str:
        return "procedural(" + ",".join(self.KINDS) + ")"


class TrainingCropSource:
    """Random crops of the training images, flipped and rotated by multiples of 90 degrees."""

    def __init__(self, images: Sequence[np.ndarray], min_crop: float = 0.25) -> None:
        if len(images) == 0:
            raise ConfigError("TrainingCropSource needs at least one training image")
        self.images = [_to_float(image) for image in images]
        self.min_crop = min_crop

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        image = self.images[int(rng.integers(len(self.images)))]
        h, w = image.shape[:2]
        frac = rng.uniform(self.min_crop, 1.0)
        ch, cw = max(1, int(round(h * frac))), max(1, int(round(w * frac)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y : y + ch, x : x + cw]
        crop = np.rot90(crop, k=int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return resize_float(np.ascontiguousarray(crop), shape)

    def describe(self) -> str:
        return f"train_crops({len(self.images)} images)"


class MixedSource:
    """Draws from one of several sources, chosen uniformly per sample."""

    def __init__(self, sources: Sequence[AnomalySource]) -> None:
        self.sources = list(sources)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        return self.sources[int(rng.integers(len(self.sources)))].sample(shape, rng)

    def describe(self) -> str:
        return "mixed(" + " + ".join(s.describe() for s in self.sources) + ")"


class SolidColourSource:
    """A random uniform colour (DSR's image-space anomalies for its upsampling module)."""

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        return np.broadcast_to(rng.uniform(0.0, 1.0, size=3).astype(np.float32), (*shape, 3)).copy()

    def describe(self) -> str:
        return "solid_colour"


def make_source(
    kind: str = "auto",
    folder: str | Path | None = None,
    train_images: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    max_train_images: int = 64,
) -> AnomalySource:
    """Choose the anomaly source.

    ``auto``: the texture folder when given, else a mix of procedural textures and training crops;
    ``folder``: the texture folder (required); ``procedural``; ``train_crops`` (needs images). At most
    ``max_train_images`` training images (drawn with ``rng``) are kept for the crops.
    """
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown anomaly source {kind!r}; valid: {', '.join(SOURCE_KINDS)}")
    if kind == "folder" or (kind == "auto" and folder):
        if not folder:
            raise ConfigError("anomaly_source='folder' needs texture_folder to be set")
        return TextureFolderSource(folder)
    crops: TrainingCropSource | None = None
    if kind in ("auto", "train_crops") and train_images is not None and len(train_images) > 0:
        images = list(train_images)
        if len(images) > max_train_images:
            pick = (rng or np.random.default_rng(0)).choice(len(images), size=max_train_images, replace=False)
            images = [images[i] for i in sorted(pick)]
        crops = TrainingCropSource(images)
    if kind == "procedural":
        return ProceduralTextureSource()
    if kind == "train_crops":
        if crops is None:
            raise ConfigError("anomaly_source='train_crops' needs training images")
        return crops
    return MixedSource([ProceduralTextureSource()] + ([crops] if crops is not None else []))


# --- DRAEM's augmentation of the source -----------------------------------------------------------
def _gamma(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.power(x, rng.uniform(0.5, 2.0))


def _brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x * rng.uniform(0.8, 1.2) + rng.uniform(-0.12, 0.12)


def _sharpness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = sum(padded[dy : dy + x.shape[0], dx : dx + x.shape[1]] for dy in range(3) for dx in range(3)) / 9.0
    return x + rng.uniform(0.0, 2.0) * (x - blur)


def _hue_saturation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate the hue about the grey axis and scale the saturation."""
    grey = x.mean(axis=-1, keepdims=True)
    chroma = (x - grey) * rng.uniform(0.5, 1.5)
    theta = rng.uniform(-math.pi / 4, math.pi / 4)
    axis = np.full(3, 1 / math.sqrt(3.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(theta) * k + (1 - math.cos(theta)) * (k @ k)
    return grey + chroma @ rot.T.astype(np.float32)


def _solarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    threshold = rng.uniform(0.125, 0.5) if rng.random() < 0.5 else rng.uniform(0.5, 0.875)
    return np.where(x >= threshold, 1.0 - x, x)


def _posterize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    levels = 2 ** int(rng.integers(1, 5))
    return np.floor(x * levels) / levels


def _invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - x


def _autocontrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = x.min(axis=(0, 1), keepdims=True), x.max(axis=(0, 1), keepdims=True)
    return (x - low) / np.maximum(high - low, 1e-6)


def _equalize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Histogram equalisation per channel (256 bins)."""
    q = np.clip(x * 255.0, 0, 255).astype(np.intp)
    out = np.empty_like(x)
    for c in range(x.shape[2]):
        cdf = np.cumsum(np.bincount(q[..., c].ravel(), minlength=256)).astype(np.float32)
        cdf = (cdf - cdf.min()) / max(float(cdf[-1] - cdf.min()), 1.0)
        out[..., c] = cdf[q[..., c]]
    return out


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return nd_rotate(x, rng.uniform(-45.0, 45.0), axes=(1, 0), reshape=False, order=1, mode="reflect")


SOURCE_AUGMENTATIONS: tuple[Callable[[np.ndarray, np.random.Generator], np.ndarray], ...] = (
    _gamma, _brightness, _sharpness, _hue_saturation, _solarize,
    _posterize, _invert, _autocontrast, _equalize, _rotate,
)  # fmt: skip
"""DRAEM's ten imgaug operations, written in numpy."""


def augment_source(source: np.ndarray, rng: np.random.Generator, n_ops: int = 3) -> np.ndarray:
    """Apply ``n_ops`` of DRAEM's ten source augmentations, chosen without replacement, in random order."""
    out = _to_float(source)
    for index in rng.choice(len(SOURCE_AUGMENTATIONS), size=n_ops, replace=False):
        out = np.clip(SOURCE_AUGMENTATIONS[int(index)](out, rng), 0.0, 1.0)
    return out.astype(np.float32)


# --- blending ------------------------------------------------------------------------------------
def blend_anomaly(image: np.ndarray, source: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """DRAEM's blend ``image*(1-M) + (1-beta)*source*M + beta*image*M``; ``beta`` = the image's share
    inside the mask (0: the source replaces the image, 1: the image is unchanged)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    m = np.asarray(mask, dtype=np.float32)
    if m.ndim == 2:
        m = m[..., None]
    return (image * (1 - m) + (1 - beta) * source * m + beta * image * m).astype(np.float32)


def synthesize_anomaly(
    image: np.ndarray,
    source: AnomalySource,
    rng: np.random.Generator,
    anomaly_prob: float = 0.5,
    beta_range: tuple[float, float] = (0.0, 0.8),
    threshold: float = 0.5,
    augment: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One DRAEM training sample: ``(augmented image, float mask (H, W))``.

    With probability ``1 - anomaly_prob`` the image is returned unchanged with an empty mask;
    otherwise an augmented source texture is blended into a Perlin mask with opacity ``1 - beta``,
    ``beta ~ U(beta_range)`` (DRAEM's code draws beta in [0, 0.8]).
    """
    image = _to_float(image)
    shape = image.shape[:2]
    if rng.random() >= anomaly_prob:
        return image, np.zeros(shape, np.float32)
    mask = perlin_mask(shape, rng, threshold=threshold, nonempty=True)
    texture = source.sample(shape, rng)
    if augment:
        texture = augment_source(texture, rng)
    beta = float(rng.uniform(*beta_range))
    return blend_anomaly(image, texture, mask, beta), mask.astype(np.float32)
