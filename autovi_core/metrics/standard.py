"""The metrics the core registers: image-level classification and pixel-level localisation."""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..metric import EvaluationData, Metric

# The computations are imported inside compute(): registering the metrics (``autovi list``) must not
# pay for them (and the sPRO code imports numba when it meets float maps).


class ImageClassification(Metric):
    """Image AUROC and AP (pooled, ties as sklearn), TPR at TNR 0.99/0.95/0.9 from the test ROC,
    and the FPR/FNR realised at thresholds calibrated on held-out good training images."""

    name = "image_classification"
    level = "image"
    description = "image AUROC, AP, TPR@TNR, calibrated FPR/FNR"

    def compute(self, data: EvaluationData) -> dict[str, Any]:
        from .classification import calibrated_rates, image_ap, image_auroc, tpr_at_tnr

        values: dict[str, Any] = {
            "image_auroc": image_auroc(data.scores, data.labels),
            "image_ap": image_ap(data.scores, data.labels),
            "tpr_at_tnr": tpr_at_tnr(data.scores, data.labels),
        }
        if data.calibration_scores is not None and len(data.calibration_scores):
            values["calibrated"] = calibrated_rates(data.calibration_scores, data.scores, data.labels)
        return values


class Localisation(Metric):
    """AUsPRO at FPR 0.01/0.05/0.1/0.3/1.0 (exact or official curve), per defect type and per
    defect folder, pixel AUROC and MVTec AD's AUPRO (connected components, FPR limit 0.3)."""

    name = "localisation"
    level = "pixel"
    description = "AUsPRO (exact/official), per defect type, pixel AUROC, AUPRO@0.3"

    def compute(self, data: EvaluationData) -> dict[str, Any]:
        from .evaluate import evaluate_localisation
        from .spro import CURVE_FPRS

        if data.maps is None or data.channels is None:
            raise DataError(f"metric {self.name!r} needs ground-truth masks and anomaly maps; this data has none")
        maps = dict(zip(data.keys, data.maps))
        gt = dict(zip(data.keys, data.channels))
        curve_fprs = CURVE_FPRS if data.spro_curve else None  # the runner takes the curve out of the metrics
        return evaluate_localisation(maps, gt, mode=data.spro_mode, seed=data.seed, curve_fprs=curve_fprs)


STANDARD_METRICS: tuple[type[Metric], ...] = (ImageClassification, Localisation)
