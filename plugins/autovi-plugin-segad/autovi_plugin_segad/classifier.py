"""The boosted random forest that turns SegAD's features into an image score.

xgboost builds, at each of ``n_estimators`` boosting rounds, a random forest of
``num_parallel_tree`` shallow trees on row and column subsamples; with ``binary:logitraw`` the
output is the raw margin, used directly as the anomaly score. The classes are balanced with
``scale_pos_weight = n_training_rows / n_defective_rows`` (the paper's code). The model is saved
in xgboost's own JSON format (no pickle).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

PAPER_SETTINGS: dict[str, Any] = {
    "n_estimators": 10,
    "num_parallel_tree": 200,
    "max_depth": 5,
    "learning_rate": 0.3,
    "objective": "binary:logitraw",
    "subsample": 0.6,
    "colsample_bytree": 0.6,
    "colsample_bynode": 0.6,
    "reg_alpha": 1.0,
}
"""The XGBClassifier settings of the SegAD paper's code (``scale_pos_weight`` is set in ``fit``)."""


class BoostedForest:
    """``xgboost.XGBClassifier`` configured as the paper's boosted random forest."""

    def __init__(self, seed: int = 0, n_jobs: int | None = None, **settings: Any) -> None:
        self.seed = int(seed)
        self.n_jobs = n_jobs
        self.settings = {**PAPER_SETTINGS, **settings}
        self.model: Any = None

    def make_model(self, scale_pos_weight: float = 1.0) -> Any:
        import xgboost

        return xgboost.XGBClassifier(**self.settings, scale_pos_weight=scale_pos_weight, random_state=self.seed, n_jobs=self.n_jobs)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> BoostedForest:
        labels = np.asarray(labels, dtype=np.int64)
        n_bad = int(labels.sum())
        if n_bad == 0 or n_bad == len(labels):
            raise ValueError("the forest needs both good (0) and defective (1) training rows")
        self.model = self.make_model(scale_pos_weight=len(labels) / n_bad)
        self.model.fit(np.asarray(features, dtype=np.float32), labels)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N,) float64 raw margins: ``predict_proba[:, 1]`` under ``binary:logitraw``."""
        if self.model is None:
            raise RuntimeError("the forest is not fitted")
        return self.model.predict_proba(np.asarray(features, dtype=np.float32))[:, 1].astype(np.float64)

    def save(self, path: str | os.PathLike[str]) -> None:
        self.model.save_model(os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str], seed: int = 0, n_jobs: int | None = None, **settings: Mapping[str, Any]) -> BoostedForest:
        forest = cls(seed, n_jobs, **settings)
        forest.model = forest.make_model()
        forest.model.load_model(os.fspath(path))
        return forest
