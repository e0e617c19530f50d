"""``autovi evaluate``: score anomaly maps written by any tool against AutoVI-layout ground truth."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Category
from .errors import ConfigError, DataError
from .image_io import MAP_SUFFIXES, read_map, resize_map
from .metric import EvaluationData
from .progress import track

SPRO_MODES = ("exact", "official")


def _maps_dir(maps: Path, category: Category) -> Path:
    """Accept the folder of defect folders, or a parent holding ``test/`` (the evaluator's layout)."""
    if not maps.is_dir():
        raise DataError(f"{maps}: maps folder not found")
    wanted = {s.defect_dir for s in category.test}
    if not wanted & {p.name for p in maps.iterdir() if p.is_dir()} and (maps / "test").is_dir():
        return maps / "test"
    return maps


def find_map_files(maps_dir: Path, category: Category) -> dict[str, Path]:
    """The map file of every test image; missing or extra maps are errors naming the files."""
    found: dict[str, Path] = {}
    extra: list[Path] = []
    keys = {s.key for s in category.test}
    for folder in sorted(p for p in maps_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            key = f"{folder.name}/{path.stem}"
            if path.suffix.lower() not in MAP_SUFFIXES:
                if key in keys:
                    raise DataError(f"{path}: unsupported anomaly-map type {path.suffix!r}; use one of {', '.join(MAP_SUFFIXES)}")
                continue
            if key not in keys:
                extra.append(path)
            elif key in found:
                raise DataError(f"{path}: a second map for {key} (already have {found[key].name})")
            else:
                found[key] = path
    missing = [s for s in category.test if s.key not in found]
    if missing:
        first = missing[0]
        raise DataError(
            f"{maps_dir / first.defect_dir / (first.stem + '.png')}: missing anomaly map "
            f"({len(missing)} of {len(category.test)} test images have none)"
        )
    if extra:
        raise DataError(f"{extra[0]}: map without a test image in the dataset ({len(extra)} such file(s))")
    return found


def evaluate_maps_folder(
    dataset_root: Path,
    category_name: str,
    maps: Path,
    *,
    spro_mode: str = "exact",
    seed: int = 0,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Evaluate a folder of maps; returns ``{"localization": .., "classification": .., "notes": ..}``."""
    from .datasets.autovi import AUTOVI_CATEGORIES, read_autovi_category
    from .metrics.standard import ImageClassification, Localisation

    if spro_mode not in SPRO_MODES:
        raise ConfigError(f"unknown --spro-mode {spro_mode!r}; valid: {', '.join(SPRO_MODES)}")
    category_dir = Path(dataset_root) / category_name
    if not category_dir.is_dir():
        raise DataError(f"{category_dir}: category folder not found under --dataset-root")
    category = read_autovi_category(category_dir, dataset="autovi", name=category_name, native_size=AUTOVI_CATEGORIES.get(category_name))
    files = find_map_files(_maps_dir(Path(maps), category), category)

    def read(sample: Any) -> tuple[np.ndarray, Any, tuple[tuple[int, ...], tuple[int, int]] | None]:
        amap = read_map(files[sample.key])
        shape = category.ground_truth_shape(sample)
        resized_from = None
        if amap.shape != shape:
            resized_from = (amap.shape, shape)
            amap = resize_map(amap, shape)
        return amap, category.load_channels(sample, shape), resized_from

    # PNG/TIFF decoding releases the GIL: threads decode maps and masks in parallel, in order
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        read_all = list(track(pool.map(read, category.test), f"reading maps of {category_name}", total=len(category.test)))
    arrays = [amap for amap, _, _ in read_all]
    channels = [chans for _, chans, _ in read_all]
    resized = Counter(key for _, _, key in read_all if key is not None)
    notes: list[str] = []
    for (src, dst), count in resized.items():
        kind = "bicubic in 8 bits" if any(a.dtype == np.uint8 for a in arrays) else "bilinear in float"
        notes.append(f"resized {count} map(s) from {src[1]}x{src[0]} to the ground truth's {dst[1]}x{dst[0]} ({kind})")
    if spro_mode == "official" and sum(a.size for a in arrays) > 10_000_000:
        notes.append(f"official mode subsampled the initial thresholds with a seeded RNG (seed {seed}); the evaluator's is unseeded")
    for note in notes:
        log(f"note: {note}")

    data = EvaluationData(
        keys=[s.key for s in category.test],
        labels=np.array([s.label for s in category.test]),
        scores=np.array([float(a.max()) for a in arrays]),
        maps=arrays,
        channels=channels,
        spro_mode=spro_mode,
        seed=seed,
    )
    localisation = Localisation().compute(data)
    return {
        "localization": {k: localisation[k] for k in ("auc_spro", "per_defect_type", "per_subdir") if k in localisation},
        "pixel": {k: v for k, v in localisation.items() if k not in ("auc_spro", "per_defect_type", "per_subdir")},
        "classification": ImageClassification().compute(data),
        "image_scores": dict(zip(data.keys, data.scores.tolist())),
        "spro_mode": spro_mode,
        "notes": notes,
    }
