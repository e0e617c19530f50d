"""Normalisation of one member's values on held-out goods, the fusion rules and the fusion weights.

Pure numpy (no torch), so that the unit tests check them against closed forms.

Normalisations (fitted on the values a member gives the held-out good images: every pixel of
their maps for the maps, their image scores for the scores):

- ``mad``: robust z-score ``(x - median) / (1.4826 * MAD)``; 1.4826 = 1 / Phi^-1(3/4) makes the
  scale the standard deviation for Gaussian values;
- ``iqr``: robust z-score ``(x - median) / (IQR / 1.349)``; 1.349 = 2 Phi^-1(3/4), same reason;
- ``quantile``: the empirical distribution function of the goods, through ``knots`` quantiles at
  levels ``0, 1/(K-1), ..., 1`` and linear between them, so the goods' quantiles go to a uniform
  [0, 1]; beyond the goods' minimum and maximum it continues linearly with slope
  ``1 / (max - min)`` (the mean slope inside), so that values no good reached keep their order
  instead of all becoming 1.

A zero scale (more than half the values equal for MAD, a quarter for the IQR) falls back to the
standard deviation, then to 1: the member's values are then only shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMALISATIONS = ("mad", "iqr", "quantile")
FUSIONS = ("mean", "max", "weighted")

MAD_TO_SD = 1.482602218505602
"""1 / Phi^-1(3/4): 1.4826 x MAD estimates the standard deviation of Gaussian values."""
IQR_TO_SD = 1.3489795003921634
"""2 Phi^-1(3/4): IQR / 1.349 estimates the standard deviation of Gaussian values."""


def robust_location_scale(values: np.ndarray, kind: str) -> tuple[float, float]:
    """``(median, scale)`` of ``values`` for the robust z-score ``kind`` (``mad`` or ``iqr``); a zero
    scale falls back to the standard deviation, then to 1."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot fit a normalisation on no values")
    center = float(np.median(values))
    if kind == "mad":
        scale = MAD_TO_SD * float(np.median(np.abs(values - center)))
    elif kind == "iqr":
        q25, q75 = np.quantile(values, [0.25, 0.75])
        scale = float(q75 - q25) / IQR_TO_SD
    else:
        raise ValueError(f"not a robust z-score: {kind!r}; valid: 'mad', 'iqr'")
    if not scale > 0:
        scale = float(np.std(values))
    if not scale > 0:
        scale = 1.0
    return center, scale


def quantile_knots(values: np.ndarray, knots: int) -> np.ndarray:
    """The ``knots`` quantiles of ``values`` at levels ``linspace(0, 1, knots)`` (numpy's linear rule)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot fit a normalisation on no values")
    if knots < 2:
        raise ValueError(f"quantile mapping needs at least 2 knots, got {knots}")
    return np.quantile(values, np.linspace(0.0, 1.0, knots))


def quantile_map(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``x`` through the distribution function the ``knots`` describe (see the module docstring).

    Equal knots (a value many goods share) are merged into one knot at their mean level, which
    keeps the map a non-decreasing function; it is strictly increasing outside such values."""
    knots = np.maximum.accumulate(np.asarray(knots, dtype=np.float64))  # guards against rounding
    levels = np.linspace(0.0, 1.0, knots.size)
    xs, first, counts = np.unique(knots, return_index=True, return_counts=True)
    merged = np.array([levels[i : i + c].mean() for i, c in zip(first, counts)])
    low, high = xs[0], xs[-1]
    width = high - low if high > low else 1.0
    x = np.asarray(x, dtype=np.float64)
    return np.interp(x, xs, merged) + (np.minimum(x - low, 0.0) + np.maximum(x - high, 0.0)) / width


@dataclass(frozen=True)
class Normaliser:
    """A fitted normalisation: ``kind`` and its parameters (``[median, scale]`` for ``mad`` and
    ``iqr``, the quantile knots for ``quantile``), which are also what is saved."""

    kind: str
    params: np.ndarray

    @classmethod
    def fit(cls, kind: str, values: np.ndarray, knots: int = 1001) -> Normaliser:
        """Fit on ``values`` (the held-out goods' pixels or scores)."""
        if kind == "quantile":
            return cls(kind, quantile_knots(values, knots))
        if kind in ("mad", "iqr"):
            return cls(kind, np.array(robust_location_scale(values, kind)))
        raise ValueError(f"unknown normalisation {kind!r}; valid: {', '.join(NORMALISATIONS)}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` normalised, in float64 (callers cast maps to float32)."""
        if self.kind == "quantile":
            return quantile_map(x, self.params)
        center, scale = self.params
        return (np.asarray(x, dtype=np.float64) - center) / scale


def leave_one_out_spread(scores: np.ndarray, kind: str, knots: int = 1001) -> float:
    """Standard deviation (ddof=1) of the good scores, each normalised by a normalisation fitted on
    the *other* goods. In-sample the spread says nothing (a robust z-score gives every member a
    spread near 1, a quantile mapping exactly that of a uniform); out of sample it grows with how
    far a member's goods stray from each other, in the member's own normalised units."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size < 2:
        raise ValueError(f"the spread needs at least 2 held-out scores, got {scores.size}")
    out = [float(Normaliser.fit(kind, np.delete(scores, i), knots)(scores[i : i + 1])[0]) for i in range(scores.size)]
    return float(np.std(out, ddof=1))


def inverse_spread_weights(spreads: Sequence[float]) -> np.ndarray:
    """Weights proportional to ``1 / spread``, summing to 1. A zero spread counts as the smallest
    non-zero one (so no member takes all the weight for being constant on the goods); all zero:
    equal weights."""
    spreads = np.asarray(spreads, dtype=np.float64)
    positive = spreads[spreads > 0]
    if positive.size == 0:
        return np.full(spreads.size, 1.0 / spreads.size)
    inverse = 1.0 / np.where(spreads > 0, spreads, positive.min())
    return inverse / inverse.sum()


class Fusion:
    """Fuses members' normalised arrays one member at a time (one member's maps in memory at once):
    ``mean`` the average, ``max`` the elementwise maximum, ``weighted`` the sum of ``weights[j]``
    times member j's array (``weights`` sum to 1)."""

    def __init__(self, rule: str, weights: Sequence[float]) -> None:
        if rule not in FUSIONS:
            raise ValueError(f"unknown fusion {rule!r}; valid: {', '.join(FUSIONS)}")
        self.rule = rule
        self.weights = np.asarray(weights, dtype=np.float64)
        self.count = 0
        self.total: np.ndarray | None = None

    def add(self, values: np.ndarray, member: int) -> None:
        """Fold in member ``member``'s normalised ``values`` (every member once, same shape)."""
        values = np.asarray(values)
        if self.rule == "max":
            self.total = values.copy() if self.total is None else np.maximum(self.total, values)
        else:
            weight = 1.0 / self.weights.size if self.rule == "mean" else float(self.weights[member])
            term = values * values.dtype.type(weight)
            self.total = term if self.total is None else self.total + term
        self.count += 1

    def result(self) -> np.ndarray:
        if self.total is None or self.count != self.weights.size:
            raise ValueError(f"fusion of {self.weights.size} members received {self.count}")
        return self.total


def fuse(arrays: Sequence[np.ndarray], rule: str, weights: Sequence[float] | None = None) -> np.ndarray:
    """All members' normalised arrays fused at once (what :class:`Fusion` computes member by member)."""
    weights = np.full(len(arrays), 1.0 / len(arrays)) if weights is None else weights
    fusion = Fusion(rule, weights)
    for j, values in enumerate(arrays):
        fusion.add(values, j)
    return fusion.result()
