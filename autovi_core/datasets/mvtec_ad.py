"""MVTec AD reader: one binary mask per defective test image.

Layout::

    <root>/<cat>/train/good/*.png
    <root>/<cat>/test/<defect>/NNN.png
    <root>/<cat>/ground_truth/<defect>/NNN_mask.png
"""

from __future__ import annotations

from pathlib import Path

from ..dataset import Category, DatasetProvider, GroundTruthChannel, Sample
from ..errors import DataError
from .layout import check_ground_truth_has_images, good_samples, list_test_folders, split_images, subfolders

MASK_SUFFIX = "_mask"


def mask_stem(entry: Path) -> str | None:
    """The image stem a ``NNN_mask.png`` file belongs to (None for anything else)."""
    if entry.is_file() and entry.stem.endswith(MASK_SUFFIX):
        return entry.stem[: -len(MASK_SUFFIX)]
    return None


def read_mvtec_ad_category(category_dir: Path, *, dataset: str, name: str) -> Category:
    """Index one MVTec AD category; every defective test image needs its ``_mask.png``."""
    samples = good_samples(category_dir / "train" / "good", "train")
    for folder in list_test_folders(category_dir):
        if folder.name == "good":
            samples += good_samples(folder, "test")
            continue
        gt_dir = category_dir / "ground_truth" / folder.name
        for path in split_images(folder):
            mask = gt_dir / f"{path.stem}{MASK_SUFFIX}.png"
            if not mask.is_file():
                raise DataError(f"{path}: defective test image has no mask (expected {mask})")
            samples.append(Sample(path, "test", folder.name, 1, (GroundTruthChannel(mask, None),)))
    for gt_dir in subfolders(category_dir / "ground_truth"):
        check_ground_truth_has_images(gt_dir, category_dir / "test" / gt_dir.name, mask_stem)
    return Category(dataset, name, category_dir, samples)


class MVTecADDataset(DatasetProvider):
    """MVTec AD: 15 categories of objects and textures with binary masks."""

    name = "mvtec_ad"
    description = "MVTec AD: <cat>/train/good, <cat>/test/<defect>, <cat>/ground_truth/<defect>/NNN_mask.png"

    def categories(self, root: Path | None) -> list[str]:
        root = self.resolve_root(root)
        return [p.name for p in subfolders(root) if (p / "train" / "good").is_dir()]

    def load_category(self, root: Path | None, category: str) -> Category:
        root = self.resolve_root(root)
        self.check_category(root, category)
        return read_mvtec_ad_category(root / category, dataset=self.name, name=category)
