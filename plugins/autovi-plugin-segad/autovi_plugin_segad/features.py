"""SegAD's image features: statistics of each base detector's anomaly map inside each object part.

For every base detector and every part ``j`` (pixels whose part label is ``j``) four numbers are
taken from the anomaly values of that part, in this order: the 0.995 quantile (``np.quantile``),
the mean, the skewness and the kurtosis (``scipy.stats``, Fisher definition, biased estimators, as
in the paper's code). A part absent from the image gives four zeros. After all per-part features
come one global feature per detector: the maximum of its whole map.

A part whose values are all equal has no defined skewness/kurtosis (scipy returns NaN); those two
are set to 0, like an empty part.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

PART_STATISTICS: tuple[str, ...] = ("q995", "mean", "skew", "kurtosis")
QUANTILE = 0.995


def part_statistics(values: np.ndarray) -> np.ndarray:
    """(4,) float64: 0.995 quantile, mean, skewness, kurtosis of ``values``; zeros if empty."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(len(PART_STATISTICS))
    if np.ptp(values) == 0:  # constant part: moments of order 3 and 4 are undefined
        return np.array([values[0], values[0], 0.0, 0.0])
    return np.array(
        [
            np.quantile(values, QUANTILE),
            values.mean(),
            stats.skew(values),
            stats.kurtosis(values, fisher=True, bias=True),
        ]
    )


def image_features(maps: Sequence[np.ndarray], parts: np.ndarray, n_parts: int) -> np.ndarray:
    """Feature vector of one image from its maps (one (H, W) map per detector) and part labels (H, W)."""
    parts = np.asarray(parts)
    per_part = []
    for amap in maps:
        if amap.shape != parts.shape:
            raise ValueError(f"anomaly map {amap.shape} and part map {parts.shape} are not pixel-aligned")
        for part in range(n_parts):
            per_part.append(part_statistics(amap[parts == part]))
    maxima = [float(np.max(amap)) for amap in maps]
    return np.concatenate([*per_part, np.asarray(maxima, dtype=np.float64)])


def feature_matrix(maps: Sequence[np.ndarray], parts: np.ndarray, n_parts: int) -> np.ndarray:
    """(N, 4 * n_parts * D + D) features of N images from D stacks of (N, H, W) maps and (N, H, W) parts."""
    n = len(parts)
    return np.stack([image_features([m[i] for m in maps], parts[i], n_parts) for i in range(n)]).reshape(n, -1)


def feature_names(detectors: Sequence[str], n_parts: int) -> list[str]:
    """Column names matching :func:`feature_matrix`, e.g. ``patchcore/part2/q995`` and ``patchcore/max``."""
    names = [f"{d}/part{j}/{s}" for d in detectors for j in range(n_parts) for s in PART_STATISTICS]
    return names + [f"{d}/max" for d in detectors]
