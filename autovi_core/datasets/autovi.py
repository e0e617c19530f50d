"""AutoVI and MVTec LOCO readers (one folder per defect channel), plus helpers shared by all readers.

Layout of a category (the real AutoVI zips add one level: ``<cat>/<cat>/...``)::

    <cat>/train/good/*.png
    <cat>/test/good/*.png
    <cat>/test/<defect_dir>/*.png
    <cat>/ground_truth/<defect_dir>/<image_stem>/<NNN>.png   one PNG per defect channel
    <cat>/defects_config.json
    <cat>/validation/good/*.png                              MVTec LOCO only

Indexing reads only paths and ``defects_config.json``; channel pixel values are read from the
mask PNGs when they are loaded (``GroundTruthChannel.pixel_value == 0``).
"""

from __future__ import annotations

from pathlib import Path

from ..dataset import Category, DatasetProvider, GroundTruthChannel, Sample, read_defects_config
from .layout import (
    LOOKUP_VALUE,
    channel_files,
    check_ground_truth_has_images,
    good_samples,
    list_test_folders,
    split_images,
    subfolders,
    unnest,
)

AUTOVI_CATEGORIES: dict[str, tuple[int, int]] = {
    "engine_wiring": (400, 400),
    "pipe_clip": (400, 400),
    "pipe_staple": (400, 400),
    "tank_screw": (750, 1000),
    "underbody_pipes": (750, 1000),
    "underbody_screw": (750, 1000),
}
"""The six AutoVI categories and their native image size as (height, width)."""


def channel_samples(category_dir: Path, defect_dir: str, pixel_value: int | None) -> list[Sample]:
    """Defective test samples whose ground truth is one folder of channel PNGs per image."""
    gt_root = category_dir / "ground_truth" / defect_dir
    samples = []
    for path in split_images(category_dir / "test" / defect_dir):
        channels = tuple(GroundTruthChannel(p, pixel_value) for p in channel_files(gt_root / path.stem))
        samples.append(Sample(path, "test", defect_dir, 1, channels))
    return samples


def read_autovi_category(category_dir: Path, *, dataset: str, name: str, native_size: tuple[int, int] | None) -> Category:
    """Index a category laid out as AutoVI / MVTec LOCO (see the module docstring)."""
    category_dir = unnest(Path(category_dir))
    samples = good_samples(category_dir / "train" / "good", "train")
    folders = list_test_folders(category_dir)
    for folder in folders:
        if folder.name == "good":
            samples += good_samples(folder, "test")
        else:
            samples += channel_samples(category_dir, folder.name, LOOKUP_VALUE)
    validation = category_dir / "validation" / "good"
    if validation.exists():
        samples += good_samples(validation, "validation")
    for gt_dir in subfolders(category_dir / "ground_truth"):
        if gt_dir.name != "good":
            test_dir = category_dir / "test" / gt_dir.name
            check_ground_truth_has_images(gt_dir, test_dir, lambda e: e.name if e.is_dir() else None)
    config_path = category_dir / "defects_config.json"
    has_defects = any(s.label == 1 for s in samples)
    configs = read_defects_config(config_path) if has_defects or config_path.exists() else ()
    return Category(dataset, name, category_dir, samples, configs, native_size)


def category_dirs_with_train(root: Path) -> list[str]:
    """Names of the sub-folders of ``root`` holding ``train`` (directly or as ``<cat>/<cat>/train``)."""
    return [p.name for p in subfolders(root) if (unnest(p) / "train").is_dir()]


class AutoVIDataset(DatasetProvider):
    """The AutoVI benchmark (Renault): six categories with native image sizes."""

    name = "autovi"
    description = "AutoVI: six automotive categories, multi-channel ground truth with defects_config.json"

    def categories(self, root: Path | None) -> list[str]:
        root = self.resolve_root(root)
        return sorted(c for c in AUTOVI_CATEGORIES if (root / c).is_dir())

    def load_category(self, root: Path | None, category: str) -> Category:
        root = self.resolve_root(root)
        self.check_category(root, category)
        return read_autovi_category(root / category, dataset=self.name, name=category, native_size=AUTOVI_CATEGORIES[category])


class MVTecLOCODataset(DatasetProvider):
    """MVTec LOCO AD (breakfast_box, juice_bottle, pushpins, screw_bag, splicing_connectors...).

    AutoVI's layout with free image sizes, plus a ``validation/good`` split (split ``"validation"``).
    """

    name = "mvtec_loco"
    description = "MVTec LOCO AD: logical and structural anomalies, multi-channel ground truth"

    def categories(self, root: Path | None) -> list[str]:
        return category_dirs_with_train(self.resolve_root(root))

    def load_category(self, root: Path | None, category: str) -> Category:
        root = self.resolve_root(root)
        self.check_category(root, category)
        return read_autovi_category(root / category, dataset=self.name, name=category, native_size=None)
