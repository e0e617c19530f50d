"""The compiled (numba) kernels of the sPRO family, for per-pixel data (float and wide integer maps).

8/16-bit integer maps come as histograms (a few hundred or thousand distinct scores); for them
:mod:`.spro` and :mod:`.spro_official` run the same arithmetic in the same order in numpy/Python,
so this module, numba and its start-up cost (about a second: importing numba and loading the
cached machine code) are only paid when the data is per pixel. Imported lazily.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def sweep(neg, neg_counts, n_neg, pos, pos_ch, sat, limits, record, grid):
    """Descending sweep over distinct scores; returns (areas per limit, curve x, curve y).

    Areas are raw (not divided by the limit). The curve holds every vertex when ``record``; else,
    with a non-empty ascending ``grid`` of FPRs, only the starting point, the first vertex whose
    FPR is >= each grid value and the last vertex (memory O(len(grid))); else just the start.
    Recording never changes the areas: the same points are accumulated in the same order.
    """
    n_ch = sat.shape[0]
    use_counts = neg_counts.shape[0] > 0
    n_lim = limits.shape[0]
    areas = np.zeros(n_lim)
    done = np.zeros(n_lim, dtype=np.bool_)
    inv = np.zeros(n_ch)
    cnt = np.zeros(n_ch, dtype=np.int64)
    total = 0.0  # sum of per-channel sPRO, compensated (Neumaier)
    comp = 0.0
    for c in range(n_ch):
        if sat[c] <= 0:
            total += 1.0
        else:
            inv[c] = 1.0 / sat[c]
    n_grid = grid.shape[0]
    sample = not record and n_grid > 0
    cap = neg.shape[0] + pos.shape[0] + 1 if record else n_grid + 2
    xs = np.zeros(cap)
    ys = np.zeros(cap)
    px = 0.0
    py = total / n_ch
    ys[0] = py
    n_pts = 1
    fp = 0
    i = neg.shape[0] - 1
    j = pos.shape[0] - 1
    n_done = 0
    g = 0  # next grid value to reach
    last_kept = True  # whether the latest vertex is in the curve
    while (i >= 0 or j >= 0) and (n_done < n_lim or record or sample):
        if i < 0:
            v = pos[j]
        elif j < 0:
            v = neg[i]
        else:
            v = neg[i] if neg[i] > pos[j] else pos[j]
        while i >= 0 and neg[i] == v:
            fp += neg_counts[i] if use_counts else 1
            i -= 1
        while j >= 0 and pos[j] == v:
            c = pos_ch[j]
            cnt[c] += 1
            if sat[c] > 0 and cnt[c] <= sat[c]:
                t = total + inv[c]
                if abs(total) >= inv[c]:
                    comp += (total - t) + inv[c]
                else:
                    comp += (inv[c] - t) + total
                total = t
            j -= 1
        x = fp / n_neg
        y = min((total + comp) / n_ch, 1.0) if n_ch > 0 else np.nan
        for k in range(n_lim):
            if done[k]:
                continue
            lim = limits[k]
            if x <= lim:
                areas[k] += 0.5 * (py + y) * (x - px)
            else:
                if px < lim:
                    y_lim = py + (y - py) * (lim - px) / (x - px)
                    areas[k] += 0.5 * (y_lim + py) * (lim - px)
                done[k] = True
                n_done += 1
        keep = record
        while sample and g < n_grid and x >= grid[g]:
            g += 1
            keep = True
        if keep:
            xs[n_pts] = x
            ys[n_pts] = y
            n_pts += 1
        last_kept = keep
        px = x
        py = y
    if sample and not last_kept:
        xs[n_pts] = px
        ys[n_pts] = py
        n_pts += 1
    return areas, xs[:n_pts], ys[:n_pts]


@njit(cache=True)
def rank_auc(neg, neg_counts, n_neg, pos):
    """ROC AUC as the rank statistic P(pos > neg) + P(pos == neg) / 2, from ascending arrays."""
    use_counts = neg_counts.shape[0] > 0
    i = neg.shape[0] - 1
    j = pos.shape[0] - 1
    tp_above = 0
    u = 0.0
    while i >= 0 or j >= 0:
        if i < 0:
            v = pos[j]
        elif j < 0:
            v = neg[i]
        else:
            v = neg[i] if neg[i] > pos[j] else pos[j]
        nn = 0
        while i >= 0 and neg[i] == v:
            nn += neg_counts[i] if use_counts else 1
            i -= 1
        npos = 0
        while j >= 0 and pos[j] == v:
            npos += 1
            j -= 1
        u += nn * (tp_above + 0.5 * npos)
        tp_above += npos
    return u / (float(pos.shape[0]) * float(n_neg))


@njit(cache=True)
def count_above(values, t):
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
def evaluate(neg, neg_cum, n_neg, pos, offsets, sat, thresholds):
    """(mean sPRO, FPR) at each threshold; ``neg_cum`` are cumulative histogram counts or empty."""
    n_t = thresholds.shape[0]
    n_ch = sat.shape[0]
    spro = np.zeros(n_t)
    fpr = np.zeros(n_t)
    use_cum = neg_cum.shape[0] > 0
    for k in range(n_t):
        t = thresholds[k]
        idx = count_above(neg, t)
        below = neg_cum[idx] if use_cum else idx
        fpr[k] = (n_neg - below) / n_neg
        total = 0.0
        for c in range(n_ch):
            a = offsets[c]
            b = offsets[c + 1]
            tp = b - a - count_above(pos[a:b], t)
            if sat[c] <= 0:
                total += 1.0
            else:
                total += min(tp / sat[c], 1.0)
        spro[k] = total / n_ch
    return spro, fpr
