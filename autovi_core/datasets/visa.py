"""VisA reader, driven by the official split file ``split_csv/1cls.csv``.

The CSV has the columns ``object,split,label,image,mask``: ``split`` is ``train`` or ``test``,
``label`` is ``normal`` or ``anomaly``, and ``image`` / ``mask`` are paths relative to the folder
holding ``split_csv`` (``mask`` is empty for normal images). Masks are 8-bit with any non-zero
value marking the defect. VisA has no defect types: anomalous test images go to ``anomaly``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..dataset import Category, DatasetProvider, GroundTruthChannel, Sample
from ..errors import DataError

SPLIT_FILE = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": ("good", 0), "anomaly": ("anomaly", 1)}


def visa_base(root: Path) -> Path:
    """The folder holding ``split_csv``: ``root`` itself, or its parent when ``root`` is ``split_csv``."""
    if (root / SPLIT_FILE).is_file():
        return root
    if (root / SPLIT_FILE.name).is_file() and root.name == SPLIT_FILE.parent.name:
        return root.parent
    raise DataError(f"{root / SPLIT_FILE}: VisA split file not found (--root must hold split_csv/1cls.csv)")


def read_split_rows(base: Path) -> list[dict[str, str]]:
    """Rows of the split CSV with its columns checked."""
    path = base / SPLIT_FILE
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected {','.join(COLUMNS)}")
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def row_sample(base: Path, row: dict[str, str], where: str) -> Sample:
    """The Sample of one CSV row; referenced files must exist."""
    split, label = row["split"], row["label"]
    if split not in ("train", "test"):
        raise DataError(f"{where}: split must be train or test, got {split!r}")
    if label not in LABELS:
        raise DataError(f"{where}: label must be normal or anomaly, got {label!r}")
    defect_dir, value = LABELS[label]
    if split == "train" and value:
        raise DataError(f"{where}: anomalous image in the train split ({row['image']})")
    image = base / row["image"]
    if not image.is_file():
        raise DataError(f"{image}: image listed in {where} not found")
    channels: tuple[GroundTruthChannel, ...] = ()
    if value:
        if not row["mask"]:
            raise DataError(f"{where}: anomalous image {image} has no mask")
        mask = base / row["mask"]
        if not mask.is_file():
            raise DataError(f"{mask}: mask listed in {where} not found")
        channels = (GroundTruthChannel(mask, None),)
    return Sample(image, split, defect_dir, value, channels)


class VisADataset(DatasetProvider):
    """VisA (Visual Anomaly): 12 objects, one binary mask per anomalous image, no defect types."""

    name = "visa"
    description = "VisA: split_csv/1cls.csv layout; anomalous images under 'anomaly'"

    def categories(self, root: Path | None) -> list[str]:
        base = visa_base(self.resolve_root(root))
        return sorted({row["object"] for row in read_split_rows(base) if row["object"]})

    def load_category(self, root: Path | None, category: str) -> Category:
        base = visa_base(self.resolve_root(root))
        rows = read_split_rows(base)
        valid = sorted({row["object"] for row in rows if row["object"]})
        if category not in valid:
            raise DataError(f"unknown category {category!r} for dataset 'visa' at {base}; valid: {', '.join(valid)}")
        samples = []
        for line, row in enumerate(rows, start=2):
            if row["object"] == category:
                samples.append(row_sample(base, row, f"{base / SPLIT_FILE} line {line}"))
        for split in ("train", "test"):
            if not any(s.split == split for s in samples):
                raise DataError(f"{base / SPLIT_FILE}: category {category!r} has no {split} images")
        keys = [(s.split, s.key) for s in samples]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise DataError(f"{base / SPLIT_FILE}: two {dup[0]} images of {category!r} share the key {dup[1]!r}")
        return Category(self.name, category, base / category, samples)
