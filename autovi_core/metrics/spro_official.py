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

from .spro import FPR_LIMITS, Channel, PixelData, _uses_histogram, auc_from_curve, prepare

MAX_SCORES = 10_000_000
NUM_INITIAL = 50
EPSILON = 1e-6
MIN_QUERIES = 20
MAX_QUERIES = 100
MAX_STEPS = 10


def _evaluate_binned(px: PixelData, neg_cum: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`.spro_compiled.evaluate` for histogram-form data in numpy: the same result, to the bit.

    A score counts above a threshold when it is greater than it, compared in float64 (exact for
    8/16-bit scores); per threshold the channels' sPRO values are added in channel order
    (``np.cumsum``, sequential), as in the compiled loop. Needs a channel, as the callers ensure.
    """
    fpr = (px.n_neg - neg_cum[np.searchsorted(px.neg_values.astype(np.float64), thresholds, side="right")]) / px.n_neg
    pos = px.pos_values.astype(np.float64)
    terms = np.ones((len(thresholds), px.n_channels), dtype=np.float64)
    for c in range(px.n_channels):
        if px.sat[c] > 0:
            a, b = px.pos_offsets[c], px.pos_offsets[c + 1]
            tp = (b - a) - np.searchsorted(pos[a:b], thresholds, side="right")
            terms[:, c] = np.minimum(tp / px.sat[c], 1.0)
    return np.cumsum(terms, axis=1)[:, -1] / px.n_channels, fpr


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
        if px.neg_counts is not None:
            return _evaluate_binned(px, self.cum, t)
        from .spro_compiled import evaluate

        return evaluate(px.neg_values, self.cum, px.n_neg, px.pos_values, px.pos_offsets, px.sat, t)


def initial_thresholds(maps: Sequence[np.ndarray], seed: int | None = 0) -> list[float]:
    """The evaluator's 50 initial thresholds (descending, duplicates dropped in order)."""
    total = sum(int(m.size) for m in maps)
    if total <= MAX_SCORES:
        scores = np.concatenate([np.asarray(m).ravel() for m in maps])
    else:
        per_image = int(np.floor(MAX_SCORES / len(maps)))
        rng = np.random.default_rng(seed) if seed is not None else np.random
        scores = np.concatenate([rng.choice(np.asarray(m).ravel(), size=min(per_image, m.size), replace=False) for m in maps])
    lowest = min(float(np.min(m)) for m in maps)
    highest = max(float(np.max(m)) for m in maps)
    idx = np.linspace(0, len(scores) - 1, num=NUM_INITIAL, endpoint=True, dtype=int)[1:-1]
    middle = _sorted_at(scores, idx).tolist()[::-1]
    return list(dict.fromkeys([highest + EPSILON] + middle + [lowest - EPSILON]))


def _sorted_at(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``np.sort(scores)[positions]`` (same dtype); 8/16-bit integer scores are counted, not
    sorted: the score at sorted position ``k`` is the first whose cumulative count exceeds ``k``."""
    if not _uses_histogram(scores.dtype):
        return np.sort(scores)[positions]
    offset = int(np.iinfo(scores.dtype).min)
    cumulative = np.cumsum(np.bincount(scores.astype(np.int32) - offset if offset else scores))
    return (np.searchsorted(cumulative, positions, side="right") + offset).astype(scores.dtype)


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
