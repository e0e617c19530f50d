"""Part segmentation: an integer part label per pixel, with the same meaning in every image.

SegAD needs, for every image, a map of object parts pixel-aligned with the anomaly maps. Two sources:

- **User part maps** (:class:`UserPartMaps`): one file per image, ``<stem>.npy`` or ``<stem>.png``
  with labels 0..K-1, found under ``<folder>/<split>/<defect_dir>/``, ``<folder>/<defect_dir>/`` or
  ``<folder>/``. Detectors receive pixels, not file names, so images are matched to their files by
  the hash of their decoded pixels over the category's image folder.
- **Unsupervised parts** (:class:`KMeansParts`), fitted once on training goods so that labels are
  stable across images: k-means over per-pixel features. Preferred features are frozen Lite0
  blocks 2-4 (ComAD-style component segmentation); without backbone weights (or torch), colour plus
  position. Clusters are numbered by decreasing share of training pixels. Fitted centroids are
  cached under the autovi cache dir, keyed by a hash of the training images and the settings.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autovi_core.dataset import image_paths
from autovi_core.errors import ConfigError, DataError
from autovi_core.files import is_image_file

LITE0_LAYERS = ("blocks.2", "blocks.4")  # stride 8 and 16 (timm exposes blocks 0, 1, 2, 4, 6)
PART_MAP_SUFFIXES = (".npy", ".png")
MAX_FIT_POINTS = 20000
MAX_FIT_IMAGES = 16
"""k-means sees pixels of at most this many training images (evenly spaced through the list)."""


# --- small helpers ---------------------------------------------------------------------------------
def nearest_resize(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer (H, W) map to ``size`` (pixel centres aligned)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def image_hash(image: np.ndarray) -> str:
    array = np.ascontiguousarray(image)
    return hashlib.sha1(str(array.shape).encode() + array.tobytes()).hexdigest()


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 3, iterations: int = 50) -> np.ndarray:
    """(k, D) centroids by Lloyd's algorithm from k-means++ starts; the lowest inertia of ``n_init`` runs."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < k:
        raise ValueError(f"k-means needs at least {k} points, got {len(points)}")
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centroids = points[[rng.integers(len(points))]]
        while len(centroids) < k:  # k-means++: next start drawn proportionally to squared distance
            d2 = squared_distances(points, centroids).min(axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else None
            centroids = np.vstack([centroids, points[rng.choice(len(points), p=p)]])
        for _ in range(iterations):
            assign = squared_distances(points, centroids).argmin(axis=1)
            moved = np.array([points[assign == j].mean(axis=0) if np.any(assign == j) else centroids[j] for j in range(k)])
            if np.allclose(moved, centroids):
                break
            centroids = moved
        inertia = squared_distances(points, centroids).min(axis=1).sum()
        if inertia < best_inertia:
            best, best_inertia = centroids, inertia
    return best


def squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d2 = (points**2).sum(1)[:, None] - 2 * points @ centroids.T + (centroids**2).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def order_by_population(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Centroids sorted by decreasing number of points assigned to them (ties: original order)."""
    counts = np.bincount(squared_distances(points, centroids).argmin(axis=1), minlength=len(centroids))
    return centroids[np.argsort(-counts, kind="stable")]


def cache_dir() -> Path:
    from autovi_core.cache import cache_root

    return cache_root() / "segad" / "parts"


# --- unsupervised parts ------------------------------------------------------------------------------
class KMeansParts:
    """k-means part segmentation fitted on training goods (``features`` = ``backbone`` or ``colour``)."""

    def __init__(
        self,
        n_parts: int,
        features: str = "backbone",
        input_size: int = 128,
        position_weight: float = 0.5,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        if features not in ("backbone", "colour"):
            raise ConfigError(f"unknown part features {features!r}; valid: backbone, colour")
        self.n_parts = int(n_parts)
        self.features = features
        self.input_size = int(input_size)
        self.position_weight = float(position_weight)
        self.device = device
        self.seed = int(seed)
        self.centroids: np.ndarray | None = None
        self._extractor: Any = None

    # per-pixel features ------------------------------------------------------------------------
    def extractor(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import LITE0, FeatureExtractor

            self._extractor = FeatureExtractor(LITE0, LITE0_LAYERS, device=self.device)
        return self._extractor

    def pixel_features(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """(N, H, W, D) float32 features of every pixel of the (H, W) = ``size`` label grid."""
        if self.features == "colour":
            return np.stack([self._colour_features(image, size) for image in images])
        return np.concatenate([self._backbone_features(images[i : i + 16], size) for i in range(0, len(images), 16)])

    def _colour_features(self, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32) / 255.0
        rows, cols = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]), indexing="ij")
        position = self.position_weight * np.stack([rows, cols], axis=-1).astype(np.float32)
        return np.concatenate([rgb, position], axis=-1)

    def _backbone_features(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from autovi_core.backbones import InputGeometry

        layers = self.extractor()(InputGeometry(self.input_size).to_tensor(images))
        grid = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in layers.values()]
        features = F.normalize(torch.cat(grid, dim=1), dim=1)
        return features.permute(0, 2, 3, 1).cpu().numpy()

    # fit and apply ---------------------------------------------------------------------------------
    def cache_key(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> str:
        digest = hashlib.sha1()
        for image in images:
            digest.update(image_hash(image).encode())
        settings = (self.n_parts, self.features, self.input_size, self.position_weight, size, self.seed)
        digest.update(repr(settings).encode())
        return digest.hexdigest()[:24]

    def fit(self, images: Sequence[np.ndarray], size: tuple[int, int], use_cache: bool = True) -> KMeansParts:
        """Fit the centroids on pixels sampled from ``images`` (or load them from the cache)."""
        from autovi_core.cache import load_or_build

        path = cache_dir() / f"{self.cache_key(images, size)}.npy"
        self.centroids, _ = load_or_build(
            path,
            lambda: self._fit_centroids(images, size),
            load=lambda cached: np.load(cached, allow_pickle=False),
            save=lambda centroids, tmp: np.save(tmp, centroids),
            use_cache=use_cache,
        )
        return self

    def _fit_centroids(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """(n_parts, D) float32 k-means centroids of pixels sampled from ``images``."""
        rng = np.random.default_rng(self.seed)
        if len(images) > MAX_FIT_IMAGES:
            images = [images[int(i)] for i in np.linspace(0, len(images) - 1, MAX_FIT_IMAGES).round()]
        per_image = max(1, MAX_FIT_POINTS // max(1, len(images)))
        points = []
        for start in range(0, len(images), 16):
            for features in self.pixel_features(images[start : start + 16], size):
                flat = features.reshape(-1, features.shape[-1])
                points.append(flat[rng.choice(len(flat), size=min(per_image, len(flat)), replace=False)])
        points = np.concatenate(points).astype(np.float64)
        return order_by_population(points, kmeans(points, self.n_parts, rng)).astype(np.float32)

    def labels(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """(N, H, W) int64 part labels: the nearest centroid of every pixel's features."""
        if self.centroids is None:
            raise RuntimeError("part segmentation is not fitted")
        features = self.pixel_features(images, size)
        flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
        return squared_distances(flat, self.centroids.astype(np.float64)).argmin(axis=1).reshape(features.shape[:3])


# --- user part maps -------------------------------------------------------------------------------
class UserPartMaps:
    """Part maps provided by the user, one per image, found by the image's category-relative path.

    The runner hands detectors :class:`autovi_core.KeyedImages`, whose paths (``test/scratch/003.png``)
    give the part map ``<folder>/test/scratch/003.(npy|png)``, ``<folder>/scratch/003.*`` or
    ``<folder>/003.*``. Images without paths (plain lists, e.g. from the Python API) are matched by
    pixel content against the images under ``images_root``, which is then required.
    """

    def __init__(self, folder: str | os.PathLike[str], images_root: str | os.PathLike[str] | None, n_parts: int) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ConfigError(f"part_maps folder {self.folder} does not exist")
        self.images_root = None if images_root is None else Path(images_root).expanduser()
        if self.images_root is not None and not self.images_root.is_dir():
            raise ConfigError(f"part_maps_images folder {self.images_root} does not exist")
        self.n_parts = int(n_parts)
        self._index: dict[str, Path] | None = None

    def index(self) -> dict[str, Path]:
        """Pixel hash -> image path relative to ``images_root`` (built once)."""
        if self.images_root is None:
            raise ConfigError(
                "SegAD received images without their paths (not from the runner), so part maps must be "
                "matched by content: set part_maps_images to the category folder holding the images"
            )
        if self._index is None:
            from autovi_core.image_io import read_rgb

            self._index = {}
            for path in sorted(self.images_root.rglob("*")):
                if is_image_file(path) and "ground_truth" not in path.parts and path.is_file():
                    self._index.setdefault(image_hash(read_rgb(path)), path.relative_to(self.images_root))
        return self._index

    def relative_path(self, image: np.ndarray) -> Path:
        relative = self.index().get(image_hash(image))
        if relative is None:
            raise DataError(f"an image given to SegAD is not among the images under {self.images_root}")
        return relative

    def find(self, relative: Path) -> Path:
        """The part map of the image at ``relative`` (its path inside the category folder)."""
        stem, parent = relative.stem, relative.parent
        for base in (self.folder / parent, self.folder / parent.name, self.folder):
            for suffix in PART_MAP_SUFFIXES:
                if (base / f"{stem}{suffix}").is_file():
                    return base / f"{stem}{suffix}"
        raise DataError(f"no part map for {relative} under {self.folder} (looked for {parent}/{stem}.npy|png and {stem}.npy|png)")

    def labels(self, images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """(N, H, W) int64 part labels read from the user's files, nearest-resized to ``size``."""
        from autovi_core.image_io import read_map

        out = np.empty((len(images), *size), dtype=np.int64)
        paths = image_paths(images)
        for i, image in enumerate(images):
            path = self.find(Path(paths[i]) if paths is not None else self.relative_path(image))
            labels = read_map(path)
            if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= self.n_parts:
                raise DataError(f"{path}: part labels must be integers 0..{self.n_parts - 1} (n_parts)")
            out[i] = nearest_resize(labels.astype(np.int64), size)
        return out
