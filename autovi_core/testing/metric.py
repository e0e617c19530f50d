"""Conformance suite for metric plugins (:class:`MetricConformance`).

Subclass it in your plugin's tests and name the metric and the keys it returns::

    from autovi_core.testing import MetricConformance

    class TestMyMetric(MetricConformance):
        metric = "my_metric"              # the registered name
        keys = ("my_auroc",)              # keys compute() always returns
        auroc_keys = ("my_auroc",)        # keys holding an AUROC (1 when perfect, 0.5 when constant)

It checks what :class:`~autovi_core.metric.Metric` promises, on small generated
:class:`~autovi_core.metric.EvaluationData` (:func:`make_evaluation_data`): the metric is
registered under its name and declares its ``level``; ``compute`` returns a JSON-serialisable dict
holding ``keys``; AUROC-like values are 1 for perfect predictions, 0 for inverted ones and 0.5 for
constant ones; the values do not change when scores and maps go through a strictly increasing
transform (set ``rank_based = False`` for metrics of the raw values; ``score_valued_keys`` names the
leaves that hold a score, such as thresholds, and must follow the transform); computing twice
gives the same values; without masks an image-level metric gives the same values and a
pixel-level one refuses with an :class:`~autovi_core.errors.AutoviError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from ..dataset import DefectConfig
from ..errors import AutoviError
from ..metric import EvaluationData, Metric

DEFECTS = (DefectConfig("scratch", 255, 1.0, True), DefectConfig("spot", 254, 25, False))
QUALITIES = ("perfect", "noisy", "inverted", "constant")


def make_evaluation_data(quality: str = "noisy", *, seed: int = 0, size: int = 24, masks: bool = True) -> EvaluationData:
    """Evaluation data of 6 good and 6 defective images (folders ``scratch``, ``spot`` and
    ``multiple``, the latter with both defect types as two channels), with calibration scores.

    Map values are multiples of 1/64, so strictly increasing transforms keep them distinct in
    float32. ``quality``: ``perfect`` (every defect pixel above every normal one, and image scores
    likewise), ``noisy`` (overlapping), ``inverted`` (perfect, negated) or ``constant``.
    """
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    rng = np.random.default_rng(seed)
    folders = ["good"] * 6 + ["scratch", "scratch", "spot", "spot", "multiple", "multiple"]
    keys, maps, channels = [], [], []
    for i, folder in enumerate(folders):
        keys.append(f"{folder}/{i:03d}")
        units = rng.integers(0, 32, (size, size))  # normal pixels: [0, 0.5)
        pairs = []
        for config in DEFECTS:
            if folder not in (config.defect_name, "multiple"):
                continue
            mask = np.zeros((size, size), bool)
            r, c = rng.integers(0, size - 8, 2)
            mask[r : r + 4 + i % 3, c : c + 5] = True
            pairs.append((mask, config))
        defect = np.any([m for m, _ in pairs], axis=0) if pairs else np.zeros((size, size), bool)
        if quality in ("perfect", "inverted"):
            units = np.where(defect, 64 + rng.integers(0, 32, (size, size)), units)  # defects: [1, 1.5)
        elif quality == "noisy":
            units = units + defect * rng.integers(0, 48, (size, size))
        amap = (units / 64.0).astype(np.float32)
        if quality == "constant":
            amap = np.full((size, size), 0.25, np.float32)
        maps.append(amap)
        channels.append(pairs)
    labels = np.array([0 if f == "good" else 1 for f in folders])
    scores = np.array([float(m.max()) for m in maps])
    if quality == "inverted":
        maps, scores = [-m for m in maps], -scores
    calibration = np.arange(5) / 64.0 + (0.0 if quality != "constant" else 0.25)
    return EvaluationData(
        keys=keys,
        labels=labels,
        scores=scores,
        maps=maps if masks else None,
        channels=channels if masks else None,
        calibration_scores=-calibration if quality == "inverted" else calibration,
        seed=seed,
    )


def transformed(data: EvaluationData, f: Callable[[np.ndarray], np.ndarray]) -> EvaluationData:
    """``data`` with ``f`` applied to its scores, maps and calibration scores."""
    return EvaluationData(
        keys=list(data.keys),
        labels=data.labels.copy(),
        scores=f(np.asarray(data.scores, np.float64)),
        maps=None if data.maps is None else [f(np.asarray(m, np.float64)).astype(np.float32) for m in data.maps],
        channels=data.channels,
        calibration_scores=None if data.calibration_scores is None else f(np.asarray(data.calibration_scores, np.float64)),
        spro_mode=data.spro_mode,
        seed=data.seed,
    )


def leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    """The scalar leaves of nested dicts and lists, by dotted path."""
    if isinstance(values, Mapping):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    if isinstance(values, (list, tuple)):
        out = {}
        for i, value in enumerate(values):
            out.update(leaves(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: values}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_same_values(
    got: Mapping[str, Any], expected: Mapping[str, Any], what: str, skip: Callable[[str], bool] = lambda p: False
) -> None:
    got_leaves, expected_leaves = leaves(got), leaves(expected)
    assert set(got_leaves) == set(expected_leaves), f"{what}: different keys {sorted(set(got_leaves) ^ set(expected_leaves))}"
    differ = [p for p in expected_leaves if not skip(p) and not _same(got_leaves[p], expected_leaves[p])]
    assert not differ, f"{what}: values differ at {[(p, expected_leaves[p], got_leaves[p]) for p in differ[:5]]}"


class MetricConformance:
    """Mix-in test class: set ``metric`` (registered name) and the class attributes below."""

    metric: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()
    """Top-level keys ``compute`` always returns (on data with masks and calibration scores)."""
    auroc_keys: ClassVar[tuple[str, ...]] = ()
    """Dotted paths of values that are AUROCs: 1 for perfect, 0 for inverted, 0.5 for constant predictions."""
    rank_based: ClassVar[bool] = True
    """Values depend on the order of scores and map values only (invariant to increasing transforms)."""
    score_valued_keys: ClassVar[tuple[str, ...]] = ()
    """Leaf names (last path part) holding a score value (e.g. ``threshold``): they follow the transform."""

    @classmethod
    def make_metric(cls) -> Metric:
        from ..registry import get_registry

        return get_registry().metric(cls.metric)

    @pytest.fixture(scope="class")
    @classmethod
    def instance(cls) -> Metric:
        return cls.make_metric()

    @pytest.fixture(scope="class")
    @classmethod
    def computed(cls, instance: Metric) -> dict[str, Any]:
        return instance.compute(make_evaluation_data("noisy"))

    # --- declaration ------------------------------------------------------------------------------
    def test_registered_under_its_name(self, instance: Metric) -> None:
        from ..registry import get_registry

        registry = get_registry()
        assert self.metric in registry.metrics, f"{self.metric!r} is not registered; found {sorted(registry.metrics)}"
        registered = registry.metric(self.metric)
        assert isinstance(registered, Metric) and registered.name == self.metric
        assert isinstance(instance, type(registered))

    def test_declares_its_level(self, instance: Metric) -> None:
        assert instance.level in ("image", "pixel"), f"level must be 'image' or 'pixel', got {instance.level!r}"

    # --- values -----------------------------------------------------------------------------------
    def test_returns_json_with_the_declared_keys(self, computed: dict[str, Any]) -> None:
        assert isinstance(computed, dict)
        missing = [k for k in self.keys if k not in computed]
        assert not missing, f"compute() did not return {missing}; got {sorted(computed)}"
        try:
            json.loads(json.dumps(computed))
        except (TypeError, ValueError) as exc:
            pytest.fail(f"compute() returned values that are not JSON-serialisable: {exc}")

    @pytest.mark.parametrize(("quality", "expected"), [("perfect", 1.0), ("inverted", 0.0), ("constant", 0.5)])
    def test_auroc_sanity(self, instance: Metric, quality: str, expected: float) -> None:
        if not self.auroc_keys:
            pytest.skip("no auroc_keys declared for this metric")
        values = leaves(instance.compute(make_evaluation_data(quality)))
        for key in self.auroc_keys:
            assert key in values, f"{key!r} not among the returned values {sorted(values)}"
            got = values[key]
            assert math.isclose(got, expected, abs_tol=1e-9), f"{key} = {got} for {quality} predictions, expected {expected}"

    def test_invariant_to_increasing_transforms(self, instance: Metric, computed: dict[str, Any]) -> None:
        if not self.rank_based:
            pytest.skip("rank_based is False for this metric")

        def f(x: np.ndarray) -> np.ndarray:
            return np.exp(3.0 * x) + 7.0

        again = instance.compute(transformed(make_evaluation_data("noisy"), f))
        score_valued = set(self.score_valued_keys)
        assert_same_values(again, computed, "after a strictly increasing transform", skip=lambda p: p.rsplit(".", 1)[-1] in score_valued)
        got, expected = leaves(again), leaves(computed)
        for path in (p for p in expected if p.rsplit(".", 1)[-1] in score_valued):
            assert math.isclose(got[path], float(f(np.float64(expected[path]))), rel_tol=1e-6), f"{path} does not follow the transform"

    def test_deterministic(self, instance: Metric, computed: dict[str, Any]) -> None:
        assert_same_values(instance.compute(make_evaluation_data("noisy")), computed, "computing twice")

    def test_data_without_masks(self, instance: Metric, computed: dict[str, Any]) -> None:
        """Image-level metrics ignore masks; pixel-level ones need them and refuse data without."""
        data = make_evaluation_data("noisy", masks=False)
        assert not data.has_masks
        if instance.level == "pixel":
            with pytest.raises(AutoviError):
                instance.compute(data)
        else:
            assert_same_values(instance.compute(data), computed, "without masks")
