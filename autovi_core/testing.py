"""Conformance suite for detector plugins, run with pytest.

Subclass :class:`DetectorConformance` in your plugin's tests and name your detector::

    from autovi_core.testing import DetectorConformance

    class TestMyDetector(DetectorConformance):
        detector = "my_detector"          # the registered name
        overrides = {"epochs": 1}         # optional: make the fast profile faster still

It checks, on a small generated inspection category: registration and declared profiles, fit and
predict shapes and dtypes, maps at any requested resolution, finite outputs, determinism under a
seed, the save/load round trip, rejection of unknown hyperparameters and, for supervised
detectors, that labelled defects are accepted. Set ``min_auroc`` to also require that the
detector separates defective from good images better than chance, and ``min_pixel_auroc`` that
its maps localise the defects (pixel AUROC against the ground-truth masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from .dataset import Category
from .detector import PROFILES, Capabilities, Detector, LabelledDefects, Prediction
from .errors import ConfigError


class ConformanceData:
    """A small synthetic category loaded into memory once per test class."""

    def __init__(self, root: Path, category: str, size: int, seed: int = 0) -> None:
        from .datasets.autovi import read_autovi_category
        from .datasets.synthetic import SyntheticCounts, generate_category

        counts = SyntheticCounts(train=12, test_good=6, per_defect=4, multiple=2)
        folder = generate_category(root, category, size=size, seed=seed, counts=counts)
        self.category: Category = read_autovi_category(folder, dataset="synthetic", name=category, native_size=(size, size))
        self.train = self.category.load_images(self.category.train)
        self.test = self.category.load_images(self.category.test)
        self.labels = np.array([s.label for s in self.category.test])
        self.masks = [
            np.any([m for m, _ in self.category.load_channels(s)], axis=0) if s.label else np.zeros((size, size), bool)
            for s in self.category.test
        ]
        defective = [s for s in self.category.test if s.label == 1][:3]
        self.labelled = LabelledDefects(
            images=self.category.load_images(defective),
            masks=[np.any([m for m, _ in self.category.load_channels(s)], axis=0) for s in defective],
            defect_dirs=[s.defect_dir for s in defective],
        )


class DetectorConformance:
    """Mix-in test class: set ``detector`` (registered name) and optionally the class attributes below."""

    detector: ClassVar[str] = ""
    profile: ClassVar[str] = "fast"
    overrides: ClassVar[dict[str, Any]] = {}
    category: ClassVar[str] = "clip_assembly"
    image_size: ClassVar[int] = 64
    min_auroc: ClassVar[float | None] = None
    min_pixel_auroc: ClassVar[float | None] = None
    gpu_paths_on_cpu: ClassVar[bool] = False
    """Set for detectors that train with :mod:`autovi_core.training`: also fit once with its
    CUDA-only paths (bfloat16 autocast, worker-process loading) switched on for the CPU."""
    device: ClassVar[str] = "cpu"

    # --- fixtures ---------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def data(cls, tmp_path_factory: pytest.TempPathFactory) -> ConformanceData:
        return ConformanceData(tmp_path_factory.mktemp("conformance"), cls.category, cls.image_size)

    @classmethod
    def make(cls, seed: int = 0, **extra: Any) -> Detector:
        from .registry import get_registry

        overrides = {**cls.overrides, **extra}
        return get_registry().create_detector(cls.detector, cls.profile, seed=seed, device=cls.device, **overrides)

    @staticmethod
    def fit(detector: Detector, data: ConformanceData) -> Detector:
        return detector.fit(data.train, data.labelled if detector.capabilities.supervised else None)

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, data: ConformanceData) -> Detector:
        return cls.fit(cls.make(seed=0), data)

    @pytest.fixture(scope="class")
    @classmethod
    def prediction(cls, fitted: Detector, data: ConformanceData) -> Prediction:
        return fitted.predict(data.test, output_size=(cls.image_size, cls.image_size))

    # --- declaration ------------------------------------------------------------------------------
    def test_registered_under_its_name(self) -> None:
        from .registry import get_registry

        registry = get_registry()
        assert self.detector in registry.detectors, f"{self.detector!r} is not registered; found {sorted(registry.detectors)}"
        cls = registry.detector_class(self.detector)
        assert cls.name == self.detector

    def test_declares_profiles_and_capabilities(self) -> None:
        from .registry import get_registry

        cls = get_registry().detector_class(self.detector)
        for profile in PROFILES:
            assert profile in cls.profiles, f"profile {profile!r} missing"
            assert isinstance(cls.profiles[profile], dict)
        assert set(cls.profiles["paper"]) == set(cls.profiles["fast"]), "profiles must set the same hyperparameters"
        assert isinstance(cls.capabilities, Capabilities)

    def test_unknown_hyperparameter_is_rejected(self) -> None:
        from .registry import get_registry

        with pytest.raises(ConfigError, match="no_such_hyperparameter"):
            get_registry().create_detector(self.detector, self.profile, no_such_hyperparameter=1)

    # --- behaviour --------------------------------------------------------------------------------
    def test_predict_shapes_and_dtypes(self, prediction: Prediction, data: ConformanceData) -> None:
        n = len(data.test)
        assert prediction.scores.shape == (n,) and prediction.scores.dtype == np.float64
        assert prediction.maps.shape == (n, self.image_size, self.image_size)
        assert prediction.maps.dtype == np.float32

    def test_outputs_are_finite(self, prediction: Prediction) -> None:
        assert np.isfinite(prediction.scores).all(), "image scores hold NaN or inf"
        assert np.isfinite(prediction.maps).all(), "anomaly maps hold NaN or inf"

    def test_maps_are_not_constant(self, prediction: Prediction) -> None:
        assert float(prediction.maps.max() - prediction.maps.min()) > 0, "all maps are one constant value"

    @pytest.mark.parametrize("size", [(37, 53), (96, 80)])
    def test_maps_at_requested_resolution(self, fitted: Detector, data: ConformanceData, size: tuple[int, int]) -> None:
        prediction = fitted.predict(data.test[:2], output_size=size)
        assert prediction.maps.shape == (2, *size)
        assert np.isfinite(prediction.maps).all()

    def test_deterministic_under_seed(self, prediction: Prediction, data: ConformanceData) -> None:
        again = self.fit(self.make(seed=0), data).predict(data.test, output_size=(self.image_size, self.image_size))
        np.testing.assert_allclose(again.scores, prediction.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(again.maps, prediction.maps, rtol=1e-4, atol=1e-5)

    def test_save_load_round_trip(self, fitted: Detector, prediction: Prediction, data: ConformanceData, tmp_path: Path) -> None:
        path = fitted.save(tmp_path / "model")
        loaded = type(fitted).load(path, device=self.device)
        again = loaded.predict(data.test, output_size=(self.image_size, self.image_size))
        np.testing.assert_allclose(again.scores, prediction.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(again.maps, prediction.maps, rtol=1e-4, atol=1e-5)
        assert loaded.hparams == fitted.hparams

    def test_separates_defective_from_good(self, prediction: Prediction, data: ConformanceData) -> None:
        if self.min_auroc is None:
            pytest.skip("min_auroc not set for this detector")
        from .metrics.classification import image_auroc

        auroc = image_auroc(prediction.scores, data.labels)
        assert auroc >= self.min_auroc, f"image AUROC {auroc:.3f} below {self.min_auroc}"

    def test_gpu_code_paths_run_on_cpu(self, data: ConformanceData, monkeypatch: pytest.MonkeyPatch) -> None:
        if not self.gpu_paths_on_cpu:
            pytest.skip("gpu_paths_on_cpu not set for this detector")
        from . import training

        monkeypatch.setattr(training, "GPU_PATHS_ON_CPU", True)
        detector = self.make()
        if "num_workers" in detector.hparams:
            detector = self.make(num_workers=2)
        prediction = self.fit(detector, data).predict(data.test, output_size=(self.image_size, self.image_size))
        assert prediction.maps.shape == (len(data.test), self.image_size, self.image_size)
        assert np.isfinite(prediction.scores).all() and np.isfinite(prediction.maps).all()
        assert prediction.scores.std() > 0, "mixed-precision scores are all equal"

    def test_maps_localise_defects(self, prediction: Prediction, data: ConformanceData) -> None:
        if self.min_pixel_auroc is None:
            pytest.skip("min_pixel_auroc not set for this detector")
        from .metrics.spro import pixel_auroc

        auroc = pixel_auroc(list(prediction.maps), data.masks)
        assert auroc >= self.min_pixel_auroc, f"pixel AUROC {auroc:.3f} below {self.min_pixel_auroc}"
