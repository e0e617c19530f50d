"""Orchestration of the metrics for one category: localisation (sPRO family) and classification.

Images are identified by ``"<defect_dir>/<stem>"`` keys (``"good/000"`` for good images).
Metric values that are undefined (e.g. AUROC with one class only) come out as ``nan``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..dataset import DefectConfig
from .classification import calibrated_rates, image_ap, image_auroc, tpr_at_tnr
from .spro import FPR_LIMITS, auc_spro, auc_spro_and_curve, aupro, pixel_auroc, shared_negative_histograms
from .spro_official import auc_spro_official, official_thresholds

MODES = ("exact", "official")
GOOD_DIR = "good"

GroundTruth = Mapping[str, Sequence[tuple[np.ndarray, DefectConfig]]]


def _subdir(key: str) -> str:
    return key.split("/", 1)[0]


def _align(maps: Mapping[str, np.ndarray], gt: GroundTruth) -> list[str]:
    """Keys to evaluate: every GT key needs a map; a map without GT must be a good image."""
    missing = [k for k in gt if k not in maps]
    if missing:
        raise ValueError(f"no anomaly map for {len(missing)} test image(s), e.g. {missing[:3]}")
    stray = [k for k in maps if k not in gt and _subdir(k) != GOOD_DIR]
    if stray:
        raise ValueError(f"anomaly maps without ground truth outside good/: {stray[:3]}")
    return list(gt) + [k for k in maps if k not in gt]


def _auc(mode: str, maps, channels, limits, seed, counted=None, thresholds=None) -> dict[str, float]:
    if mode == "official":
        return auc_spro_official(maps, channels, limits, seed=seed, counted=counted, thresholds=thresholds)
    return auc_spro(maps, channels, limits, counted=counted)


def evaluate_localisation(
    maps: Mapping[str, np.ndarray],
    gt: GroundTruth,
    mode: str = "exact",
    limits: Sequence[float] = FPR_LIMITS,
    seed: int | None = 0,
    curve_fprs: Sequence[float] | None = None,
) -> dict:
    """AUsPRO overall, per defect type and per subdir, plus pixel AUROC and AUPRO@0.3.

    ``maps`` must already be at ground-truth size; ``gt[key]`` lists ``(mask, DefectConfig)``
    channels (empty for good images). Per defect type: all good images plus the images having a
    channel of that type, FPR over all their channels, sPRO over that type's channels only. Per
    subdir: all good images plus that subdir's images. ``mode`` picks the exact curve or the
    official evaluator's refined-threshold curve (sPRO numbers only; pixel AUROC and AUPRO are
    always exact). In official mode the subsets are evaluated at the whole set's refined
    thresholds, as the evaluator does.

    With ``curve_fprs`` (an ascending FPR grid, e.g. ``spro.CURVE_FPRS``) the result also holds
    ``"spro_curve"``: the whole set's *exact* (FPR, mean sPRO) curve sampled at that grid (see
    :func:`~.spro.auc_spro_and_curve`) as ``{"fpr": [...], "spro": [...], "mode": "exact"}``, or
    ``None`` where the curve is undefined. In exact mode it comes from the sweep that computes
    ``auc_spro``; in official mode one extra exact sweep draws it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown sPRO mode {mode!r}; use one of {MODES}")
    with shared_negative_histograms():  # the subsets below share their good images' negatives
        return _evaluate_localisation(maps, gt, mode, limits, seed, curve_fprs)


def _evaluate_localisation(
    maps: Mapping[str, np.ndarray],
    gt: GroundTruth,
    mode: str,
    limits: Sequence[float],
    seed: int | None,
    curve_fprs: Sequence[float] | None,
) -> dict:
    keys = _align(maps, gt)
    arrays = [np.asarray(maps[k]) for k in keys]
    cfgs = [[cfg for _, cfg in gt.get(k, ())] for k in keys]
    channels = [[(m, cfg.saturation_area(int(np.count_nonzero(m)))) for m, cfg in gt.get(k, ())] for k in keys]
    good = [i for i, k in enumerate(keys) if _subdir(k) == GOOD_DIR]

    # The evaluator reduces its whole-set curve to subsets: same thresholds, fewer images/channels.
    thresholds = official_thresholds(arrays, channels, seed=seed) if mode == "official" else None

    def subset(idx: list[int], name: str | None = None) -> dict[str, float]:
        counted = None if name is None else [[c.defect_name == name for c in cfgs[i]] for i in idx]
        return _auc(mode, [arrays[i] for i in idx], [channels[i] for i in idx], limits, seed, counted, thresholds)

    names = sorted({c.defect_name for cs in cfgs for c in cs})
    defective = [i for i in range(len(keys)) if _subdir(keys[i]) != GOOD_DIR]
    per_type = {n: subset(good + [i for i in defective if any(c.defect_name == n for c in cfgs[i])], n) for n in names}
    dirs = sorted({_subdir(k) for k in keys} - {GOOD_DIR})
    per_dir = {d: subset(good + [i for i, k in enumerate(keys) if _subdir(k) == d]) for d in dirs}

    curve = None
    if curve_fprs is None:
        overall = _auc(mode, arrays, channels, limits, seed, thresholds=thresholds)
    elif mode == "exact":
        overall, curve = auc_spro_and_curve(arrays, channels, limits, curve_fprs)
    else:
        overall = _auc(mode, arrays, channels, limits, seed, thresholds=thresholds)
        curve = auc_spro_and_curve(arrays, channels, limits, curve_fprs)[1]
    unions = [_union(ch, a.shape) for ch, a in zip(channels, arrays)]
    out = {
        "mode": mode,
        "auc_spro": overall,
        "per_defect_type": per_type,
        "per_subdir": per_dir,
        "pixel_auroc": pixel_auroc(arrays, unions),
        "aupro_0.3": aupro(arrays, unions, 0.3),
    }
    if curve_fprs is not None:
        out["spro_curve"] = None if curve is None else {"fpr": curve[0].tolist(), "spro": curve[1].tolist(), "mode": "exact"}
    return out


def _union(channels: Sequence[tuple[np.ndarray, int]], shape: tuple[int, ...]) -> np.ndarray | None:
    """The union of an image's channel masks (``None`` without channels). A single bool channel is
    returned as is, so pixel AUROC and AUPRO find the negatives' histogram the sPRO subsets shared
    (:func:`~.spro.shared_negative_histograms` knows arrays by identity)."""
    if not channels:
        return None
    only = channels[0][0]
    if len(channels) == 1 and isinstance(only, np.ndarray) and only.dtype == bool and only.shape == tuple(shape):
        return only
    out = np.zeros(shape, dtype=bool)
    for mask, _ in channels:
        out |= mask
    return out


def image_scores(maps: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Image score of each map: its maximum (after any resizing)."""
    return {k: float(np.max(m)) for k, m in maps.items()}


def evaluate_classification(
    scores: Mapping[str, float],
    labels: Mapping[str, int],
    calibration_scores: Sequence[float] | None = None,
) -> dict:
    """Image AUROC, AP and TPR at TNR levels (pooled good vs all defective images).

    With ``calibration_scores`` (held-out good training images) also the error rates at
    thresholds set on them (``"calibrated"``).
    """
    missing = [k for k in scores if k not in labels]
    if missing:
        raise ValueError(f"no label for image(s) {missing[:3]}")
    s = [float(scores[k]) for k in scores]
    y = [int(labels[k]) for k in scores]
    out = {
        "n_good": y.count(0),
        "n_defective": y.count(1),
        "image_auroc": image_auroc(s, y),
        "image_ap": image_ap(s, y),
        "tpr_at_tnr": tpr_at_tnr(s, y),
    }
    if calibration_scores is not None:
        out["calibrated"] = calibrated_rates(calibration_scores, s, y)
    return out
