"""Conformance suite for detector plugins (:class:`DetectorConformance`).

Subclass :class:`DetectorConformance` in your plugin's tests and name your detector::

    from autovi_core.testing import DetectorConformance

    class TestMyDetector(DetectorConformance):
        detector = "my_detector"          # the registered name
        overrides = {"epochs": 1}         # optional: make the fast profile faster still

It checks, on a small generated inspection category: registration and declared profiles, fit and
predict shapes and dtypes, maps at any requested resolution, finite outputs, batch invariance,
determinism under a seed (a new detector and a refit of the same one), the save/load round trip
(provenance included), the model folder (``autovi predict`` gives the detector's scores back), the
hyperparameter declaration (every value drawn outside a domain is refused by name, every value
inside constructs, ``--set`` strings parse; with ``readme`` set, the README's table is the generated
one), the life cycle (predict before fit raises :class:`~autovi_core.errors.NotFittedError`,
``fitted`` is read-only, fit leaves ``hparams`` as chosen, ``provenance`` is JSON), that registering
the plugin imports no torch and, for supervised detectors, that labelled defects are accepted. Set
``min_auroc`` to also require that the detector separates defective from good images better than
chance, and ``min_pixel_auroc`` that its maps localise the defects (pixel AUROC against the
ground-truth masks).

Most checks reuse one fitted detector per test class; only the determinism checks fit again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from ..dataset import Category
from ..detector import PROFILES, Capabilities, Detector, LabelledDefects, Prediction
from ..errors import ConfigError, NotFittedError


class ConformanceData:
    """A small synthetic category loaded into memory once per test class."""

    def __init__(self, root: Path, category: str, size: int, seed: int = 0) -> None:
        from ..datasets.autovi import read_autovi_category
        from ..datasets.synthetic import SyntheticCounts, generate_category

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


def _assert_same_prediction(got: Prediction, expected: Prediction, what: str) -> None:
    """Scores and maps equal within a float32 tolerance (relative, plus absolute at the maps' scale)."""
    scale = max(1.0, float(np.abs(expected.maps).max()), float(np.abs(expected.scores).max()))
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{what}: image scores differ")
    np.testing.assert_allclose(got.maps, expected.maps, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{what}: anomaly maps differ")


_NO_HEAVY_IMPORTS = textwrap.dedent(
    """
    import sys, traceback
    from importlib.metadata import entry_points

    entry_point, detector, heavy = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    stacks = {}

    class Spy:  # records who imports a heavy module first
        def find_spec(self, name, path=None, target=None):
            if name in heavy and name not in stacks:
                stacks[name] = "".join(f for f in traceback.format_stack()[:-1] if "<frozen importlib" not in f)
            return None

    sys.meta_path.insert(0, Spy())
    [ep] = [ep for ep in entry_points(group="autovi") if ep.name == entry_point]
    module = ep.load()
    names = [cls.name for cls in module.autovi_register_detectors()]
    assert detector in names, f"entry point {entry_point!r} registered {names}, not {detector!r}"
    found = [name for name in heavy if name in sys.modules]
    if found:
        print(f"loading entry point {entry_point!r} and calling autovi_register_detectors() imported {found}:")
        for name in found:
            print(f"--- first import of {name}:\\n{stacks.get(name, '(stack not recorded)')}")
        sys.exit(1)
    """
)


def detector_entry_point(detector: str) -> str | None:
    """The name of the ``autovi`` entry point whose ``autovi_register_detectors`` registers ``detector``."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group="autovi"):
        try:
            module = entry_point.load()
            hook = getattr(module, "autovi_register_detectors", None)
            names = [getattr(cls, "name", None) for cls in (hook() or [])] if hook is not None else []
        except Exception:  # a broken plugin is reported by its own tests and by `autovi list`
            continue
        if detector in names:
            return entry_point.name
    return None


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
    short_overrides: ClassVar[dict[str, Any]] = {}
    """A small training budget (on top of ``overrides``) for the checks that fit detectors of their own
    (refit determinism, the CUDA-only paths): they test code paths, which do not depend on the budget,
    and bfloat16 is slow on a CPU. Empty: those checks use the full ``overrides``."""
    device: ClassVar[str] = "cpu"
    heavy_modules: ClassVar[tuple[str, ...]] = ("torch",)
    """Modules that loading the plugin's entry point and calling its registration hook must not
    import (``autovi list`` loads every plugin); import them inside the methods that use them."""

    readme: ClassVar[Path | None] = None
    """The plugin's README, whose hyperparameter table must be the one generated from ``params``
    (``autovi describe NAME --readme README.md`` writes it)."""
    hparam_examples: ClassVar[int] = 30
    """Hypothesis examples per hyperparameter-domain check (invalid values refused; valid ones construct)."""

    # --- fixtures ---------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def data(cls, tmp_path_factory: pytest.TempPathFactory) -> ConformanceData:
        return ConformanceData(tmp_path_factory.mktemp("conformance"), cls.category, cls.image_size)

    @classmethod
    def make(cls, seed: int = 0, **extra: Any) -> Detector:
        from ..registry import get_registry

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
        from ..registry import get_registry

        registry = get_registry()
        assert self.detector in registry.detectors, f"{self.detector!r} is not registered; found {sorted(registry.detectors)}"
        cls = registry.detector_class(self.detector)
        assert cls.name == self.detector

    def test_declares_profiles_and_capabilities(self) -> None:
        from ..registry import get_registry

        cls = get_registry().detector_class(self.detector)
        for profile in PROFILES:
            assert profile in cls.profiles, f"profile {profile!r} missing"
            assert isinstance(cls.profiles[profile], dict)
        assert set(cls.profiles["paper"]) == set(cls.profiles["fast"]), "profiles must set the same hyperparameters"
        assert isinstance(cls.capabilities, Capabilities)

    def test_unknown_hyperparameter_is_rejected(self) -> None:
        from ..registry import get_registry

        with pytest.raises(ConfigError, match="no_such_hyperparameter"):
            get_registry().create_detector(self.detector, self.profile, no_such_hyperparameter=1)

    def test_registering_imports_no_torch(self) -> None:
        """Loading the plugin's entry point and calling ``autovi_register_detectors`` (what
        ``autovi list`` does) imports none of ``heavy_modules``; checked in a fresh interpreter."""
        entry_point = detector_entry_point(self.detector)
        if entry_point is None:
            pytest.skip(f"no 'autovi' entry point registers {self.detector!r} (registered in-process)")
        result = subprocess.run(
            [sys.executable, "-c", _NO_HEAVY_IMPORTS, entry_point, self.detector, ",".join(self.heavy_modules)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"registering {self.detector!r} must not import {', '.join(self.heavy_modules)}: import them inside the "
            f"methods that use them (and under `if TYPE_CHECKING:` for annotations)\n{result.stdout}{result.stderr}"
        )

    # --- life cycle -------------------------------------------------------------------------------
    def test_predict_before_fit_raises_not_fitted(self, data: ConformanceData) -> None:
        detector = self.make()
        assert detector.fitted is False
        with pytest.raises(NotFittedError):
            detector.predict(data.test[:1], output_size=(self.image_size, self.image_size))

    def test_fitted_cannot_be_set_by_the_caller(self, fitted: Detector) -> None:
        assert fitted.fitted is True
        with pytest.raises(AttributeError):
            fitted.fitted = False  # type: ignore[misc]
        assert fitted.fitted is True
        with pytest.raises(AttributeError):
            self.make().fitted = True  # type: ignore[misc]

    def test_fit_leaves_hparams_as_chosen(self, fitted: Detector) -> None:
        chosen = type(fitted).resolve_hparams(self.profile, self.overrides)
        assert dict(fitted.hparams) == chosen, "fit changed the hyperparameters; record findings in provenance"
        assert dict(fitted.hparams) == dict(self.make().hparams)
        with pytest.raises(TypeError):
            fitted.hparams["__conformance__"] = 1  # type: ignore[index]

    def test_provenance_is_json_after_fit(self, fitted: Detector) -> None:
        assert isinstance(fitted.provenance, dict), f"provenance is a {type(fitted.provenance).__name__}, not a dict"
        try:
            json.dumps(fitted.provenance, allow_nan=False)
        except (TypeError, ValueError) as exc:
            pytest.fail(f"provenance is not JSON-serialisable: {exc}: {fitted.provenance!r}")
        assert "device" in fitted.provenance, "fit() records the device in provenance; keep it (update, never replace)"

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

    def test_batch_invariance(self, fitted: Detector, prediction: Prediction, data: ConformanceData) -> None:
        """An image's score and map do not depend on the other images of the batch."""
        first_two = fitted.predict(data.test[:2], output_size=(self.image_size, self.image_size))
        head = Prediction(scores=prediction.scores[:2], maps=prediction.maps[:2])
        _assert_same_prediction(first_two, head, "predict(x[:2]) vs the first two of predict(x)")

    def test_deterministic_under_seed(self, fitted: Detector, prediction: Prediction, data: ConformanceData) -> None:
        """Fitting a detector again, with its seed, gives its first prediction: the fit depends only on
        the seed and the data (not on global random state other tests moved, nor on state left by the
        previous fit). Without ``short_overrides`` the class fixture's detector is fitted once more
        (one fit instead of two keeps the kit cheap); with them a detector at that budget is fitted twice."""
        size = (self.image_size, self.image_size)
        if self.short_overrides:
            fitted = self.fit(self.make(**self.short_overrides), data)
            prediction = fitted.predict(data.test, output_size=size)
        self.fit(fitted, data)
        again = fitted.predict(data.test, output_size=size)
        _assert_same_prediction(again, prediction, "the same detector fitted again with its seed")

    # --- hyperparameter domains (property-based) ----------------------------------------------------
    def test_declares_every_hyperparameter(self) -> None:
        """``params`` declares each hyperparameter once, with a meaning and a source (autovi-core 1.1)."""
        cls = self._class()
        if not cls.params:
            pytest.fail(f"{cls.__name__} declares no params: declare each hyperparameter as an autovi_core.domains.Param")
        missing = [key for key, p in cls.params.items() if not (p.meaning.strip() and p.source.strip())]
        assert not missing, f"hyperparameters without a meaning or a source: {missing}"

    def test_invalid_hyperparameters_are_refused_by_name(self) -> None:
        """Values drawn outside each domain are refused with a one-line ConfigError naming the
        detector and the key, when tasks are built (``resolve_hparams``) and at construction."""
        pytest.importorskip("hypothesis")
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        cls = self._class()
        domains = cls.domains()

        @settings(max_examples=self.hparam_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data: Any) -> None:
            key = data.draw(st.sampled_from(sorted(domains)), label="key")
            value = data.draw(domains[key].invalid(), label="value")
            with pytest.raises(ConfigError) as info:
                cls.resolve_hparams(self.profile, {key: value})
            message = str(info.value)
            assert cls.name in message and f"{key}=" in message and "\n" not in message, message

        check()

    def test_valid_hyperparameters_construct(self) -> None:
        """Values drawn inside each domain (one key at a time, the others at the profile's values)
        construct the detector, unless ``check_hparams`` refuses the combination by name."""
        pytest.importorskip("hypothesis")
        from hypothesis import HealthCheck, assume, given, settings
        from hypothesis import strategies as st

        from ..errors import CombinationError

        cls = self._class()
        domains = cls.domains()
        profiles = [p for p in cls.profiles.values()]

        @settings(max_examples=self.hparam_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data: Any) -> None:
            key = data.draw(st.sampled_from(sorted(domains)), label="key")
            value = data.draw(domains[key].valid([p.get(key) for p in profiles]), label="value")
            try:
                cls.resolve_hparams(self.profile, {**self.overrides, key: value})
            except CombinationError as exc:
                assert cls.name in str(exc) and "\n" not in str(exc)
                assume(False)
            detector = self.make(**{key: value})
            assert detector.hparams[key] == domains[key].check(value)

        check()

    def test_set_strings_parse_to_the_declared_values(self) -> None:
        """``--set KEY=TEXT`` with each profile value written as text gives that value back."""
        cls = self._class()
        for key, domain in cls.domains().items():
            for profile in cls.profiles.values():
                value = profile[key]
                text = json.dumps(value)
                assert cls.parse_overrides({key: text}) == {key: domain.check(value)}, (key, text)

    def test_readme_table_is_generated_from_params(self) -> None:
        if self.readme is None:
            pytest.skip("readme not set for this detector")
        from ..describe import sync_readme

        assert sync_readme(self._class(), Path(self.readme), check=True), (
            f"{self.readme}: the hyperparameter table differs from params; run: autovi describe {self.detector} --readme {self.readme}"
        )

    @classmethod
    def _class(cls) -> type[Detector]:
        from ..registry import get_registry

        return get_registry().detector_class(cls.detector)

    def test_save_load_round_trip(self, fitted: Detector, prediction: Prediction, data: ConformanceData, tmp_path: Path) -> None:
        path = fitted.save(tmp_path / "model")
        loaded = type(fitted).load(path, device=self.device)
        assert loaded.fitted is True
        again = loaded.predict(data.test, output_size=(self.image_size, self.image_size))
        np.testing.assert_allclose(again.scores, prediction.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(again.maps, prediction.maps, rtol=1e-4, atol=1e-5)
        assert loaded.hparams == fitted.hparams
        assert loaded.provenance == json.loads(json.dumps(fitted.provenance)), "provenance did not survive save/load"

    def test_model_folder_predicts_as_the_detector(
        self, fitted: Detector, prediction: Prediction, data: ConformanceData, tmp_path: Path
    ) -> None:
        """The fitted detector saved as a model folder (what ``autovi fit`` and ``autovi run
        --save-models`` write) and run through ``autovi predict``'s path (images read from their
        files, in batches of 5, maps at each image's size) gives the detector's own image scores, and
        verdicts by the saved calibration."""
        from ..deploy import predict_folder
        from ..model_folder import calibration_section, geometry_section, load_model_folder, save_model_folder

        good = [i for i, label in enumerate(data.labels) if label == 0]
        calibration = calibration_section(prediction.scores[good], [prediction.maps[i] for i in good])
        geometry = geometry_section([image.shape for image in data.train], [image.shape[:2] for image in data.train])
        folder = save_model_folder(
            tmp_path / "model", fitted, calibration=calibration, geometry=geometry, training={"command": "conformance"}
        )
        model = load_model_folder(folder, device=self.device)
        threshold, _ = model.threshold("0.95")
        assert threshold == calibration["thresholds"]["0.95"]
        items = [(s.path, data.category.relative_path(s)) for s in data.category.test]
        summary = predict_folder(model, items, tmp_path / "out", threshold=threshold, batch_size=5)
        rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        assert summary.errors == 0, [r["error"] for r in rows if r["error"]]
        assert [r["path"] for r in rows] == [str(path) for path, _ in items]
        scores = np.array([r["score"] for r in rows])
        scale = max(1.0, float(np.abs(prediction.scores).max()))
        np.testing.assert_allclose(
            scores, prediction.scores, rtol=1e-4, atol=1e-5 * scale, err_msg="model folder vs detector: image scores differ"
        )
        assert [r["verdict"] for r in rows] == ["defective" if s > threshold else "good" for s in scores]
        assert all(r["notes"] == [] for r in rows), [r["notes"] for r in rows if r["notes"]]

    def test_separates_defective_from_good(self, prediction: Prediction, data: ConformanceData) -> None:
        if self.min_auroc is None:
            pytest.skip("min_auroc not set for this detector")
        from ..metrics.classification import image_auroc

        auroc = image_auroc(prediction.scores, data.labels)
        assert auroc >= self.min_auroc, f"image AUROC {auroc:.3f} below {self.min_auroc}"

    def test_gpu_code_paths_run_on_cpu(self, data: ConformanceData, monkeypatch: pytest.MonkeyPatch) -> None:
        if not self.gpu_paths_on_cpu:
            pytest.skip("gpu_paths_on_cpu not set for this detector")
        from .. import training

        monkeypatch.setattr(training, "GPU_PATHS_ON_CPU", True)
        detector = self.make(**self.short_overrides)
        if "num_workers" in detector.hparams:
            detector = self.make(**self.short_overrides, num_workers=2)
        prediction = self.fit(detector, data).predict(data.test, output_size=(self.image_size, self.image_size))
        assert prediction.maps.shape == (len(data.test), self.image_size, self.image_size)
        assert np.isfinite(prediction.scores).all() and np.isfinite(prediction.maps).all()
        assert prediction.scores.std() > 0, "mixed-precision scores are all equal"

    def test_maps_localise_defects(self, prediction: Prediction, data: ConformanceData) -> None:
        if self.min_pixel_auroc is None:
            pytest.skip("min_pixel_auroc not set for this detector")
        from ..metrics.spro import pixel_auroc

        auroc = pixel_auroc(list(prediction.maps), data.masks)
        assert auroc >= self.min_pixel_auroc, f"pixel AUROC {auroc:.3f} below {self.min_pixel_auroc}"
