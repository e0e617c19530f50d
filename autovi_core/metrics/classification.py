"""Image-level detection metrics on 1-D scores and 0/1 labels (1 = defective).

Every function returns ``nan`` (never raises) when a needed class is missing, e.g. AUROC without
good or without defective images; callers write ``nan`` as JSON ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TNR_LEVELS = (0.99, 0.95, 0.9)


def _as_arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (good) or 1 (defective)")
    if np.isnan(s).any():
        raise ValueError("scores hold NaN values")
    return s, y.astype(bool)


def roc_points(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, threshold) of every operating point, ``score >= threshold`` flagged.

    The first point is (0, 0) at threshold ``inf``; then one point per distinct score, descending.
    """
    s, y = _as_arrays(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    ends = np.flatnonzero(np.diff(s)) if len(s) else np.empty(0, dtype=int)
    ends = np.append(ends, len(s) - 1) if len(s) else ends
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = np.concatenate(([0.0], fps / n_neg))
        tpr = np.concatenate(([0.0], tps / n_pos))
    return fpr, tpr, np.concatenate(([np.inf], s[ends]))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks (``scipy.stats.rankdata``'s
    ``average`` method, to the bit: a tie group at sorted positions a..b-1 gets (a + b + 1) / 2)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1]))) if len(values) else np.empty(0, dtype=np.intp)
    ends = np.append(starts[1:], len(values))
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(0.5 * (starts + ends + 1), ends - starts)
    return ranks


def image_auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC of defective vs good images, ties counted half (as sklearn's roc_auc_score)."""
    s, y = _as_arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(s)  # ties count half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def image_ap(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Step-wise average precision, sum over thresholds of (recall gain) x precision (sklearn's)."""
    fpr, tpr, _ = roc_points(scores, labels)
    _, y = _as_arrays(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    n_neg = len(y) - n_pos
    tps = tpr[1:] * n_pos
    fps = np.nan_to_num(fpr[1:]) * n_neg
    precision = tps / np.maximum(tps + fps, 1)
    recall_gain = np.diff(np.concatenate(([0.0], tps / n_pos)))
    return float(np.sum(recall_gain * precision))


def tpr_at_tnr(scores: Sequence[float], labels: Sequence[int], levels: Sequence[float] = TNR_LEVELS) -> dict[str, float]:
    """Largest TPR among the test ROC's operating points with FPR <= 1 - level, per level.

    A 1e-12 slack absorbs the rounding of ``1 - level``.
    """
    fpr, tpr, _ = roc_points(scores, labels)
    _, y = _as_arrays(scores, labels)
    if y.all() or not y.any():
        return {str(float(lv)): float("nan") for lv in levels}
    return {str(float(lv)): float(tpr[fpr <= 1.0 - lv + 1e-12].max()) for lv in levels}


def calibrated_thresholds(calibration_good_scores: Sequence[float], levels: Sequence[float] = TNR_LEVELS) -> dict[str, float]:
    """Threshold per level, keyed ``str(level)``: ``np.quantile(calibration, level, method="higher")``
    (scores strictly above it are flagged). Needs at least one calibration score."""
    cal = np.asarray(calibration_good_scores, dtype=np.float64).ravel()
    if len(cal) == 0:
        raise ValueError("calibrated thresholds need at least one calibration score")
    return {str(float(lv)): float(np.quantile(cal, lv, method="higher")) for lv in levels}


def calibrated_rates(
    calibration_good_scores: Sequence[float],
    scores: Sequence[float],
    labels: Sequence[int],
    levels: Sequence[float] = TNR_LEVELS,
) -> dict[str, dict[str, float]]:
    """Error rates at thresholds set on held-out good (training) scores.

    For each level q the threshold is ``np.quantile(calibration, q, method="higher")`` and an image
    is flagged when its score is strictly greater. Returns per level ``{"threshold", "fpr"`` (share
    of test good images flagged), ``"fnr"`` (share of test defective images not flagged)``}``.
    """
    if len(np.asarray(calibration_good_scores).ravel()) == 0:
        raise ValueError("calibrated_rates needs at least one calibration score")
    thresholds = calibrated_thresholds(calibration_good_scores, levels)
    s, y = _as_arrays(scores, labels)
    out: dict[str, dict[str, float]] = {}
    for lv in levels:
        threshold = thresholds[str(float(lv))]
        flagged = s > threshold
        fpr = float(flagged[~y].mean()) if (~y).any() else float("nan")
        fnr = float((~flagged[y]).mean()) if y.any() else float("nan")
        out[str(float(lv))] = {"threshold": threshold, "fpr": fpr, "fnr": fnr}
    return out
