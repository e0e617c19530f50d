"""Generic reader for any MVTec-like folder tree.

Layout (``<root>`` itself may be the category when it holds ``train/good``)::

    <root>/<cat>/train/good/*
    <root>/<cat>/test/<dir>/*                 ``good`` or a defect folder
    <root>/<cat>/ground_truth/<dir>/...       optional, per defective image one of:
        <stem>_mask.png | <stem>.png          a single binary mask (any non-zero pixel is defect)
        <stem>/NNN.png                        AutoVI-style channels
    <root>/<cat>/defects_config.json          optional, gives the channels' configs

Without ``ground_truth`` the category is image-level only (``has_masks=False``). Channel folders
use ``defects_config.json`` when present (values read from the PNGs), otherwise each channel is a
plain binary mask; single mask files are always plain binary masks.
"""

from __future__ import annotations

from pathlib import Path

from ..dataset import Category, DatasetProvider, GroundTruthChannel, Sample, read_defects_config
from ..errors import DataError
from .layout import (
    LOOKUP_VALUE,
    channel_files,
    check_ground_truth_has_images,
    good_samples,
    is_image_file,
    list_test_folders,
    split_images,
    subfolders,
    unnest,
    visible_entries,
)

MASK_SUFFIX = "_mask"


def ground_truth_stem(entry: Path) -> str | None:
    """The image stem a ground-truth entry belongs to (None when it is not a ground-truth entry)."""
    if entry.is_dir():
        return entry.name
    if is_image_file(entry):
        return entry.stem[: -len(MASK_SUFFIX)] if entry.stem.endswith(MASK_SUFFIX) else entry.stem
    return None


def ground_truth_index(gt_dir: Path) -> dict[str, Path]:
    """Map image stem -> its mask file or channel folder in ``ground_truth/<dir>``."""
    index: dict[str, Path] = {}
    if not gt_dir.is_dir():
        return index
    for entry in visible_entries(gt_dir):
        stem = ground_truth_stem(entry)
        if stem is None:
            continue  # reported by check_ground_truth_has_images
        if stem in index:
            raise DataError(f"{entry}: image {stem!r} already has ground truth {index[stem].name}")
        index[stem] = entry
    return index


def channels_of(entry: Path, pixel_value: int | None) -> tuple[GroundTruthChannel, ...]:
    """The channels of a mask file (one plain mask) or of a channel folder."""
    if entry.is_dir():
        return tuple(GroundTruthChannel(p, pixel_value) for p in channel_files(entry))
    return (GroundTruthChannel(entry, None),)


def defective_samples(category_dir: Path, folder: Path, has_masks: bool, pixel_value: int | None) -> list[Sample]:
    """Samples of one defect folder, with their ground truth when the category has masks."""
    images = split_images(folder)
    if not has_masks:
        return [Sample(p, "test", folder.name, 1) for p in images]
    gt_dir = category_dir / "ground_truth" / folder.name
    index = ground_truth_index(gt_dir)
    samples = []
    for path in images:
        entry = index.get(path.stem)
        if entry is None:
            raise DataError(
                f"{path}: defective test image has no ground truth "
                f"(expected {gt_dir}/{path.stem}_mask.png, {path.stem}.png or {path.stem}/)"
            )
        samples.append(Sample(path, "test", folder.name, 1, channels_of(entry, pixel_value)))
    return samples


def read_folder_category(category_dir: Path, *, dataset: str, name: str) -> Category:
    """Index one category of a generic MVTec-like tree."""
    category_dir = unnest(category_dir)
    gt_root = category_dir / "ground_truth"
    has_masks = gt_root.is_dir()
    config_path = category_dir / "defects_config.json"
    configs = read_defects_config(config_path) if config_path.exists() else ()
    pixel_value = LOOKUP_VALUE if configs else None
    samples = good_samples(category_dir / "train" / "good", "train")
    for folder in list_test_folders(category_dir):
        if folder.name == "good":
            samples += good_samples(folder, "test")
        else:
            samples += defective_samples(category_dir, folder, has_masks, pixel_value)
    for gt_dir in subfolders(gt_root):
        if gt_dir.name != "good":
            check_ground_truth_has_images(gt_dir, category_dir / "test" / gt_dir.name, ground_truth_stem)
    return Category(dataset, name, category_dir, samples, configs, None, has_masks)


class FolderDataset(DatasetProvider):
    """Any MVTec-like tree; masks optional (image-level evaluation only without them)."""

    name = "folder"
    description = "Generic folders: <cat>/train/good, <cat>/test/<dir>, optional <cat>/ground_truth/<dir>"

    def categories(self, root: Path | None) -> list[str]:
        root = self.resolve_root(root)
        if (root / "train" / "good").is_dir():
            return [root.name]
        return [p.name for p in subfolders(root) if (unnest(p) / "train" / "good").is_dir()]

    def load_category(self, root: Path | None, category: str) -> Category:
        root = self.resolve_root(root)
        self.check_category(root, category)
        category_dir = root if (root / "train" / "good").is_dir() else root / category
        return read_folder_category(category_dir, dataset=self.name, name=category)
