"""Speed and memory of the sPRO metrics on generated full-size data.

Run:  .venv/bin/python -m pytest benchmarks --benchmark-enable -s

Data: 600 float32 maps of 400x400 (an AutoVI 400x400 category) with blob-shaped defects in a
third of them (1-3 channels each), fixed seed; the same maps quantised to uint8. The plain
official-style reference (``official_reference.py``) thresholds every map for every queried
threshold; it is timed on the first ``N_REF`` maps only (60 by default, set
``AUTOVI_BENCH_REF_MAPS=600`` for the full set), where ours is timed too for the ratio.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from official_reference import reference_auc_spro_official  # noqa: E402

from autovi_core.metrics.spro import auc_spro  # noqa: E402
from autovi_core.metrics.spro_official import auc_spro_official  # noqa: E402

N_MAPS = 600
N_REF = int(os.environ.get("AUTOVI_BENCH_REF_MAPS", "60"))  # maps for the plain reference (600: ~1 min)
SHAPE = (400, 400)


def make_data(n: int = N_MAPS, shape=SHAPE, seed: int = 0):
    """Noisy float32 maps; every third one carries 1-3 elliptic defects that raise the scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    maps, channels = [], []
    for i in range(n):
        m = rng.random(shape, dtype=np.float32) * np.float32(0.6)
        chans = []
        if i % 3 == 0:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(20, shape[0] - 20), rng.integers(20, shape[1] - 20)
                ry, rx = rng.integers(4, 30, size=2)
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
                m[mask] += rng.random(int(mask.sum()), dtype=np.float32) * np.float32(0.5)
                area = int(mask.sum())
                sat = int(0.5 * area) if rng.random() < 0.5 else min(300, area)
                chans.append((mask, sat))
        maps.append(m)
        channels.append(chans)
    return maps, channels


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def data_u8(data):
    maps, channels = data
    return [np.clip(m * 255, 0, 255).astype(np.uint8) for m in maps], channels


def test_exact_float32_full(benchmark, data):
    maps, channels = data
    auc_spro(maps[:3], channels[:3])  # compile / load the numba cache outside the timing
    result = benchmark.pedantic(auc_spro, args=(maps, channels), rounds=3, iterations=1)
    assert 0 < result["0.3"] <= 1


def test_exact_uint8_full(benchmark, data_u8):
    maps, channels = data_u8
    auc_spro(maps[:3], channels[:3])
    result = benchmark.pedantic(auc_spro, args=(maps, channels), rounds=3, iterations=1)
    assert 0 < result["0.3"] <= 1


def test_official_mode_ours_full(benchmark, data):
    maps, channels = data
    result = benchmark.pedantic(auc_spro_official, args=(maps, channels), rounds=1, iterations=1)
    assert 0 < result["0.3"] <= 1


def test_exact_float32_small(benchmark, data):
    maps, channels = data
    benchmark.pedantic(auc_spro, args=(maps[:N_REF], channels[:N_REF]), rounds=3, iterations=1)


def test_reference_official_small(benchmark, data):
    maps, channels = data
    benchmark.pedantic(reference_auc_spro_official, args=(maps[:N_REF], channels[:N_REF]), rounds=1, iterations=1)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def test_speed_ratio_and_memory(data, data_u8):
    """Exact mode must be >= 20x faster than the plain reference and use < 3x the maps' memory."""
    maps, channels = data
    small = (maps[:N_REF], channels[:N_REF])
    auc_spro(*small)
    t_ours, _ = _timed(auc_spro, *small)
    t_ref, ref = _timed(reference_auc_spro_official, *small)
    t_off, off = _timed(auc_spro_official, *small)
    for key in ref:
        assert off[key] == pytest.approx(ref[key], abs=1e-9)
    ratio = t_ref / t_ours
    report = [f"{N_REF} maps: exact {t_ours:.3f}s, plain official reference {t_ref:.2f}s (x{ratio:.0f}), fast official mode {t_off:.3f}s"]
    for name, (m, c) in (("float32", data), ("uint8", data_u8)):
        size = sum(a.nbytes for a in m)
        tracemalloc.start()
        t_full, _ = _timed(auc_spro, m, c)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report.append(
            f"{len(m)} {name} maps ({size / 2**20:.0f} MiB): exact {t_full:.2f}s, "
            f"peak extra memory {peak / 2**20:.0f} MiB = {peak / size:.2f}x the maps"
        )
        assert peak < 3 * size
    print("\n" + "\n".join(report))
    assert ratio >= 20
