"""The metric interface: a metric turns predictions and ground truth into named values.

Metrics are plugins too (``autovi_register_metrics``); the runner and ``autovi evaluate`` compute
every registered metric and merge the returned dicts into the result's ``metrics`` object.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .dataset import DefectConfig

Channels = list[tuple[np.ndarray, DefectConfig]]


@dataclass
class EvaluationData:
    """Everything a metric may need about one (detector, category, seed) evaluation.

    ``keys[i]`` is ``"<defect_dir>/<stem>"``; ``maps[i]`` is at the ground truth's size;
    ``channels[i]`` lists image i's ground-truth channels (empty for good images). ``maps`` and
    ``channels`` are None when the dataset has no masks. ``calibration_scores`` are image scores of
    held-out good training images (None when none were held out). ``spro_curve`` asks the
    localisation metric for the sampled exact sPRO curve too (key ``"spro_curve"``, which the
    runner moves from the metrics into the per-experiment file).
    """

    keys: list[str]
    labels: np.ndarray
    scores: np.ndarray
    maps: list[np.ndarray] | None = None
    channels: list[Channels] | None = None
    calibration_scores: np.ndarray | None = None
    spro_mode: str = "exact"
    seed: int = 0
    spro_curve: bool = False

    @property
    def has_masks(self) -> bool:
        return self.maps is not None and self.channels is not None


class Metric(ABC):
    """A named metric. ``level`` is ``image`` or ``pixel``: pixel metrics need masks, are not called
    on data without them and raise :class:`~autovi_core.errors.DataError` if they are."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = "image"
    description: ClassVar[str] = ""

    @abstractmethod
    def compute(self, data: EvaluationData) -> dict[str, Any]:
        """Return the values to merge into the result's ``metrics`` (JSON-serialisable)."""
