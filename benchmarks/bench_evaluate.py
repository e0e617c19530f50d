"""`autovi evaluate` as a whole process against the I/O floor, on one full-size generated category.

Run:  .venv/bin/python -m pytest benchmarks/bench_evaluate.py --benchmark-enable -s   (pytest-benchmark table)
      .venv/bin/python benchmarks/bench_evaluate.py [ROUNDS]   (floor and process interleaved, min of ROUNDS,
                                                               the ratio and the load average)

Data (fixed seed): an AutoVI-layout ``pipe_clip`` at 400 x 400 with 400 good and 200 defective test
images (two defect types, one channel each, elliptic regions) and an 8-bit PNG map for each test
image, as ``--save-maps`` writes them. The floor is what no evaluator can avoid: decoding the 600
map PNGs and the 200 mask PNGs, plus one histogram pass over every map.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHAPE = (400, 400)
N_GOOD, N_DEFECTIVE = 400, 200
CONFIG = [
    {"defect_name": "missing", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "scratch", "pixel_value": 254, "saturation_threshold": 300, "relative_saturation": False},
]


def make_category(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """The generated dataset root and maps folder (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cat, maps = root / "data" / "pipe_clip", root / "maps"
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    blank = Image.fromarray(np.zeros((*SHAPE, 3), np.uint8))
    (cat / "train" / "good").mkdir(parents=True)
    blank.save(cat / "train" / "good" / "0000.png")
    (cat / "defects_config.json").write_text(json.dumps(CONFIG))
    for i in range(N_GOOD + N_DEFECTIVE):
        subdir = "good" if i < N_GOOD else ("logical" if i < N_GOOD + N_DEFECTIVE // 2 else "structural")
        for folder in (cat / "test" / subdir, maps / subdir):
            folder.mkdir(parents=True, exist_ok=True)
        blank.save(cat / "test" / subdir / f"{i:04d}.png")
        amap = rng.random(SHAPE, dtype=np.float32) * np.float32(0.6)
        if subdir != "good":
            gt = cat / "ground_truth" / subdir / f"{i:04d}"
            gt.mkdir(parents=True)
            cy, cx = rng.integers(30, 370, 2)
            ry, rx = rng.integers(5, 30, 2)
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            amap[mask] += rng.random(int(mask.sum()), dtype=np.float32) * np.float32(0.4)
            Image.fromarray((mask * (255 if subdir == "logical" else 254)).astype(np.uint8)).save(gt / "000.png")
        Image.fromarray(np.clip(amap * 255, 0, 255).astype(np.uint8)).save(maps / subdir / f"{i:04d}.png")
    return root / "data", maps


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_category(tmp_path_factory.mktemp("evaluate-bench"))


def evaluate_process(data: Path, maps: Path) -> dict:
    cmd = [sys.executable, "-m", "autovi_core.cli", "evaluate", "--dataset-root", str(data), "--category", "pipe_clip", "--maps", str(maps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, AUTOVI_NO_PROGRESS="1"))
    return json.loads(proc.stdout)


def io_floor(data: Path, maps: Path) -> int:
    """Decode every map and mask PNG once and bin every map: what any evaluator must do."""
    hist = np.zeros(256, dtype=np.int64)
    for path in sorted(maps.rglob("*.png")):
        hist += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    masks = sum(int(np.asarray(Image.open(p)).any()) for p in sorted((data / "pipe_clip" / "ground_truth").rglob("*.png")))
    return int(hist.sum()) + masks


def test_evaluate_whole_process(benchmark, category) -> None:
    data, maps = category
    evaluate_process(data, maps)  # warm the file cache outside the timing
    result = benchmark.pedantic(evaluate_process, args=(data, maps), rounds=3, iterations=1)
    assert 0.0 < result["localization"]["auc_spro"]["0.05"] < 1.0


def test_io_floor(benchmark, category) -> None:
    data, maps = category
    assert benchmark.pedantic(io_floor, args=(data, maps), rounds=3, iterations=1) == 600 * SHAPE[0] * SHAPE[1] + N_DEFECTIVE


def interleaved(rounds: int = 5) -> dict[str, float]:
    """Time the floor and the whole process alternately (so both see the same load), ``rounds``
    times each, on a fresh category; the minima, their ratio and the load average."""
    with tempfile.TemporaryDirectory() as tmp:
        data, maps = make_category(Path(tmp))
        evaluate_process(data, maps)  # warm the file cache
        floor, process = [], []
        for _ in range(rounds):
            for timings, run in ((floor, io_floor), (process, evaluate_process)):
                start = time.perf_counter()
                run(data, maps)
                timings.append(time.perf_counter() - start)
    return {"floor_s": min(floor), "evaluate_s": min(process), "ratio": min(process) / min(floor), "load_1min": os.getloadavg()[0]}


if __name__ == "__main__":
    print(json.dumps(interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
