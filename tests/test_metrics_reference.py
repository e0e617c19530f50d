"""The metrics against brute-force references and scikit-learn on small random inputs."""

from __future__ import annotations

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
