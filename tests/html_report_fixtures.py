"""A synthetic run folder for the HTML report: results.jsonl, experiment files, float maps and a
generated ``folder``-layout dataset root (used by tests/test_html_report.py and
benchmarks/bench_html_report.py). Everything is seeded; the numbers are made up but consistent
(each record's calibrated thresholds are those of its experiment file)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

LEVELS = ("0.99", "0.95", "0.9")
DEFECT_DIRS = ("crack", "missing")


def make_dataset(root: Path, category: str, *, n_good: int = 6, n_defective: int = 4, size: int = 64, seed: int = 0) -> None:
    """A ``folder``-layout category: train/good, test/good, test/<defect> with binary masks."""
    rng = np.random.default_rng(seed)
    base = root / category
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(4):
        _save(base / "train" / "good" / f"{i:03d}.png", _image(rng, size))
    for i in range(n_good):
        _save(base / "test" / "good" / f"{i:03d}.png", _image(rng, size))
    for folder in DEFECT_DIRS:
        for i in range(n_defective):
            image = _image(rng, size)
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 8) ** 2
            image[mask] = (220, 40, 40)
            _save(base / "test" / folder / f"{i:03d}.png", image)
            _save(base / "ground_truth" / folder / f"{i:03d}_mask.png", (mask * 255).astype(np.uint8))


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = np.full((size, size, 3), 110, np.uint8)
    return np.clip(grey + rng.integers(-20, 20, (size, size, 1)), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def image_keys(n_good: int = 6, n_defective: int = 4) -> list[tuple[str, int]]:
    keys = [(f"good/{i:03d}", 0) for i in range(n_good)]
    return keys + [(f"{d}/{i:03d}", 1) for d in DEFECT_DIRS for i in range(n_defective)]


def make_experiment(
    run_dir: Path,
    root: Path,
    detector: str,
    category: str,
    seed: int,
    *,
    supervised: bool = False,
    save_maps: bool = True,
    n_good: int = 6,
    n_defective: int = 4,
    size: int = 64,
) -> dict:
    """Write one experiment file (and its float maps) and return its results.jsonl record."""
    rng = np.random.default_rng(zlib.crc32(f"{detector}/{category}/{seed}".encode()))
    keys = image_keys(n_good, n_defective)
    images = [{"key": k, "label": y, "score": float(rng.normal(1.5 * y, 1.0))} for k, y in keys]
    calibration = rng.normal(0.0, 1.0, 8)
    thresholds = {lv: float(np.quantile(calibration, float(lv), method="higher")) for lv in LEVELS}
    maps_rel = f"maps/{detector}/{category}/seed{seed}"
    low, high = np.inf, -np.inf
    if save_maps:
        yy, xx = np.mgrid[0:size, 0:size]
        for item in images:
            amap = rng.random((size, size)).astype(np.float32) * 0.5
            if item["label"]:
                amap += (np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 8) ** 2))).astype(np.float32)
            folder, stem = item["key"].split("/")
            path = run_dir / maps_rel / "float" / folder / f"{stem}.tiff"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(amap).save(path, format="TIFF")
            low, high = min(low, float(amap.min())), max(high, float(amap.max()))
    else:
        low, high = 0.0, 1.5
    fpr = np.linspace(0.0, 1.0, 300)
    spro = np.clip(fpr ** (0.2 + 0.1 * rng.random()), 0, 1)
    experiment = {
        "format": "autovi-experiment/1",
        "detector": detector,
        "dataset": "folder",
        "category": category,
        "seed": seed,
        "profile": "fast",
        "supervised": supervised,
        "root": str(root),
        "images": images,
        "calibration_scores": calibration.tolist(),
        "thresholds": thresholds,
        "map_thresholds": {"0.99": 0.9, "0.95": 0.7, "0.9": 0.6},
        "map_range": {"low": low, "high": high},
        "spro_curve": {"fpr": fpr.tolist(), "spro": spro.tolist(), "mode": "exact"},
        "maps": maps_rel if save_maps else None,
    }
    rel = f"experiments/folder/{category}/{detector}/seed{seed}-fast.json"
    (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / rel).write_text(json.dumps(experiment))
    return {
        "detector": detector,
        "dataset": "folder",
        "category": category,
        "seed": seed,
        "profile": "fast",
        "status": "ok",
        "error": None,
        "supervised": supervised,
        "metrics": {
            "image_auroc": float(rng.uniform(0.6, 1.0)),
            "auc_spro": {"0.01": 0.1, "0.05": float(rng.uniform(0.2, 0.8)), "0.1": 0.5, "0.3": 0.6, "1.0": 0.9},
            "pixel_auroc": float(rng.uniform(0.7, 1.0)),
            "per_defect_type": {"defect": {"0.05": float(rng.uniform(0.2, 0.8))}, "scratch": {"0.05": float(rng.uniform(0.2, 0.8))}},
            "calibrated": {lv: {"threshold": thresholds[lv], "fpr": 0.1, "fnr": 0.2} for lv in LEVELS},
        },
        "timing": {
            "fit_s": float(rng.uniform(1, 10)),
            "predict_images_per_s": float(rng.uniform(5, 50)),
            "batch1_latency_ms": float(rng.uniform(5, 50)),
            "peak_rss_mb": float(rng.uniform(500, 900)),
            "peak_gpu_mb": None,
        },
        "experiment_file": rel,
    }


def make_run(
    run_dir: Path,
    *,
    categories: tuple[str, ...] = ("plate", "clip"),
    detectors: tuple[str, ...] = ("alpha", "beta"),
    seeds: tuple[int, ...] = (0, 1),
    supervised: tuple[str, ...] = (),
    size: int = 64,
    n_good: int = 6,
    n_defective: int = 4,
) -> tuple[Path, list[dict]]:
    """A whole run folder with its dataset root at ``run_dir.parent / (run_dir.name + '-data')``.

    Returns (dataset root, records); the records are also written to results.jsonl.
    """
    root = run_dir.parent / f"{run_dir.name}-data"
    records = []
    for index, category in enumerate(categories):
        make_dataset(root, category, n_good=n_good, n_defective=n_defective, size=size, seed=index)
        for detector in detectors:
            for seed in seeds:
                records.append(
                    make_experiment(
                        run_dir,
                        root,
                        detector,
                        category,
                        seed,
                        supervised=detector in supervised,
                        n_good=n_good,
                        n_defective=n_defective,
                        size=size,
                    )
                )
    write_records(run_dir, records)
    return root, records


def write_records(run_dir: Path, records: list[dict], tail: str = "") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
