"""A plain re-implementation of the official evaluator's refined-threshold AUsPRO.

Written the straightforward way the official code works: for every queried threshold, loop over
the images and count ``map > t`` with numpy, per image for the FPR and per channel for the sPRO.
It is the speed baseline of ``bench_spro.py`` and an independent check of
``autovi_core.metrics.spro_official`` (both must reproduce the golden metrics.json).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np


def _values(maps, channels, thresholds):
    """(mean sPRO, FPR) per threshold, thresholding every map."""
    unions = []
    for m, chans in zip(maps, channels):
        u = np.zeros(m.shape, dtype=bool)
        for mask, _ in chans:
            u |= mask
        unions.append(u)
    n_neg = sum(int((~u).sum()) for u in unions)
    out = []
    for t in thresholds:
        fp = 0
        spros = []
        for m, chans, u in zip(maps, channels, unions):
            above = m > t
            fp += int(np.count_nonzero(above & ~u))
            for mask, sat in chans:
                tp = int(np.count_nonzero(above & mask))
                spros.append(1.0 if sat == 0 else min(tp / sat, 1.0))
        out.append((float(np.mean(spros)), fp / n_neg))
    return out


def _initial(maps, seed):
    n_px = maps[0].size
    if len(maps) * n_px <= 10_000_000:
        sampled = np.concatenate([m.ravel() for m in maps])
    else:
        rng = np.random.default_rng(seed)
        k = int(np.floor(10_000_000 / len(maps)))
        sampled = np.concatenate([rng.choice(m.ravel(), size=k, replace=False) for m in maps])
    sampled.sort()
    idx = np.linspace(0, len(sampled) - 1, num=50, dtype=int)[1:-1]
    lo = min(float(m.min()) for m in maps) - 1e-6
    hi = max(float(m.max()) for m in maps) + 1e-6
    return list(dict.fromkeys([hi] + sampled[idx].tolist()[::-1] + [lo]))


def _auc(x, y, limit):
    x, y = np.asarray(x), np.asarray(y)
    extra = 0.0
    if limit not in x:
        i = bisect_right(list(x), limit)
        y_lim = y[i - 1] + (y[i] - y[i - 1]) * (limit - x[i - 1]) / (x[i] - x[i - 1])
        extra = 0.5 * (y_lim + y[i - 1]) * (limit - x[i - 1])
    keep = x <= limit
    x, y = x[keep], y[keep]
    return (float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x))) + extra) / limit


def reference_auc_spro_official(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[tuple[np.ndarray, int]]],
    limits: Sequence[float] = (0.01, 0.05, 0.1, 0.3, 1.0),
    max_distance: float = 0.001,
    seed: int = 0,
) -> dict[str, float]:
    """The official refined-threshold AUsPRO, computed the slow plain way."""
    queries = _initial(maps, seed)
    values = _values(maps, channels, queries)
    for _ in range(10):
        candidates = []
        for i in range(len(queries) - 1):
            d_spro = values[i + 1][0] - values[i][0]
            d_fpr = values[i + 1][1] - values[i][1]
            dist = float(np.sqrt(d_spro**2 + d_fpr**2))
            if dist <= max_distance or abs(0.5 * d_spro * d_fpr) <= 0.25 * max_distance**2:
                continue
            candidates.append((dist, queries[i], queries[i + 1]))
        if not candidates:
            break
        candidates = sorted(candidates, key=lambda c: c[0], reverse=True)[:100]
        remaining = max(20 - len(candidates), 0)
        total = sum(c[0] for c in candidates)
        new = []
        for dist, left, right in candidates:
            add = int(np.round(dist / total * remaining))
            new.extend(np.linspace(left, right, num=3 + add)[1:-1])
            remaining -= add
            total -= dist
        queries = queries + new
        values = values + _values(maps, channels, new)
        order = np.argsort(np.asarray(queries, dtype=np.float64))[::-1]
        queries = [queries[i] for i in order]
        values = [values[i] for i in order]
    spro = [v[0] for v in values]
    fpr = [v[1] for v in values]
    return {str(float(lim)): _auc(fpr, spro, lim) for lim in limits}
