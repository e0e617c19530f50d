"""Exact sPRO / AUsPRO, MVTec AD's AUPRO and pixel AUROC.

Every distinct anomaly score is a threshold and a pixel is positive when its score is strictly
greater than the threshold, so the curves are the true step curves (no threshold sampling).

Data flow: the scores of all *negative* pixels (outside the union of an image's channels) go into
one array that is sorted in place (8/16-bit integer maps: a histogram, no sort); the scores of each
channel's pixels are kept per channel. One sweep over the distinct scores, from the highest
down, then accumulates the areas for every FPR limit without building the curve (or, for
:func:`auc_spro_and_curve`, keeping only the curve's vertices at a fixed grid of FPRs). The sweep
is compiled (numba, :mod:`.spro_compiled`) for per-pixel data; histograms, with their few distinct
scores, are swept in Python with the same arithmetic in the same order (the same bits).

Conventions:

* ``sat_c == 0`` (an empty channel, or a relative saturation that truncates to 0) gives
  sPRO 1 at every threshold for that channel.
* Without any negative pixel (FPR undefined) or without any channel (mean sPRO undefined) the
  AUCs are ``nan``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

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


_shared: dict[tuple, tuple[np.ndarray, tuple]] | None = None


@contextmanager
def shared_negative_histograms() -> Iterator[None]:
    """Within this block, :func:`prepare` bins each integer map's negative pixels once per (map,
    channel masks) pair, and sorts each channel's scores once per (map, mask) pair, and reuses them
    when the same arrays come again (the overall curve and every per-defect-type and per-subdir
    subset share their good images; pixel AUROC and AUPRO share the single-channel images). Integer
    counts add up exactly and a sorted array is the same array, so the results are the same to the
    bit; float maps' negatives are gathered and sorted as before."""
    global _shared
    outer = _shared
    if outer is None:
        _shared = {}
    try:
        yield
    finally:
        _shared = outer


def _reused(key: tuple | None, pinned: tuple, compute: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
    """``compute(*args)``, once per ``key`` inside :func:`shared_negative_histograms` (``key`` names
    arrays by ``id``; ``pinned`` keeps them referenced, so their ids stay theirs)."""
    if key is None or _shared is None:
        return compute(*args)
    if key not in _shared:
        _shared[key] = (compute(*args), pinned)
    return _shared[key][0]


def _sorted_scores(m: np.ndarray, mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.sort(m[mask].astype(dtype, copy=False))


def _negative_histogram(m: np.ndarray, u: np.ndarray | None, info: np.iinfo) -> np.ndarray:
    values = m.ravel() if u is None else m[~u]
    if info.min < 0:
        values = values.astype(np.int32) - int(info.min)
    return np.bincount(values, minlength=int(info.max) - int(info.min) + 1)


def _gather_negatives(
    maps: Sequence[np.ndarray], unions: Sequence[np.ndarray | None], dtype: np.dtype, keys: Sequence[tuple | None] = (), pins=()
):
    """Negative scores as (ascending values, counts or None, count)."""
    if _uses_histogram(dtype):
        info = np.iinfo(dtype)
        hist = np.zeros(int(info.max) - int(info.min) + 1, dtype=np.int64)
        for i, (m, u) in enumerate(zip(maps, unions)):
            hist += _reused(keys[i] if keys else None, pins[i] if pins else (), _negative_histogram, m, u, info)
        present = np.flatnonzero(hist)
        return (present + int(info.min)).astype(dtype), hist[present], int(hist.sum())
    sizes = [m.size - (int(np.count_nonzero(u)) if u is not None else 0) for m, u in zip(maps, unions)]
    n_neg = int(sum(sizes))
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
        for k, (given, sat) in enumerate(chans):
            mask = np.asarray(given, dtype=bool)
            _check_pair(i, m, mask)
            union = mask.copy() if union is None else np.logical_or(union, mask, out=union)
            if counted is None or counted[i][k]:
                key = ("scores", id(m), id(given), dtype.str)
                pos_parts.append(_reused(key, (m, given), _sorted_scores, m, mask, dtype))
                sats.append(float(sat))
        unions.append(union)
    keys, pins = [], []
    if _shared is not None and _uses_histogram(dtype):  # what identifies each image's negatives
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
# sweeps: binned data in numpy/Python here, per-pixel data in the compiled kernels
# --------------------------------------------------------------------------------------------
# Histogram-form data (8/16-bit maps) has at most a few thousand distinct scores, so the sweeps
# below run in Python without numba's start-up (about a second). They do the compiled kernels'
# arithmetic in the same order (tested to the bit against them), so the numbers do not depend on
# which path ran.


@dataclass
class _BinnedSteps:
    """What a sweep over histogram-form data does at each distinct score, from the highest down.

    Step ``s`` adds ``negatives[s]`` false positives, then adds ``inverse[r]`` (1 / the channel's
    saturation area) ``times[r]`` times to the sPRO sum for each ``r`` in ``bounds[s]:bounds[s + 1]``:
    one entry per channel with pixels at that score that still count (at most its saturation area
    count), channels descending, as the compiled sweep meets the pixels.
    """

    negatives: list[int]
    bounds: list[int]
    inverse: list[float]
    times: list[int]


def _runs_in_sweep_order(px: PixelData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, channel, pixel count) of each run of equal scores within a channel, in the order the
    compiled sweep meets the pixels: scores descending, and channels descending within a score."""
    pos = px.pos_values
    ids = np.repeat(np.arange(px.n_channels), np.diff(px.pos_offsets))
    starts = np.flatnonzero(np.concatenate(([True], (pos[1:] != pos[:-1]) | (ids[1:] != ids[:-1])))) if len(pos) else ids
    lengths = np.diff(np.append(starts, len(pos)))
    order = np.lexsort((ids[starts], pos[starts]))[::-1]
    return pos[starts][order], ids[starts][order], lengths[order]


def _counted_pixels(channels: np.ndarray, lengths: np.ndarray, sat: np.ndarray) -> np.ndarray:
    """How many pixels of each run (in sweep order) add to their channel's sPRO: the compiled sweep
    counts a channel's pixels one by one and adds 1 / sat while the count is <= sat (0 or less: none)."""
    by_channel = np.argsort(channels, kind="stable")  # each channel's runs together, in sweep order
    sizes = lengths[by_channel]
    met = np.cumsum(sizes) - sizes  # pixels met before each run, all channels together
    first = np.flatnonzero(np.diff(channels[by_channel], prepend=-1))  # each channel's first run
    met -= np.repeat(met[first], np.diff(np.append(first, len(sizes))))  # ... of the run's own channel
    before = np.empty_like(lengths)
    before[by_channel] = met
    cap = np.where(sat > 0, np.floor(np.minimum(sat, 2.0**62)), 0).astype(np.int64)
    return np.maximum(np.minimum(before + lengths, cap) - before, 0)


def _binned_steps(px: PixelData) -> _BinnedSteps:
    """The steps of the sweep over histogram-form data (see :class:`_BinnedSteps`)."""
    values, channels, lengths = _runs_in_sweep_order(px)
    sat = px.sat[channels]
    times = _counted_pixels(channels, lengths, sat)
    kept = times > 0
    scores = np.union1d(px.neg_values, values)[::-1]  # every distinct score, descending
    step = len(scores) - 1 - np.searchsorted(scores[::-1], values[kept])  # non-decreasing: runs are in sweep order
    negatives = np.zeros(len(scores), dtype=np.int64)
    negatives[len(scores) - 1 - np.searchsorted(scores[::-1], px.neg_values)] = px.neg_counts
    bounds = np.searchsorted(step, np.arange(len(scores) + 1))
    return _BinnedSteps(negatives.tolist(), bounds.tolist(), (1.0 / sat[kept]).tolist(), times[kept].tolist())


def _add_repeated(total: float, comp: float, x: float, times: int) -> tuple[float, float]:
    """Add ``x > 0`` ``times`` times to the Neumaier-compensated sum (``total >= 0``, ``comp``), one
    by one, as the compiled sweep does. ``total`` never decreases, so once it is >= ``x`` the
    branch for ``|total| >= x`` is the one taken."""
    while times and total < x:
        t = total + x
        comp += (x - t) + total
        total = t
        times -= 1
    for _ in range(times):
        t = total + x
        comp += (total - t) + x
        total = t
    return total, comp


def _sweep_binned(px: PixelData, limits: np.ndarray, record: bool, grid: np.ndarray):
    """:func:`.spro_compiled.sweep` for histogram-form data: the same result, to the bit."""
    steps = _binned_steps(px)
    lims, grid_fprs = limits.tolist(), grid.tolist()
    n_ch, n_neg, n_lim, n_grid = px.n_channels, px.n_neg, len(lims), len(grid_fprs)
    areas, done = [0.0] * n_lim, [False] * n_lim
    total, comp = 0.0, 0.0  # sum of per-channel sPRO, compensated (Neumaier)
    for s in px.sat.tolist():
        if s <= 0:
            total += 1.0
    sample = not record and n_grid > 0
    px_, py = 0.0, total / n_ch
    xs, ys = [0.0], [py]
    fp, n_done, g, last_kept = 0, 0, 0, True
    for step, negatives in enumerate(steps.negatives):
        if n_done >= n_lim and not record and not sample:
            break
        fp += negatives
        for r in range(steps.bounds[step], steps.bounds[step + 1]):
            total, comp = _add_repeated(total, comp, steps.inverse[r], steps.times[r])
        x = fp / n_neg
        y = min((total + comp) / n_ch, 1.0)
        for k in range(n_lim):
            if done[k]:
                continue
            lim = lims[k]
            if x <= lim:
                areas[k] += 0.5 * (py + y) * (x - px_)
            else:
                if px_ < lim:
                    y_lim = py + (y - py) * (lim - px_) / (x - px_)
                    areas[k] += 0.5 * (y_lim + py) * (lim - px_)
                done[k] = True
                n_done += 1
        keep = record
        while sample and g < n_grid and x >= grid_fprs[g]:
            g += 1
            keep = True
        if keep:
            xs.append(x)
            ys.append(y)
        last_kept = keep
        px_, py = x, y
    if sample and not last_kept:
        xs.append(px_)
        ys.append(py)
    return np.array(areas, dtype=np.float64), np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)


def _rank_auc_binned(px: PixelData) -> float:
    """:func:`.spro_compiled.rank_auc` for histogram-form data: the same result, to the bit.

    Per distinct score ``v`` (descending) it adds ``n_neg(v) * (n_pos(> v) + n_pos(v) / 2)``; the
    additions are sequential (``np.cumsum``), as in the compiled loop.
    """
    pos_values, pos_counts = np.unique(px.pos_values, return_counts=True)
    values = np.union1d(px.neg_values, pos_values)
    nn = np.zeros(len(values), dtype=np.int64)
    npos = np.zeros(len(values), dtype=np.int64)
    nn[np.searchsorted(values, px.neg_values)] = px.neg_counts
    npos[np.searchsorted(values, pos_values)] = pos_counts
    nn, npos = nn[::-1], npos[::-1]  # descending, as the compiled loop
    tp_above = np.concatenate(([0], np.cumsum(npos)[:-1]))
    u = float(np.cumsum(nn * (tp_above + 0.5 * npos))[-1])
    return u / (float(len(px.pos_values)) * float(px.n_neg))


def _run_sweep(px: PixelData, limits: Sequence[float], record: bool, grid: np.ndarray | None = None):
    lim = np.asarray(limits, dtype=np.float64)
    grid = np.empty(0, dtype=np.float64) if grid is None else grid
    if px.neg_counts is not None:
        return _sweep_binned(px, lim, record, grid)
    from .spro_compiled import sweep

    pos, ids = _global_positive_order(px)
    return sweep(px.neg_values, px.counts_array(), px.n_neg, pos, ids, px.sat, lim, record, grid)


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


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, first column, end column (exclusive)) of every horizontal run of True, in raster order;
    rows count from the first row holding a True."""
    filled = np.flatnonzero(mask.any(axis=1))
    mask = mask[filled[0] : filled[-1] + 1] if len(filled) else mask[:0]
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    ends = np.nonzero(steps == -1)[1]
    return rows, starts, ends


def _touching_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs, a on the row above b, that touch 8-connectedly (columns within 1)."""
    line = width + 2  # run (row, column) -> row * line + column keeps raster order, rows apart
    above = (rows - 1) * line
    first = np.searchsorted(rows * line + ends, above + starts, side="left")  # runs above ending at/after b's start
    last = np.searchsorted(rows * line + starts, above + ends, side="right") - 1  # ... and starting at/before b's end
    counts = np.maximum(last - first + 1, 0)
    b = np.repeat(np.arange(len(rows)), counts)
    a = np.repeat(first, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return a, b


def _regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8-connected regions of a 2-D bool mask, numbered as ``scipy.ndimage.label`` numbers them
    (by their first pixel in raster order) from 0: the region of each True pixel, in raster order
    (as ``mask[mask]`` lists them), and the area of each region.

    Horizontal runs of True that touch are joined by a union-find over the runs (a few per row of a
    defect), in numpy and Python: importing scipy costs more than labelling a category's masks so.
    """
    rows, starts, ends = _row_runs(mask)
    parent = list(range(len(rows)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(*(side.tolist() for side in _touching_runs(rows, starts, ends, mask.shape[1]))):
        ra, rb = root(a), root(b)
        if ra != rb:  # the smaller run id stays the root: a region's root is its first run
            parent[max(ra, rb)] = min(ra, rb)
    region_of_run = np.unique([root(x) for x in range(len(rows))], return_inverse=True)[1].reshape(-1)
    lengths = ends - starts
    areas = np.bincount(region_of_run, weights=lengths, minlength=int(region_of_run.max(initial=-1)) + 1).astype(np.int64)
    return np.repeat(region_of_run, lengths), areas


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
        inside, areas = _regions(mask)
        order = np.argsort(inside, kind="stable")
        values = m[mask].astype(dtype, copy=False)[order]
        bounds = np.concatenate(([0], np.cumsum(areas)))
        parts.extend(np.sort(values[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))
        sats.append(areas.astype(np.float64))
        unions.append(mask)
    keys, pins = [], []
    if _shared is not None and _uses_histogram(dtype):  # the key prepare() gives a map with the one channel `mask`
        keys = [(id(m), dtype.str, () if u is None else (id(mask),)) for m, u, mask in zip(maps, unions, masks)]
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
    if px.n_neg == 0 or len(px.pos_values) == 0:
        return float("nan")
    if px.neg_counts is not None:
        return _rank_auc_binned(px)
    from .spro_compiled import rank_auc

    return float(rank_auc(px.neg_values, px.counts_array(), px.n_neg, np.sort(px.pos_values)))
