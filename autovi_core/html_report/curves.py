"""ROC and precision-recall points of image scores (an image is flagged when ``score >= threshold``).

The points are those of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` and
``sklearn.metrics.precision_recall_curve`` (tests/test_html_report.py checks both), computed with
NumPy alone so that the report does not need scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _counts(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, thresholds) at each distinct score, descending."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # the last index of each run of equal scores: every image up to it is flagged
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, dtype=np.int64)
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return fps, tps, s[last]


def roc_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds): the point (0, 0) at threshold ``inf``, then one per distinct score, descending.

    With no good (or no defective) image the FPR (TPR) is ``nan``, as in scikit-learn.
    """
    fps, tps, thresholds = _counts(scores, labels)
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) with thresholds ascending and a final point (1, 0), as scikit-learn."""
    fps, tps, thresholds = _counts(scores, labels)
    flagged = tps + fps
    precision = np.divide(tps, flagged, out=np.zeros_like(tps), where=flagged != 0)
    recall = tps / tps[-1] if len(tps) and tps[-1] > 0 else np.ones_like(tps)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def trapezoid_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the piecewise-linear curve through (x, y) (x monotonic); ``nan`` when undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    return float(abs(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0)))


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Step-wise average precision of a :func:`precision_recall_curve` (scikit-learn's definition)."""
    return float(-np.sum(np.diff(recall) * precision[:-1]))


@dataclass(frozen=True)
class ScoreCurves:
    """The ROC and precision-recall curves of one method on one category, ready to draw."""

    method: str
    seed: object
    supervised: bool
    fpr: np.ndarray
    tpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    auroc: float
    ap: float
    prevalence: float


def score_curves(method: str, seed: object, supervised: bool, scores: np.ndarray, labels: np.ndarray) -> ScoreCurves | None:
    """Both curves from image scores; None unless there are good and defective images."""
    labels = np.asarray(labels)
    if len(labels) == 0 or labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(scores, labels)
    precision, recall, _ = precision_recall_curve(scores, labels)
    return ScoreCurves(
        method=method,
        seed=seed,
        supervised=supervised,
        fpr=fpr,
        tpr=tpr,
        precision=precision,
        recall=recall,
        auroc=trapezoid_area(fpr, tpr),
        ap=average_precision(precision, recall),
        prevalence=float(labels.mean()),
    )
