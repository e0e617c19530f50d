"""`autovi report DIR --format html` on a large synthetic run: 6 categories x 8 methods x 3 seeds.

Run:  .venv/bin/python -m pytest benchmarks/bench_html_report.py --benchmark-enable -s
  or  .venv/bin/python benchmarks/bench_html_report.py          (one timed report, in seconds)

Data (fixed seeds, tests/html_report_fixtures.py): 144 ok experiments, each with an experiment
file (16 test images: 8 good, 4 per defect folder; 8 held-out good scores; a 300-point sPRO
curve) and 64 x 64 float TIFF maps, one per test image; a generated ``folder``-layout dataset
root with the test images and masks. The target (issue #12) is under a minute on a 2-core machine.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from html_report_fixtures import make_run  # noqa: E402

CATEGORIES = ("plate", "clip", "wire", "pipe", "tank", "screw")
DETECTORS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8_sup")
SEEDS = (0, 1, 2)
BUDGET_S = 60.0


def make_large_run(run_dir: Path) -> Path:
    make_run(run_dir, categories=CATEGORIES, detectors=DETECTORS, seeds=SEEDS, supervised=("m8_sup",), size=64, n_good=8, n_defective=4)
    return run_dir


def write_report(run_dir: Path, number: list[int]) -> Path:
    from autovi_core.html_report import write_html_report

    number[0] += 1
    return write_html_report(run_dir, run_dir.parent / f"report-{number[0]}")


@pytest.fixture(scope="module")
def large_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_large_run(tmp_path_factory.mktemp("html-report-bench") / "run")


def test_html_report_of_a_large_run(benchmark, large_run) -> None:
    pytest.importorskip("matplotlib")
    number = [0]
    index = benchmark.pedantic(write_report, args=(large_run, number), rounds=2, iterations=1)
    assert index.is_file() and index.stat().st_size > 10_000
    if benchmark.stats is not None:  # None with --benchmark-disable (the default)
        assert benchmark.stats.stats.max < BUDGET_S


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp(prefix="html-report-bench-"))
    try:
        started = time.perf_counter()
        run = make_large_run(folder / "run")
        print(f"generated the run in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        index = write_report(run, [0])
        elapsed = time.perf_counter() - started
        images = sum(1 for _ in index.parent.rglob("*.png"))
        print(f"write_html_report: {elapsed:.1f} s ({images} PNG files, index.html {index.stat().st_size // 1024} KiB)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
