"""Exact sPRO / AUsPRO, MVTec AD's AUPRO and pixel AUROC.

Every distinct anomaly score is a threshold and a pixel is positive when its score is strictly
greater than the threshold, so the curves are the true step curves (no threshold sampling).

Data flow: the scores of all *negative* pixels (outside the union of an image's channels) go into
one array that is sorted in place (8/16-bit integer maps: a histogram, no sort); the scores of each
channel's pixels are kept per channel. One compiled sweep over the distinct scores, from the
highest down, then accumulates the areas for every FPR limit without building the curve (or,
for :func:`auc_spro_and_curve`, keeping only the curve's vertices at a fixed grid of FPRs).

Conventions:

* ``sat_c == 0`` (an empty channel, or a relative saturation that truncates to 0) gives
  sPRO 1 at every threshold for that channel.
* Without any negative pixel (FPR undefined) or without any channel (mean sPRO undefined) the
  AUCs are ``nan``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce

import numpy as np
from numba import njit

FPR_LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)

CURVE_FPRS: tuple[float, ...] = tuple(np.linspace(0.0, 0.05, 151)[1:].tolist() + np.linspace(0.05, 1.0, 151)[1:].tolist())
"""The FPRs a sampled sPRO curve (:func:`auc_spro_and_curve`) is kept at: 300 values, 150 linearly
spaced in (0, 0.05] (step 1/3000, where the AUsPRO limits 0.01 and 0.05 look) and 150 in
(0.05, 1] (step 0.95/150); with the start and end points at most 302 points."""

Channel = tuple[np.ndarray, int]


@dataclass
class PixelData:
    """Scores split into negatives and per-channel positives, ready for a sweep.

    ``neg_values`` is ascending. With ``neg_counts`` set it holds distinct values and their
    counts (histogram form); otherwise every entry is one pixel. ``pos_values`` holds, channel
    after channel, each channel's scores sorted ascending; channel ``c`` spans
    ``pos_offsets[c]:pos_offsets[c + 1]``.
    """

    neg_values: np.ndarray
    neg_counts: np.ndarray | None
    n_neg: int
    pos_values: np.ndarray
    pos_offsets: np.ndarray
    sat: np.ndarray

    @property
    def n_channels(self) -> int:
        return len(self.sat)

    def counts_array(self) -> np.ndarray:
        """``neg_counts`` or an empty array (the compiled code's 'one per entry' marker)."""
        return self.neg_counts if self.neg_counts is not None else np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# gathering
# --------------------------------------------------------------------------------------------
def common_dtype(maps: Sequence[np.ndarray]) -> np.dtype:
    """The dtype all maps are compared in (bool becomes uint8, float16 becomes float32)."""
    if not maps:
        raise ValueError("no anomaly maps given")
    dtype = reduce(np.promote_types, (np.asarray(m).dtype for m in maps))
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"anomaly maps must be real numbers, got dtype {dtype}")
    return dtype


def _uses_histogram(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2


_shared_histograms: dict[tuple, tuple[np.ndarray, tuple]] | None = None


@contextmanager
def shared_negative_histograms() -> Iterator[None]:
    """Within this block, :func:`prepare` bins each integer map's negative pixels once per (map,
    channel masks) pair and reuses the histogram when the same arrays come again (the overall curve
    and every per-defect-type and per-subdir subset share their good images). Integer counts add
    up exactly, so the results are the same to the bit; float maps are gathered as before."""
    global _shared_histograms
    outer = _shared_histograms
    if outer is None:
        _shared_histograms = {}
    try:
        yield
    finally:
        _shared_histograms = outer


def _negative_histogram(m: np.ndarray, u: np.ndarray | None, info: np.iinfo, key: tuple | None, pinned: tuple) -> np.ndarray:
    if key is not None and _shared_histograms is not None and key in _shared_histograms:
        return _shared_histograms[key][0]
    values = m.ravel() if u is None else m[~u]
    if info.min < 0:
        values = values.astype(np.int32) - int(info.min)
    hist = np.bincount(values, minlength=int(info.max) - int(info.min) + 1)
    if key is not None and _shared_histograms is not None:
        _shared_histograms[key] = (hist, pinned)  # the arrays stay referenced, so their ids stay theirs
    return hist


def _gather_negatives(
    maps: Sequence[np.ndarray], unions: Sequence[np.ndarray | None], dtype: np.dtype, keys: Sequence[tuple | None] = (), pins=()
):
    """Negative scores as (ascending values, counts or None, count)."""
    sizes = [m.size - (int(np.count_nonzero(u)) if u is not None else 0) for m, u in zip(maps, unions)]
    n_neg = int(sum(sizes))
    if _uses_histogram(dtype):
        info = np.iinfo(dtype)
        hist = np.zeros(int(info.max) - int(info.min) + 1, dtype=np.int64)
        for i, (m, u) in enumerate(zip(maps, unions)):
            hist += _negative_histogram(m, u, info, keys[i] if keys else None, pins[i] if pins else ())
        present = np.flatnonzero(hist)
        return (present + int(info.min)).astype(dtype), hist[present], n_neg
    out = np.empty(n_neg, dtype=dtype)
    start = 0
    for m, u, size in zip(maps, unions, sizes):
        out[start : start + size] = m.ravel() if u is None else m[~u]
        start += size
    out.sort()
    if n_neg and np.issubdtype(dtype, np.floating) and np.isnan(out[-1]):
        raise ValueError("anomaly maps hold NaN values")
    return out, None, n_neg


def _check_pair(i: int, m: np.ndarray, mask: np.ndarray) -> None:
    if m.ndim != 2:
        raise ValueError(f"map {i} must be 2-D, got shape {m.shape}")
    if mask.shape != m.shape:
        raise ValueError(f"map {i}: mask shape {mask.shape} differs from map shape {m.shape}")


def prepare(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    counted: Sequence[Sequence[bool]] | None = None,
) -> PixelData:
    """Split the pixels for sPRO: negatives outside each image's channel union, positives per channel.

    ``counted[i][k]`` false keeps channel ``k`` of image ``i`` out of the mean sPRO while its
    pixels still stay out of the FPR (used for per-defect-type numbers).
    """
    if len(maps) != len(channels):
        raise ValueError(f"{len(maps)} maps but {len(channels)} channel lists")
    dtype = common_dtype(maps)
    maps = [np.asarray(m) for m in maps]
    unions: list[np.ndarray | None] = []
    pos_parts: list[np.ndarray] = []
    sats: list[float] = []
    for i, (m, chans) in enumerate(zip(maps, channels)):
        if m.ndim != 2:
            raise ValueError(f"map {i} must be 2-D, got shape {m.shape}")
        union = None
        for k, (mask, sat) in enumerate(chans):
            mask = np.asarray(mask, dtype=bool)
            _check_pair(i, m, mask)
            union = mask.copy() if union is None else np.logical_or(union, mask, out=union)
            if counted is None or counted[i][k]:
                pos_parts.append(np.sort(m[mask].astype(dtype, copy=False)))
                sats.append(float(sat))
        unions.append(union)
    keys, pins = [], []
    if _shared_histograms is not None and _uses_histogram(dtype):  # what identifies each image's negatives
        keys = [(id(m), dtype.str, tuple(id(mask) for mask, _ in chans)) for m, chans in zip(maps, channels)]
        pins = [(m, [mask for mask, _ in chans]) for m, chans in zip(maps, channels)]
    neg_values, neg_counts, n_neg = _gather_negatives(maps, unions, dtype, keys, pins)
    lengths = np.array([len(p) for p in pos_parts], dtype=np.int64)
    offsets = np.zeros(len(pos_parts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    pos_values = np.concatenate(pos_parts) if pos_parts else np.empty(0, dtype=dtype)
    if np.issubdtype(dtype, np.floating) and np.isnan(pos_values).any():
        raise ValueError("anomaly maps hold NaN values")
    return PixelData(neg_values, neg_counts, n_neg, pos_values, offsets, np.array(sats, dtype=np.float64))


def _global_positive_order(px: PixelData) -> tuple[np.ndarray, np.ndarray]:
    """All positive scores ascending with the channel id of each."""
    order = np.argsort(px.pos_values, kind="stable")
    ids = np.repeat(np.arange(px.n_channels, dtype=np.int32), np.diff(px.pos_offsets))
    return px.pos_values[order], ids[order]


# --------------------------------------------------------------------------------------------
# compiled sweep
# --------------------------------------------------------------------------------------------
@njit(cache=True)
def _sweep(neg, neg_counts, n_neg, pos, pos_ch, sat, limits, record, grid):
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
def _rank_auc(neg, neg_counts, n_neg, pos):
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


def _run_sweep(px: PixelData, limits: Sequence[float], record: bool, grid: np.ndarray | None = None):
    pos, ids = _global_positive_order(px)
    lim = np.asarray(limits, dtype=np.float64)
    grid = np.empty(0, dtype=np.float64) if grid is None else grid
    return _sweep(px.neg_values, px.counts_array(), px.n_neg, pos, ids, px.sat, lim, record, grid)


def _areas_to_dict(px: PixelData, limits: Sequence[float]) -> dict[str, float]:
    if px.n_neg == 0 or px.n_channels == 0:
        return {str(float(lim)): float("nan") for lim in limits}
    areas, _, _ = _run_sweep(px, limits, record=False)
    return {str(float(lim)): float(a / lim) for lim, a in zip(limits, areas)}


def _fpr_grid(fprs: Sequence[float]) -> np.ndarray:
    grid = np.asarray(fprs, dtype=np.float64)
    if grid.ndim != 1 or len(grid) == 0 or not np.isfinite(grid).all() or np.any(np.diff(grid) <= 0):
        raise ValueError("the curve's FPR grid must be a non-empty, strictly ascending 1-D sequence of finite numbers")
    return grid


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def auc_spro(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    limits: Sequence[float] = FPR_LIMITS,
    *,
    counted: Sequence[Sequence[bool]] | None = None,
) -> dict[str, float]:
    """Exact AUsPRO for each FPR limit, keyed ``str(limit)`` ("0.01", ..., "1.0").

    ``channels[i]`` lists image ``i``'s ``(bool mask, saturation area)`` pairs (empty for good
    images). Each area is integrated with the trapezoid rule up to the limit, interpolating
    linearly at the limit, and divided by the limit. ``counted`` optionally keeps channels out
    of the mean sPRO (see :func:`prepare`).
    """
    return _areas_to_dict(prepare(maps, channels, counted), limits)


def spro_curve(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    *,
    counted: Sequence[Sequence[bool]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact (FPR, mean sPRO) curve from (0, sPRO above the maximum) to FPR 1.

    One point per distinct score plus the starting point; memory grows with the number of
    distinct scores, so use it for small inputs and plots (:func:`auc_spro_and_curve` samples it).
    """
    px = prepare(maps, channels, counted)
    if px.n_neg == 0 or px.n_channels == 0:
        raise ValueError("the sPRO curve needs at least one negative pixel and one channel")
    _, xs, ys = _run_sweep(px, (2.0,), record=True)
    return xs, ys


def auc_spro_and_curve(
    maps: Sequence[np.ndarray],
    channels: Sequence[Sequence[Channel]],
    limits: Sequence[float] = FPR_LIMITS,
    fprs: Sequence[float] = CURVE_FPRS,
    *,
    counted: Sequence[Sequence[bool]] | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray] | None]:
    """:func:`auc_spro` (the same numbers, to the bit) and, from the same sweep, the exact curve
    sampled at the ascending FPR grid ``fprs``.

    The sampled curve keeps the exact curve's starting point (FPR 0), for each grid value the
    first vertex whose FPR is >= it, and the last vertex (FPR 1): at most ``len(fprs) + 2``
    points, each one a vertex of :func:`spro_curve`. The curve is ``None`` where the AUCs are
    ``nan`` (no negative pixel or no channel).
    """
    grid = _fpr_grid(fprs)
    px = prepare(maps, channels, counted)
    if px.n_neg == 0 or px.n_channels == 0:
        return {str(float(lim)): float("nan") for lim in limits}, None
    areas, xs, ys = _run_sweep(px, limits, record=False, grid=grid)
    return {str(float(lim)): float(a / lim) for lim, a in zip(limits, areas)}, (xs, ys)


def auc_from_curve(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Area under an ascending-FPR curve up to ``limit`` divided by ``limit``.

    Non-finite points are dropped; when ``limit`` is not one of the FPRs the curve is
    interpolated linearly between the last point below it and the first above it.
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(fpr) & np.isfinite(y)
    fpr, y = fpr[keep], y[keep]
    extra = 0.0
    if limit not in fpr:
        cut = bisect_right(fpr.tolist(), limit)
        if 0 < cut < len(fpr):
            y_lim = y[cut - 1] + (y[cut] - y[cut - 1]) * (limit - fpr[cut - 1]) / (fpr[cut] - fpr[cut - 1])
            extra = 0.5 * (y_lim + y[cut - 1]) * (limit - fpr[cut - 1])
    inside = fpr <= limit
    x_in, y_in = fpr[inside], y[inside]
    area = float(np.sum(0.5 * (y_in[1:] + y_in[:-1]) * (x_in[1:] - x_in[:-1]))) + extra
    return area / limit


def _regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels of a mask and the area of each region (index 0 = label 1)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    return labels, np.bincount(labels.ravel(), minlength=n + 1)[1:]


def _region_data(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> PixelData:
    """PixelData with one channel per 8-connected region, each saturating at its own area."""
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps but {len(masks)} masks")
    dtype = common_dtype(maps)
    maps = [np.asarray(m) for m in maps]
    unions: list[np.ndarray | None] = []
    parts: list[np.ndarray] = []
    sats: list[np.ndarray] = []
    for i, (m, mask) in enumerate(zip(maps, masks)):
        if m.ndim != 2:
            raise ValueError(f"map {i} must be 2-D, got shape {m.shape}")
        if mask is None or not np.any(mask):
            unions.append(None)
            continue
        mask = np.asarray(mask, dtype=bool)
        _check_pair(i, m, mask)
        labels, areas = _regions(mask)
        inside = labels[mask]
        order = np.argsort(inside, kind="stable")
        values = m[mask].astype(dtype, copy=False)[order]
        bounds = np.concatenate(([0], np.cumsum(areas)))
        parts.extend(np.sort(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
        sats.append(areas.astype(np.float64))
        unions.append(mask)
    keys, pins = [], []
    if _shared_histograms is not None and _uses_histogram(dtype):  # a good image's key is the one prepare() gives it
        keys = [(id(m), dtype.str, () if u is None else ("union", id(mask))) for m, u, mask in zip(maps, unions, masks)]
        pins = [(m, mask) for m, mask in zip(maps, masks)]
    neg_values, neg_counts, n_neg = _gather_negatives(maps, unions, dtype, keys, pins)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    pos = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
    sat = np.concatenate(sats) if sats else np.empty(0, dtype=np.float64)
    return PixelData(neg_values, neg_counts, n_neg, pos, offsets, sat)


def aupro(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | None], limit: float = 0.3) -> float:
    """MVTec AD's AUPRO up to ``limit`` (normalised by it): regions are 8-connected components.

    ``masks[i]`` is a bool mask or ``None`` for a good image. ``nan`` without any region or
    without any defect-free pixel.
    """
    px = _region_data(maps, masks)
    return _areas_to_dict(px, (limit,))[str(float(limit))]


def pixel_auroc(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | None]) -> float:
    """ROC AUC over all pixels (positives = mask pixels), ties counted half; ``nan`` if a class is empty."""
    channels = [[] if mk is None else [(np.asarray(mk, dtype=bool), 1)] for mk in masks]
    px = prepare(maps, channels)
    pos = np.sort(px.pos_values)
    if px.n_neg == 0 or len(pos) == 0:
        return float("nan")
    return float(_rank_auc(px.neg_values, px.counts_array(), px.n_neg, pos))
