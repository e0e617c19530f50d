"""The built-in synthetic dataset: generated categories in exact AutoVI layout, and their cache.

The images are rendered by :mod:`autovi_core.datasets.synthetic_scenes` (three categories:
``textured_plate``, ``clip_assembly``, ``wire_harness``; each with a ``multiple`` folder whose images
carry two defect types). Categories are generated to a cache directory on first use (atomically,
safe under concurrent generation) and read back through the AutoVI reader.

The generation machinery is shared with :mod:`autovi_core.datasets.synthetic_autovi`: the marker
(:func:`read_marker`), PNG and ground-truth writers (:func:`save_png`, :func:`write_channels`,
:func:`write_defects_config`), atomic generation into a cache folder (:func:`generate_atomically`)
and the provider base class :class:`GeneratedDataset`.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..cache import cache_root
from ..dataset import Category, DatasetProvider
from ..errors import DataError
from .synthetic_scenes import (
    CATEGORY_SPECS,
    DEFAULT_SIZE,
    GENERATOR_VERSION,
    SYNTHETIC_CATEGORIES,
    CategorySpec,
    DefectSpec,
    image_streams,
    render_image,
)

MARKER_NAME = ".autovi-synthetic.json"
"""Hidden marker in each generated category: generator version and generation parameters."""


@dataclass(frozen=True)
class SyntheticCounts:
    """Number of images per folder: train/good, test/good, each single-defect folder, ``multiple``."""

    train: int = 40
    test_good: int = 16
    per_defect: int = 12
    multiple: int = 8


# --- shared generation machinery -------------------------------------------------------------------
def save_png(path: Path, array: np.ndarray, compress_level: int = 3) -> None:
    """Write a uint8 array as PNG (zlib ``compress_level`` 0-9), creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=compress_level)


def write_channels(target: Path, folder: str, stem: str, channels: Sequence[tuple[str, np.ndarray]], values: dict[str, int]) -> None:
    """Write an image's ground-truth channels as ``ground_truth/<folder>/<stem>/<NNN>.png`` (AutoVI style).

    Each channel is an RGB PNG whose defect pixels hold the defect's ``pixel_value`` (``values``).
    """
    for number, (name, mask) in enumerate(channels):
        gt = np.where(mask[:, :, None], np.uint8(values[name]), np.uint8(0)).repeat(3, axis=2)
        save_png(target / "ground_truth" / folder / stem / f"{number:03d}.png", gt)


def write_defects_config(target: Path, entries: Sequence[dict[str, object]]) -> None:
    """Write ``defects_config.json`` (a JSON list of AutoVI defect objects)."""
    (target / "defects_config.json").write_text(json.dumps(list(entries), indent=2) + "\n")


def write_marker(target: Path, marker: dict[str, object]) -> None:
    """Write the generation marker; a category folder is only complete once it has one."""
    (target / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def read_marker(category_dir: Path) -> dict[str, object] | None:
    """The generation marker of a category folder (None when absent or unreadable)."""
    try:
        marker = json.loads((Path(category_dir) / MARKER_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def generate_atomically(root: Path, category: str, marker: dict[str, object], write: Callable[[Path], None], *, kind: str) -> Path:
    """Make ``<root>/<category>`` the folder that ``write`` renders, unless it is there with ``marker``.

    ``write(folder)`` fills a fresh folder (it must end with :func:`write_marker` of ``marker``). The
    category is rendered into a hidden sibling folder and renamed into place, so readers never see a
    partial category; when another process wins the race, this one discards its copy. A folder left
    by the same generator (``marker["generator"]``) with another version or other parameters is
    replaced; any other folder is not ours and is never touched (``kind`` names the dataset in the
    error).
    """
    root = Path(root)
    target = root / category
    for _ in range(3):
        if target.exists():
            found = read_marker(target)
            if found == marker:
                return target
            if found is None or found.get("generator") != marker["generator"]:
                raise DataError(f"{target}: exists but is not a generated {kind} category; remove it or use another root")
            _discard(target, root)
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".{category}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            write(staging)
            os.rename(staging, target)
            return target
        except OSError:
            if not target.exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise DataError(f"{target}: could not generate (other processes keep replacing it with other parameters)")


def _discard(folder: Path, root: Path) -> None:
    """Move a stale folder out of the way atomically, then delete it (tolerating a concurrent mover)."""
    trash = root / f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# --- writing a category ----------------------------------------------------------------------------
def _marker(category: str, size: int, seed: int, counts: SyntheticCounts) -> dict[str, object]:
    return {
        "generator": "autovi-synthetic",
        "version": GENERATOR_VERSION,
        "category": category,
        "size": size,
        "seed": seed,
        "counts": asdict(counts),
    }


def write_category(target: Path, category: str, size: int, seed: int, counts: SyntheticCounts) -> None:
    """Render every image and mask of a category into ``target`` (a fresh folder)."""
    spec = CATEGORY_SPECS[category]
    values = {d.name: d.pixel_value for d in spec.defects}
    plan = [("train", "good", counts.train), ("test", "good", counts.test_good)]
    plan += [("test", f, counts.multiple if f == "multiple" else counts.per_defect) for f in spec.folders]
    for split, folder, count in plan:
        for index in range(count):
            image, channels = render_image(category, size=size, seed=seed, split=split, folder=folder, index=index)
            stem = f"{index:03d}"
            save_png(target / split / folder / f"{stem}.png", image)
            write_channels(target, folder, stem, channels, values)
    write_defects_config(target, [d.config_entry(size) for d in spec.defects])
    write_marker(target, _marker(category, size, seed, counts))


def generate_category(root: Path, category: str, *, size: int = DEFAULT_SIZE, seed: int = 0, counts: SyntheticCounts | None = None) -> Path:
    """Generate ``<root>/<category>`` unless it is already there with the same parameters.

    Atomic and safe under concurrent generation (:func:`generate_atomically`). A folder left by
    another generator version or other parameters is replaced; a folder without the marker is not
    synthetic data and is never touched.
    """
    if category not in CATEGORY_SPECS:
        raise DataError(f"unknown synthetic category {category!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}")
    if size < 32:
        raise DataError(f"synthetic images must be at least 32 pixels wide, got {size}")
    counts = counts or SyntheticCounts()
    marker = _marker(category, size, seed, counts)

    def write(folder: Path) -> None:
        write_category(folder, category, size, seed, counts)

    return generate_atomically(Path(root), category, marker, write, kind="synthetic")


# --- the providers ---------------------------------------------------------------------------------
class GeneratedDataset(DatasetProvider):
    """A dataset generated on first use into a versioned cache folder and read with the AutoVI reader.

    Subclasses set ``name``, ``category_names`` and ``version`` and implement :meth:`generate` and
    :meth:`native_size`.
    """

    category_names: tuple[str, ...] = ()
    version: int = 1

    @abstractmethod
    def generate(self, root: Path, category: str) -> Path:
        """Generate ``<root>/<category>`` if needed (atomically) and return it."""

    @abstractmethod
    def native_size(self, category: str) -> tuple[int, int]:
        """(height, width) of the category's images."""

    def default_root(self) -> Path:
        root = cache_root() / self.name / f"v{self.version}"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def categories(self, root: Path | None) -> list[str]:
        """All generated categories, unless ``root`` is a foreign non-empty folder without any."""
        if root is None:
            return list(self.category_names)
        root = Path(root).expanduser()
        if not root.is_dir() or not any(p for p in root.iterdir() if not p.name.startswith(".")):
            return list(self.category_names)
        if any(read_marker(root / c) is not None for c in self.category_names) or root == self.default_root():
            return list(self.category_names)
        return []

    def load_category(self, root: Path | None, category: str) -> Category:
        """Generate the category if needed, then index it with the AutoVI reader."""
        from .autovi import read_autovi_category

        if category not in self.category_names:
            raise DataError(f"unknown {self.name} category {category!r}; valid: {', '.join(self.category_names)}")
        root = Path(root).expanduser() if root is not None else self.default_root()
        folder = self.generate(root, category)
        return read_autovi_category(folder, dataset=self.name, name=category, native_size=self.native_size(category))


class SyntheticDataset(GeneratedDataset):
    """The built-in dataset: generated on first use into a versioned cache folder."""

    name = "synthetic"
    description = (
        "built-in procedurally generated inspection images in AutoVI layout "
        "(textured_plate: scratches and spots; clip_assembly: missing screw, misplaced clip; "
        "wire_harness: a cable that varies between parts, spots and bare wire)"
    )
    category_names = SYNTHETIC_CATEGORIES
    version = GENERATOR_VERSION

    def __init__(self, *, size: int = DEFAULT_SIZE, seed: int = 0, counts: SyntheticCounts | None = None) -> None:
        self.size = size
        self.seed = seed
        self.counts = counts or SyntheticCounts()

    def generate(self, root: Path, category: str) -> Path:
        return generate_category(root, category, size=self.size, seed=self.seed, counts=self.counts)

    def native_size(self, category: str) -> tuple[int, int]:
        """(height, width) of the category's images."""
        return CATEGORY_SPECS[category].native_size(self.size)


__all__ = [
    "CATEGORY_SPECS",
    "DEFAULT_SIZE",
    "GENERATOR_VERSION",
    "MARKER_NAME",
    "SYNTHETIC_CATEGORIES",
    "CategorySpec",
    "DefectSpec",
    "GeneratedDataset",
    "SyntheticCounts",
    "SyntheticDataset",
    "generate_atomically",
    "generate_category",
    "image_streams",
    "read_marker",
    "render_image",
    "save_png",
    "write_category",
    "write_channels",
    "write_defects_config",
    "write_marker",
]
