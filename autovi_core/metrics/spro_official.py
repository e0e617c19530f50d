"""The official AutoVI evaluator's refined-threshold sPRO curve, reproduced bit for bit.

The official code does not use every score as a threshold: it starts from 50 quantile thresholds
and refines between neighbouring thresholds whose (sPRO, FPR) points lie far apart (see
``shared/spec/autovi-evaluation.md`` section 3). This module re-implements that procedure, but
evaluates each queried threshold by binary search in sorted scores instead of thresholding
every map, so it also runs on full-size categories.

Differences from the evaluator, all outside the golden cases:

* above 10 M pixels the evaluator subsamples scores for the initial thresholds with the
  *unseeded* ``np.random.choice``; here the draw uses ``np.random.default_rng(seed)`` unless
  ``seed`` is ``None`` (then the global ``np.random`` as the evaluator does);
* scores and thresholds are compared exactly (in float64), whatever the map dtype;
* a channel whose saturation area is 0 has sPRO 1 (the evaluator divides by zero).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .spro import FPR_LIMITS, Channel, PixelData, auc_from_curve, prepare

MAX_SCORES = 10_000_000
NUM_INITIAL = 50
EPSILON = 1e-6
MIN_QUERIES = 20
MAX_QUERIES = 100
MAX_STEPS = 10


@njit(cache=True)
def _count_above(values, t):
    """Index of the first entry of ascending ``values`` that is greater than ``t``."""
    lo = 0
    hi = values.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] > t:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _evaluate(neg, neg_cum, n_neg, pos, offsets, sat, thresholds):
    """(mean sPRO, FPR) at each threshold; ``neg_cum`` are cumulative histogram counts or empty."""
    n_t = thresholds.shape[0]
    n_ch = sat.shape[0]
    spro = np.zeros(n_t)
    fpr = np.zeros(n_t)
    use_cum = neg_cum.shape[0] > 0
    for k in range(n_t):
        t = thresholds[k]
        idx = _count_above(neg, t)
        below = neg_cum[idx] if use_cum else idx
        fpr[k] = (n_neg - below) / n_neg
        total = 0.0
        for c in range(n_ch):
            a = offsets[c]
            b = offsets[c + 1]
            tp = b - a - _count_above(pos[a:b], t)
            if sat[c] <= 0:
                total += 1.0
            else:
                total += min(tp / sat[c], 1.0)
        spro[k] = total / n_ch
    return spro, fpr


class _Evaluator:
    """Evaluates (mean sPRO, FPR) at arbitrary thresholds from prepared pixel data."""

    def __init__(self, px: PixelData):
        self.px = px
        if px.neg_counts is not None:
            self.cum = np.concatenate(([0], np.cumsum(px.neg_counts))).astype(np.int64)
        else:
            self.cum = np.empty(0, dtype=np.int64)

    def __call__(self, thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        px = self.px
        t = np.asarray(thresholds, dtype=np.float64)
        return _evaluate(px.neg_values, self.cum, px.n_neg, px.pos_values, px.pos_offsets, px.sat, t)


def initial_thresholds(maps: Sequence[np.ndarray], seed: int | None = 0) -> list[float]:
    """The evaluator's 50 initial thresholds (descending, duplicates dropped in order)."""
    total = sum(int(m.size) for m in maps)
    if total <= MAX_SCORES:
        scores = np.concatenate([np.asarray(m).ravel() for m in maps])
    else:
        per_image = int(np.floor(MAX_SCORES / len(maps)))
        rng = np.random.default_rng(seed) if seed is not None else np.random
        scores = np.concatenate([rng.choice(np.asarray(m).ravel(), size=min(per_image, m.size), replace=False) for m in maps])
    scores.sort()
    lowest = min(float(np.min(m)) for m in maps)
    highest = max(float(np.max(m)) for m in maps)
    idx = np.linspace(0, len(scores) - 1, num=NUM_INITIAL, endpoint=True, dtype=int)[1:-1]
    middle = scores[idx].tolist()[::-1]
    return list(dict.fromkeys([highest + EPSILON] + middle + [lowest - EPSILON]))


def _new_queries(thresholds: list[float], spro: np.ndarray, fpr: np.ndarray, max_distance: float) -> list:
    """One refinement step's new thresholds (empty when the curve is fine enough)."""
    d_spro = np.diff(spro)
    d_fpr = np.diff(fpr)
    dist = np.sqrt(d_spro * d_spro + d_fpr * d_fpr)
    area = np.abs(0.5 * d_spro * d_fpr)
    cand = np.flatnonzero(~((dist <= max_distance) | (area <= 0.25 * max_distance**2)))
    if len(cand) == 0:
        return []
    cand = cand[np.argsort(-dist[cand], kind="stable")][:MAX_QUERIES]
    remaining = max(MIN_QUERIES - len(cand), 0)
    total = sum(float(dist[i]) for i in cand)  # sequential, as Python's sum
    queries: list = []
    for i in cand:
        extra = int(np.round(dist[i] / total * remaining))
        queries.extend(np.linspace(thresholds[i], thresholds[i + 1], num=3 + extra)[1:-1])
        remaining -= extra
        total -= float(dist[i])
    return queries


def official_curve(
    px: PixelData, maps: Sequence[np.ndarray], max_distance: float = 0.001, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds descending, FPR, mean sPRO) of every threshold the evaluator would query."""
    evaluate = _Evaluator(px)
    thresholds = list(initial_thresholds(maps, seed))
    spro, fpr = evaluate(thresholds)
    for _ in range(MAX_STEPS):
        queries = _new_queries(thresholds, spro, fpr, max_distance)
        if not queries:
            break
        new_spro, new_fpr = evaluate(queries)
        merged = np.asarray(thresholds + queries, dtype=np.float64)
        order = np.argsort(merged)[::-1]
        thresholds = [(thresholds + queries)[i] for i in order]
        spro = np.concatenate((spro, new_spro))[order]
        fpr = np.concatenate((fpr, new_fpr))[order]
    return np.asarray(thresholds, dtype=np.float64), fpr, spro


def official_thresholds(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    max_distance: float = 0.001,
    seed: int | None = 0,
) -> np.ndarray:
    """All thresholds the evaluator queries for these images (descending, duplicates kept)."""
    px = prepare(maps, channels)
    if px.n_neg == 0 or px.n_channels == 0:
        raise ValueError("the sPRO curve needs at least one negative pixel and one channel")
    return official_curve(px, [np.asarray(m) for m in maps], max_distance, seed)[0]


def auc_spro_official(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    limits: Sequence[float] = FPR_LIMITS,
    max_distance: float = 0.001,
    seed: int | None = 0,
    *,
    counted: Sequence[Sequence[bool]] | None = None,
    thresholds: Sequence[float] | None = None,
) -> dict[str, float]:
    """AUsPRO per FPR limit as the official evaluator computes it (its metrics.json values).

    Arguments as :func:`autovi_core.metrics.spro.auc_spro`. ``seed`` seeds the subsampling of
    scores for the initial thresholds, which only happens above 10 M pixels (``None``: the
    unseeded global RNG, as the evaluator). ``nan`` when there is no negative pixel or no
    counted channel.

    With ``thresholds`` (descending, e.g. from :func:`official_thresholds` on the whole test
    set) the curve is evaluated at exactly those thresholds instead of being refined: this is
    how the evaluator computes its per-subdir and per-defect-type numbers (the whole set's
    thresholds, reduced to a subset of images and/or channels).
    """
    px = prepare(maps, channels, counted)
    if px.n_neg == 0 or px.n_channels == 0:
        return {str(float(lim)): float("nan") for lim in limits}
    if thresholds is None:
        _, fpr, spro = official_curve(px, [np.asarray(m) for m in maps], max_distance, seed)
    else:
        spro, fpr = _Evaluator(px)(thresholds)
    return {str(float(lim)): auc_from_curve(fpr, spro, float(lim)) for lim in limits}
