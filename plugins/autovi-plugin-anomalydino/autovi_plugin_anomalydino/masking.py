"""Zero-shot masking of the object (AnomalyDINO, after the DINOv2 paper's foreground PCA).

The patch features of one image are projected on their first principal component; thresholding the
projection splits the patches into two groups, one of which is the object. Which one is decided by
where the object is expected, centred in the frame: the group whose share of the central region
(the middle half of the grid along each axis) exceeds its share of the outermost ring of patches by
more. The chosen group is dilated and closed on the patch grid to cover the
object's rim and fill small holes.

The sign of a principal component is arbitrary, and on images without a clear foreground (textures,
an object filling the frame) the split means nothing. A mask covering almost nothing
(< :data:`MIN_COVERAGE`) or almost everything (> :data:`MAX_COVERAGE`) of the image is therefore
not trusted: the image is then scored (or added to the bank) without a mask, and the caller counts it.

Numpy and scipy only; the features arrive as an (h, w, D) array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_COVERAGE = 0.05
"""A mask covering less than this share of the image's patches is not trusted."""
MAX_COVERAGE = 0.95
"""A mask covering more than this share of the image's patches is not trusted."""


@dataclass(frozen=True)
class ForegroundMask:
    """The patches of one image that are scored (or kept in the bank)."""

    mask: np.ndarray
    """(h, w) bool: True where a patch belongs to the object (every usable patch on a fallback)."""
    coverage: float
    """Share of the usable patches the PCA mask covered (before any fallback); nan when none was made."""
    fallback: bool
    """True when the PCA mask was not trusted and the image is used without a mask."""


def first_component(features: np.ndarray) -> np.ndarray:
    """(P,) projections of the (P, D) ``features`` on their first principal component (centred, float64).

    The component is the covariance matrix's leading eigenvector; all zeros when the features do not vary.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    covariance = x.T @ x
    values, vectors = np.linalg.eigh(covariance)
    if values[-1] <= 1e-12 * max(1.0, float(np.abs(covariance).max())):
        return np.zeros(x.shape[0])
    return x @ vectors[:, -1]


def otsu_threshold(values: np.ndarray) -> float:
    """The split of ``values`` into a low and a high group with the largest between-group variance
    (Otsu's criterion on the exact values, no histogram): the midpoint between the two groups."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = v.size
    if n < 2 or v[0] == v[-1]:
        return float(v[0]) if n else 0.0
    cumulative = np.cumsum(v)[:-1]  # sum of the k lowest, k = 1 .. n-1
    k = np.arange(1, n)
    low_mean = cumulative / k
    high_mean = (v.sum() - cumulative) / (n - k)
    between = k * (n - k) * (low_mean - high_mean) ** 2
    between[v[:-1] == v[1:]] = -1.0  # a split between equal values is no split
    best = int(np.argmax(between))
    return float((v[best] + v[best + 1]) / 2.0)


def _close(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Morphological closing that leaves the frame's border alone (erosion treats outside as object)."""
    from scipy import ndimage

    if iterations <= 0:
        return mask
    square = np.ones((3, 3), dtype=bool)
    grown = ndimage.binary_dilation(mask, structure=square, iterations=iterations)
    return ndimage.binary_erosion(grown, structure=square, iterations=iterations, border_value=1)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    if iterations <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool), iterations=iterations)


def _centre(shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the middle half of the grid along each axis (the whole grid when it is tiny)."""
    h, w = shape
    centre = np.zeros(shape, dtype=bool)
    centre[h // 4 : h - h // 4, w // 4 : w - w // 4] = True
    return centre


def _ring(shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the outermost row and column of patches on each side."""
    ring = np.ones(shape, dtype=bool)
    ring[1:-1, 1:-1] = False
    return ring


def _centrality(group: np.ndarray, centre: np.ndarray, ring: np.ndarray) -> float:
    """How much more of the centre than of the border ``group`` covers (each a share of that region)."""
    inside = float(group[centre].mean()) if centre.any() else 0.0
    border = float(group[ring].mean()) if ring.any() else 0.0
    return inside - border


def foreground_mask(
    features: np.ndarray,
    *,
    threshold: float | None = None,
    dilation: int = 1,
    usable: np.ndarray | None = None,
) -> ForegroundMask:
    """The object's patches in one image's (h, w, D) patch ``features``.

    ``threshold``: a fixed value of the first-component projection (the official code's approach; its
    scale depends on the backbone), applied to both signs; ``None``: Otsu's threshold on the projections.
    ``dilation``: iterations (in patches) of the dilation and then of the closing. ``usable`` (h, w):
    the patches that exist at all (a rotated reference's corners do not); the PCA, the centre test and
    the coverage consider only those, and the mask is always inside them.
    """
    h, w, _ = features.shape
    usable = np.ones((h, w), dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    n_usable = int(usable.sum())
    if n_usable < 2:
        return ForegroundMask(usable.copy(), float("nan"), True)
    projection = first_component(features[usable])
    if not np.any(projection):
        return ForegroundMask(usable.copy(), float("nan"), True)
    if threshold is None:
        cut = otsu_threshold(projection)
        candidates = (projection > cut, projection <= cut)
    else:
        candidates = (projection > threshold, -projection > threshold)
    centre, ring = _centre((h, w)) & usable, _ring((h, w)) & usable
    grids = []
    for chosen in candidates:
        grid = np.zeros((h, w), dtype=bool)
        grid[usable] = chosen
        grids.append(grid)
    rank = [(_centrality(g, centre, ring), -int(g.sum())) for g in grids]
    pick = 0 if rank[0] >= rank[1] else 1  # the more central group is the object; on a tie, the smaller one
    mask = _close(_dilate(grids[pick], dilation), dilation) & usable
    coverage = float(mask.sum()) / n_usable
    if not MIN_COVERAGE <= coverage <= MAX_COVERAGE:
        return ForegroundMask(usable.copy(), coverage, True)
    return ForegroundMask(mask, coverage, False)
