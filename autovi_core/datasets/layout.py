"""Folder-layout helpers shared by the dataset readers: listing split folders, unnesting zips,
checking that ground truth and images pair up, with errors that name the path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..dataset import Sample
from ..errors import DataError
from ..files import IMAGE_SUFFIXES
from ..files import is_image_file as has_image_name

LOOKUP_VALUE = 0
"""``GroundTruthChannel.pixel_value`` meaning "read the value from the mask PNG when loading"."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a regular file with an image suffix (case-insensitive)."""
    return has_image_name(path) and path.is_file()


def visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` sorted by name, hidden ones (``.DS_Store``...) skipped."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def split_images(folder: Path) -> list[Path]:
    """The images of a split folder; it must exist, be non-empty and hold nothing but images."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    images = []
    for entry in visible_entries(folder):
        if not is_image_file(entry):
            raise DataError(f"{entry}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
        images.append(entry)
    if not images:
        raise DataError(f"{folder}: folder holds no images")
    duplicates = sorted(stem for stem, n in Counter(p.stem for p in images).items() if n > 1)
    if duplicates:
        raise DataError(f"{folder}: several images share the name {duplicates[0]!r} (different suffixes)")
    return images


def subfolders(folder: Path) -> list[Path]:
    """Visible sub-directories of ``folder`` sorted by name."""
    return [p for p in visible_entries(folder) if p.is_dir()] if folder.is_dir() else []


def unnest(category_dir: Path) -> Path:
    """``<cat>/<cat>`` when the category was extracted from a zip with an extra level, else ``<cat>``."""
    nested = category_dir / category_dir.name
    return nested if (nested / "train").is_dir() else category_dir


def good_samples(folder: Path, split: str) -> list[Sample]:
    """Defect-free samples of one split folder."""
    return [Sample(p, split, "good", 0) for p in split_images(folder)]


def list_test_folders(category_dir: Path) -> list[Path]:
    """The ``test/<dir>`` folders of a category; ``test`` must exist and hold at least one."""
    test_dir = category_dir / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder not found")
    folders = subfolders(test_dir)
    if not folders:
        raise DataError(f"{test_dir}: test split is empty (no test/<defect_dir> folders)")
    return folders


def check_ground_truth_has_images(gt_dir: Path, test_dir: Path, stem_of: Callable[[Path], str | None]) -> None:
    """Every entry of ``ground_truth/<dir>`` must belong to an image of ``test/<dir>``.

    ``stem_of(entry)`` gives the image stem an entry belongs to (None: not a ground-truth entry).
    """
    stems = {p.stem for p in split_images(test_dir)} if test_dir.is_dir() else set()
    for entry in visible_entries(gt_dir):
        stem = stem_of(entry)
        if stem is None:
            raise DataError(f"{entry}: unexpected entry in a ground-truth folder")
        if stem not in stems:
            raise DataError(f"{entry}: ground truth without its image {test_dir / stem}.png")


def channel_files(gt_dir: Path) -> list[Path]:
    """The channel PNGs of ``ground_truth/<dir>/<stem>``; the folder must hold at least one image."""
    if not gt_dir.is_dir():
        raise DataError(f"{gt_dir}: ground-truth folder of a defective test image not found")
    files = []
    for entry in visible_entries(gt_dir):
        if not is_image_file(entry):
            raise DataError(f"{entry}: not an image file in a ground-truth folder")
        files.append(entry)
    if not files:
        raise DataError(f"{gt_dir}: ground-truth folder holds no channel images")
    return files
