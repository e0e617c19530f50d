"""The metrics against brute-force references and scikit-learn on small random inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from autovi_core.metrics.classification import calibrated_rates, image_ap, image_auroc, tpr_at_tnr
from autovi_core.metrics.spro import FPR_LIMITS, auc_spro, aupro, pixel_auroc, spro_curve
from autovi_core.metrics.spro_official import auc_spro_official


# ---------------------------------------------------------------- brute-force references
def brute_curve(maps, channels, counted=None):
    """(FPR, mean sPRO) at every distinct score descending, then below the minimum (score > t)."""
    unions = [np.zeros(m.shape, bool) for m in maps]
    for u, chans in zip(unions, channels):
        for mask, _ in chans:
            u |= mask
    n_neg = sum(int((~u).sum()) for u in unions)
    values = np.unique(np.concatenate([m.ravel().astype(np.float64) for m in maps]))[::-1]
    xs, ys = [], []
    for t in list(values) + [-np.inf]:
        fp = sum(int(((m > t) & ~u).sum()) for m, u in zip(maps, unions))
        spros = []
        for i, (m, chans) in enumerate(zip(maps, channels)):
            for k, (mask, sat) in enumerate(chans):
                if counted is not None and not counted[i][k]:
                    continue
                tp = int(((m > t) & mask).sum())
                spros.append(1.0 if sat == 0 else min(tp / sat, 1.0))
        xs.append(fp / n_neg)
        ys.append(float(np.mean(spros)))
    return np.array(xs), np.array(ys)


def brute_area(xs, ys, limit):
    """Integral of the piecewise-linear curve over [0, limit], divided by limit."""
    area = 0.0
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        if x0 >= limit or x1 == x0:
            continue
        end = min(x1, limit)
        y_end = y0 + (y1 - y0) * (end - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_end) * (end - x0)
    return area / limit


def brute_auc_spro(maps, channels, limits=FPR_LIMITS, counted=None):
    xs, ys = brute_curve(maps, channels, counted)
    return {str(lim): brute_area(xs, ys, lim) for lim in limits}


# ---------------------------------------------------------------- random inputs
def random_case(rng, n_images=4, shape=(9, 11), dtype=np.float32, levels=None):
    maps, channels = [], []
    for i in range(n_images):
        if levels is not None:
            m = rng.integers(0, levels, size=shape).astype(dtype)
        else:
            m = rng.random(shape).astype(dtype)
        chans = []
        if i % 2:
            for _ in range(rng.integers(1, 4)):
                mask = rng.random(shape) < rng.uniform(0.05, 0.4)
                area = int(mask.sum())
                sat = int(rng.uniform(0.1, 1.0) * area) if rng.random() < 0.5 else min(int(rng.integers(1, 30)), area)
                chans.append((mask, sat))
                m[mask] += np.asarray(rng.integers(0, 3) if levels else rng.random() * 0.5, dtype=dtype)
        maps.append(m)
        channels.append(chans)
    return maps, channels


def assert_dicts(got, want, tol=1e-9):
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=tol), k


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["float32", "float64", "uint8", "int16", "int32"])
def test_exact_spro_vs_brute_force(seed, kind):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(kind)
    levels = None if dtype.kind == "f" else 6  # few levels: many ties
    maps, channels = random_case(rng, dtype=dtype, levels=levels)
    assert_dicts(auc_spro(maps, channels), brute_auc_spro(maps, channels))


def test_counted_channels_and_zero_saturation():
    rng = np.random.default_rng(7)
    maps, channels = random_case(rng, n_images=5, dtype=np.float64)
    channels[1] = channels[1] + [(np.zeros_like(maps[1], dtype=bool), 0)]  # empty channel: sPRO 1
    counted = [[k % 2 == 0 for k in range(len(c))] for c in channels]
    assert_dicts(auc_spro(maps, channels, counted=counted), brute_auc_spro(maps, channels, counted=counted))


def test_spro_curve_points():
    rng = np.random.default_rng(3)
    maps, channels = random_case(rng, dtype=np.uint8, levels=5)
    xs, ys = spro_curve(maps, channels)
    bx, by = brute_curve(maps, channels)
    np.testing.assert_allclose(xs, bx, atol=1e-12)
    np.testing.assert_allclose(ys, by, atol=1e-12)
    assert xs[0] == 0.0 and xs[-1] == 1.0


def test_undefined_cases_are_nan():
    maps = [np.ones((4, 4), np.float32)]
    assert all(np.isnan(v) for v in auc_spro(maps, [[]]).values())
    full = np.ones((4, 4), bool)
    assert all(np.isnan(v) for v in auc_spro(maps, [[(full, 16)]]).values())
    assert np.isnan(pixel_auroc(maps, [None]))
    assert np.isnan(aupro(maps, [None]))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        auc_spro([np.zeros((4, 4))], [[(np.zeros((4, 5), bool), 1)]])


def test_official_mode_on_random_data_is_close_to_exact():
    rng = np.random.default_rng(11)
    maps, channels = random_case(rng, n_images=6, shape=(30, 30), dtype=np.uint8, levels=40)
    exact = auc_spro(maps, channels)
    official = auc_spro_official(maps, channels)
    for k in exact:
        assert official[k] == pytest.approx(exact[k], abs=2e-2)


# ---------------------------------------------------------------- AUPRO and pixel AUROC
def brute_aupro(maps, masks, limit):
    channels = []
    for mask in masks:
        chans = []
        if mask is not None:
            labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
            for r in range(1, n + 1):
                region = labels == r
                chans.append((region, int(region.sum())))
        channels.append(chans)
    xs, ys = brute_curve(maps, channels)
    return brute_area(xs, ys, limit)


@pytest.mark.parametrize("seed", range(5))
def test_aupro_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    maps = [rng.integers(0, 8, size=(12, 10)).astype(np.uint8) for _ in range(4)]
    masks = [None, rng.random((12, 10)) < 0.2, rng.random((12, 10)) < 0.1, np.zeros((12, 10), bool)]
    assert aupro(maps, masks, 0.3) == pytest.approx(brute_aupro(maps, masks, 0.3), abs=1e-9)
    assert aupro(maps, masks, 1.0) == pytest.approx(brute_aupro(maps, masks, 1.0), abs=1e-9)


@pytest.mark.parametrize("kind", ["float32", "uint8", "uint16"])
def test_pixel_auroc_vs_sklearn(kind):
    rng = np.random.default_rng(5)
    maps = [(rng.random((10, 8)) * 20).astype(kind) for _ in range(5)]
    masks = [None if i % 2 == 0 else rng.random((10, 8)) < 0.3 for i in range(5)]
    for m, mask in zip(maps, masks):
        if mask is not None:
            m[mask] += np.asarray(3, dtype=kind)
    y = np.concatenate([np.zeros(m.size) if mk is None else mk.ravel() for m, mk in zip(maps, masks)])
    s = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


# ---------------------------------------------------------------- image-level metrics
def scores_labels(seed, n=40, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = rng.integers(0, 6, n).astype(float) if ties else rng.random(n)
    return s + y * rng.random(n), y


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [True, False])
def test_image_metrics_vs_sklearn(seed, ties):
    s, y = scores_labels(seed, ties=ties)
    if ties:
        s = np.round(s)
    assert image_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert image_ap(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    got = tpr_at_tnr(s, y)
    for level in (0.99, 0.95, 0.9):
        assert got[str(level)] == pytest.approx(max(t for f, t in zip(fpr, tpr) if f <= 1 - level + 1e-12))


def test_image_metrics_single_class_is_nan():
    assert np.isnan(image_auroc([1.0, 2.0], [1, 1]))
    assert np.isnan(image_ap([1.0, 2.0], [0, 0]))
    assert all(np.isnan(v) for v in tpr_at_tnr([1.0, 2.0], [0, 0]).values())


def test_calibrated_rates():
    cal = np.arange(100, dtype=float)  # 0.9-quantile "higher" = 90 (index 89.1 -> 90)
    scores = [10, 95, 91, 90, 50, 99]
    labels = [0, 0, 0, 1, 1, 1]
    out = calibrated_rates(cal, scores, labels)
    assert out["0.9"]["threshold"] == 90.0
    assert out["0.9"]["fpr"] == pytest.approx(2 / 3)
    assert out["0.9"]["fnr"] == pytest.approx(2 / 3)
    assert out["0.99"]["threshold"] == 99.0
    assert out["0.99"]["fpr"] == 0.0 and out["0.99"]["fnr"] == 1.0


# ---------------------------------------------------------------- property tests
@st.composite
def cases(draw):
    h = draw(st.integers(1, 7))
    w = draw(st.integers(1, 7))
    n = draw(st.integers(1, 4))
    levels = draw(st.sampled_from([1, 2, 4, 256]))  # 1 level: constant maps
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    maps, channels = [], []
    for _ in range(n):
        maps.append(rng.integers(0, levels, size=(h, w)).astype(np.uint8 if levels <= 256 else np.float32))
        chans = []
        for _ in range(draw(st.integers(0, 2))):
            mask = rng.random((h, w)) < draw(st.floats(0.0, 0.8))  # may be empty
            chans.append((mask, draw(st.integers(0, 3)) if mask.any() else 0))
        channels.append(chans)
    return maps, channels


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_property_exact_equals_brute_force(case):
    maps, channels = case
    got = auc_spro(maps, channels)
    as_float = auc_spro([m.astype(np.float64) for m in maps], channels)
    has_neg = any((~np.any([c[0] for c in chans], axis=0) if chans else np.ones(m.shape, bool)).any() for m, chans in zip(maps, channels))
    if not has_neg or not any(channels):
        assert all(np.isnan(v) for v in got.values())
        return
    want = brute_auc_spro(maps, channels)
    assert_dicts(got, want)
    assert_dicts(as_float, want)
    assert all(-1e-12 <= v <= 1 + 1e-12 for v in got.values())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1)), min_size=2, max_size=30))
def test_property_image_auroc(pairs):
    s = [float(a) for a, _ in pairs]
    y = [b for _, b in pairs]
    if len(set(y)) < 2:
        assert np.isnan(image_auroc(s, y))
    else:
        assert image_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert image_ap(s, y) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 500])
@pytest.mark.parametrize("distinct", [1, 3, 1000])
def test_average_ranks_are_scipys_rankdata_to_the_bit(n: int, distinct: int) -> None:
    from scipy.stats import rankdata

    from autovi_core.metrics.classification import average_ranks

    values = np.random.default_rng(n * 7 + distinct).integers(0, distinct, n).astype(np.float64) / 3.0
    assert np.array_equal(average_ranks(values), rankdata(values))


def test_shared_negative_histograms_give_the_same_numbers_to_the_bit() -> None:
    """The overall curve and its subsets (sharing good images) inside shared_negative_histograms()
    equal the same calls without it, for integer maps; pixel AUROC and AUPRO too."""
    from autovi_core.metrics.spro import auc_spro, aupro, pixel_auroc, shared_negative_histograms

    rng = np.random.default_rng(5)
    maps = [rng.integers(0, 256, (24, 24), dtype=np.uint8) for _ in range(9)]
    channels = [[] for _ in range(5)]
    for _ in range(4):
        mask = np.zeros((24, 24), bool)
        mask[rng.integers(0, 12) :, rng.integers(0, 12) :][:6, :6] = True
        channels.append([(mask, 20)])
    unions = [None] * 5 + [c[0][0] for c in channels[5:]]
    subsets = [list(range(9)), [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 7, 8], list(range(9))]

    def run() -> list:
        out = [auc_spro([maps[i] for i in s], [channels[i] for i in s]) for s in subsets]
        return [*out, pixel_auroc(maps, unions), aupro(maps, unions, 0.3)]

    plain = run()
    with shared_negative_histograms():
        shared = run()
    assert shared == plain


def test_shared_results_across_multi_channel_images_and_unions_give_the_same_bits() -> None:
    """evaluate_localisation shares, within one call, each map's negative histogram and each
    channel's sorted scores across its subsets, pixel AUROC and AUPRO (a single channel's mask is
    its own union): the numbers equal separate calls outside the sharing, to the bit."""
    from autovi_core.metrics.evaluate import _union

    rng = np.random.default_rng(8)
    maps, channels = random_case(rng, n_images=10, shape=(20, 18), dtype=np.uint8, levels=30)
    channels = [[(mask, max(sat, 0)) for mask, sat in chans] for chans in channels]
    unions = [_union(chans, m.shape) for chans, m in zip(channels, maps)]
    assert any(len(c) == 1 for c in channels) and any(len(c) > 1 for c in channels)
    assert all(u is c[0][0] for u, c in zip(unions, channels) if len(c) == 1)
    subsets = [list(range(10)), [0, 1, 2, 3, 5], [0, 2, 4, 6, 7, 9]]

    def run() -> list:
        out = [auc_spro([maps[i] for i in s], [channels[i] for i in s]) for s in subsets]
        out.append(auc_spro_official(maps, channels))
        return [*out, pixel_auroc(maps, unions), aupro(maps, unions, 0.3)]

    plain = run()
    from autovi_core.metrics.spro import shared_negative_histograms

    with shared_negative_histograms():
        assert run() == plain


# ---------------------------------------------------------------- binned (numpy) vs compiled (numba) paths
def binned_case(seed: int):
    """Integer maps (histogram form) with 0-4 channels per image (at least one counted): empty masks,
    zero, fractional and huge saturation areas, several images, many ties."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(["uint8", "uint16", "int16", "int8"][seed % 4])
    info = np.iinfo(dtype)
    levels = int(rng.choice([3, 20, 120] + ([3000] if dtype.itemsize == 2 else [])))
    low = max(int(info.min), -levels // 2)
    shape = tuple(int(v) for v in rng.integers(3, 40, 2))
    maps, channels = [], []
    for i in range(int(rng.integers(2, 8))):
        maps.append(rng.integers(low, low + levels, size=shape).astype(dtype))
        chans = []
        for _ in range(int(rng.integers(1 if i == 1 else 0, 5)) if i % 2 else 0):
            mask = rng.random(shape) < rng.uniform(0.0, 0.5)
            area = int(mask.sum())
            sat = rng.choice([0, 0.5, 1e300, rng.uniform(0.1, 1.0) * area, int(rng.integers(1, area + 2))])
            chans.append((mask, sat))
        channels.append(chans)
    counted = None
    if seed % 3 == 0:  # image 1's first channel always counts
        counted = [[(i, k) == (1, 0) or bool(rng.random() < 0.7) for k in range(len(c))] for i, c in enumerate(channels)]
    return maps, channels, counted


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("seed", range(60))
def test_binned_paths_equal_the_compiled_kernels_to_the_bit(seed: int) -> None:
    """8/16-bit maps are swept in numpy/Python (no numba start-up); every result equals the
    compiled kernels' on the same data to the last bit: the sweep (areas, full curve, sampled curve),
    pixel AUROC's rank statistic and the official evaluator's per-threshold (sPRO, FPR)."""
    from autovi_core.metrics import spro_compiled
    from autovi_core.metrics.spro import CURVE_FPRS, _global_positive_order, _rank_auc_binned, _sweep_binned, prepare
    from autovi_core.metrics.spro_official import _evaluate_binned, _Evaluator

    maps, channels, counted = binned_case(seed)
    px = prepare(maps, channels, counted)
    assert px.neg_counts is not None
    if px.n_neg == 0 or px.n_channels == 0:
        pytest.skip("no curve: the callers return nan before sweeping")
    pos, ids = _global_positive_order(px)
    for record, limits, grid in ((False, FPR_LIMITS, ()), (True, (2.0,), ()), (False, FPR_LIMITS, CURVE_FPRS)):
        lim, grid = np.asarray(limits, dtype=np.float64), np.asarray(grid, dtype=np.float64)
        compiled = spro_compiled.sweep(px.neg_values, px.counts_array(), px.n_neg, pos, ids, px.sat, lim, record, grid)
        assert all(same_bits(a, b) for a, b in zip(compiled, _sweep_binned(px, lim, record, grid)))
    if len(px.pos_values):
        compiled_auc = spro_compiled.rank_auc(px.neg_values, px.counts_array(), px.n_neg, np.sort(px.pos_values))
        assert same_bits(compiled_auc, _rank_auc_binned(px))
    lo, hi = float(px.neg_values.min()), float(px.neg_values.max())
    thresholds = np.concatenate((np.linspace(hi + 1, lo - 1, 97), np.arange(lo - 1, hi + 1, 0.5)))
    cum = _Evaluator(px).cum
    compiled_pair = spro_compiled.evaluate(px.neg_values, cum, px.n_neg, px.pos_values, px.pos_offsets, px.sat, thresholds)
    assert all(same_bits(a, b) for a, b in zip(compiled_pair, _evaluate_binned(px, cum, thresholds)))


def test_regions_are_numbered_as_scipy_labels_them() -> None:
    """AUPRO's regions (8-connected, numbered by their first pixel in raster order) without scipy."""
    from autovi_core.metrics.spro import _regions

    rng = np.random.default_rng(2)
    masks = [rng.random(tuple(int(v) for v in rng.integers(1, 30, 2))) < rng.uniform(0.05, 0.95) for _ in range(300)]
    checker = (np.indices((17, 19)).sum(axis=0) % 2).astype(bool)
    u = np.zeros((9, 9), bool)
    u[1:8, 1] = u[1:8, 7] = u[7, 1:8] = True  # a U: two branches met late
    masks += [np.zeros((4, 5), bool), np.ones((3, 6), bool), checker, ~checker, u, u[::-1].copy(), u.T.copy()]
    for mask in masks:
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        inside, areas = _regions(mask)
        assert np.array_equal(inside, labels[mask] - 1)
        assert np.array_equal(areas, np.bincount(labels.ravel(), minlength=n + 1)[1:])


def test_integer_maps_import_neither_numba_nor_scipy() -> None:
    """The metrics of 8/16-bit maps (what `autovi evaluate` reads from PNG) need no numba (about a
    second of start-up) and no scipy; float maps still use the compiled kernels."""
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from autovi_core.metrics.evaluate import evaluate_localisation
        from autovi_core.dataset import DefectConfig

        rng = np.random.default_rng(0)
        cfg = DefectConfig("scratch", 255, 1.0, True)
        mask = np.zeros((16, 16), bool)
        mask[3:7, 4:9] = True
        maps = {f"good/{i}": rng.integers(0, 256, (16, 16), dtype=np.uint8) for i in range(3)}
        maps["scratch/0"] = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        gt = {"scratch/0": [(mask, cfg)]}
        for mode in ("exact", "official"):
            evaluate_localisation(maps, gt, mode=mode)
        heavy = sorted(m for m in ("numba", "scipy") if m in sys.modules)
        assert not heavy, heavy
        evaluate_localisation({k: v.astype(np.float32) for k, v in maps.items()}, gt)
        assert "numba" in sys.modules
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("kind", ["uint8", "int8", "uint16", "int16", "int32", "float32"])
def test_official_initial_quantiles_count_instead_of_sorting(kind: str) -> None:
    """The initial thresholds' order statistics of 8/16-bit scores come from a histogram: the same
    values, dtype and Python types as sorting."""
    from autovi_core.metrics.spro_official import _sorted_at

    rng = np.random.default_rng(4)
    dtype = np.dtype(kind)
    for n in (1, 2, 49, 5000):
        if dtype.kind == "f":
            scores = rng.random(n).astype(dtype)
        else:
            info = np.iinfo(dtype)
            scores = rng.integers(info.min, info.max, n, endpoint=True).astype(dtype)
        positions = np.linspace(0, n - 1, num=50, endpoint=True, dtype=int)[1:-1]
        want = np.sort(scores)[positions]
        got = _sorted_at(scores, positions)
        assert got.dtype == want.dtype and got.tolist() == want.tolist()
        assert [type(v) for v in got.tolist()] == [type(v) for v in want.tolist()]
