"""The autovi-core 1.0 detector contract: life cycle, hyperparameters vs provenance, contract version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_plugins import make_plugin

import autovi_core
from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.errors import ConfigError, ContractError, DataError, NotFittedError
from autovi_core.hparams import Hyperparameters
from autovi_core.plugins import incompatibility


class Mean(Detector):
    """Scores an image by its mean distance to the training images' mean."""

    name = "mean_contract"
    profiles = {
        "paper": {"scale": 1.0, "size": 8, "robust": False, "mode": "l1", "layers": ["a", "b"], "weights": None, "crop": 224},
        "fast": {"scale": 2.0, "size": 4, "robust": True, "mode": "l2", "layers": ["a"], "weights": None, "crop": None},
    }
    hparam_types = {"mode": (str, list)}

    def learn(self, images: Any, labelled: LabelledDefects | None) -> None:
        self.mean = np.mean([im.astype(np.float32) for im in images], axis=0)
        self.provenance["dtype"] = "float32"

    def infer(self, images: Any, output_size: tuple[int, int]) -> Prediction:
        maps = np.stack([np.full(output_size, np.abs(im - self.mean).mean(), np.float32) for im in images])
        return Prediction(maps.reshape(len(images), -1).max(axis=1) * self.hparams["scale"], maps)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.mean = state["mean"]


def images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(n)]


# --- life cycle ----------------------------------------------------------------------------------
def test_fit_sets_fitted_and_returns_the_detector() -> None:
    detector = Mean()
    assert not detector.fitted
    assert detector.fit(images()) is detector and detector.fitted
    assert detector.predict(images(2, seed=1), (7, 9)).maps.shape == (2, 7, 9)


def test_fitted_cannot_be_set_by_the_caller() -> None:
    detector = Mean()
    with pytest.raises(AttributeError, match="set by the core"):
        detector.fitted = True
    assert not detector.fitted


def test_predict_before_fit_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError, match="mean_contract"):
        Mean().predict(images(), (4, 4))
    assert issubclass(NotFittedError, RuntimeError)


def test_a_failed_fit_leaves_the_detector_unfitted() -> None:
    class Fails(Mean):
        def learn(self, images: Any, labelled: LabelledDefects | None) -> None:
            raise ValueError("no")

    detector = Mean().fit(images())
    assert detector.fitted
    failing = Fails()
    with pytest.raises(ValueError):
        failing.fit(images())
    assert not failing.fitted


def test_fit_refuses_no_images_and_labels_for_unsupervised() -> None:
    with pytest.raises(DataError, match="at least one training image"):
        Mean().fit([])
    with pytest.raises(ConfigError, match="unsupervised"):
        Mean().fit(images(), LabelledDefects(images=images(1)))


def test_overriding_fit_or_predict_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="implements learn"):

        class Old(Mean):  # a 0.x plugin
            def fit(self, images: Any, labelled: Any = None) -> None:
                pass

    with pytest.raises(TypeError, match="implements infer"):

        class Old2(Mean):
            def predict(self, images: Any, output_size: Any) -> Prediction:
                raise AssertionError


def test_infer_returning_wrong_shapes_is_a_contract_error() -> None:
    class Wrong(Mean):
        def infer(self, images: Any, output_size: tuple[int, int]) -> Prediction:
            return Prediction(np.zeros(len(images)), np.zeros((len(images), 3, 3), np.float32))

    with pytest.raises(ContractError, match="shape"):
        Wrong().fit(images()).predict(images(), (4, 4))


# --- hyperparameters vs provenance ---------------------------------------------------------------
def test_hparams_are_read_only_and_fit_findings_go_to_provenance() -> None:
    detector = Mean("fast", scale=3.0)
    chosen = dict(detector.hparams)
    with pytest.raises(TypeError, match="read-only"):
        detector.hparams["scale"] = 1.0
    with pytest.raises(TypeError, match="read-only"):
        detector.hparams.update(scale=1.0)
    detector.fit(images())
    assert detector.hparams == chosen == {**Mean.profiles["fast"], "scale": 3.0}
    assert detector.provenance == {"device": "cpu", "dtype": "float32"}
    assert json.loads(json.dumps(detector.hparams)) == chosen


def test_learn_mutating_a_nested_hyperparameter_is_a_contract_error() -> None:
    class Sneaky(Mean):
        def learn(self, images: Any, labelled: LabelledDefects | None) -> None:
            super().learn(images, labelled)
            self.hparams["layers"].append("found")

    with pytest.raises(ContractError, match="provenance"):
        Sneaky().fit(images())


def test_save_load_keeps_provenance_and_versions(tmp_path: Path) -> None:
    detector = Mean(seed=3).fit(images())
    path = detector.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    assert config["provenance"] == {"device": "cpu", "dtype": "float32"}
    assert config["api_version"] == autovi_core.API_VERSION
    loaded = Mean.load(path)
    assert loaded.fitted and loaded.provenance == detector.provenance and loaded.hparams == detector.hparams
    np.testing.assert_array_equal(loaded.predict(images(), (4, 4)).scores, detector.predict(images(), (4, 4)).scores)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("scale", 3, 3.0),  # int widened to float
        ("scale", 0.5, 0.5),
        ("size", 16, 16),
        ("robust", False, False),
        ("mode", "l1", "l1"),
        ("mode", ["l1", "l2"], ["l1", "l2"]),  # declared in hparam_types
        ("layers", ["x", "y", "z"], ["x", "y", "z"]),
        ("layers", ("x",), ["x"]),  # a tuple becomes a list (JSON has lists only)
        ("weights", "/some/file.pt", "/some/file.pt"),  # None in every profile: any JSON value
        ("crop", None, None),  # None in one profile: optional
        ("crop", 200, 200),
    ],
)
def test_valid_overrides_are_accepted(key: str, value: Any, expected: Any) -> None:
    got = Mean("paper", **{key: value}).hparams[key]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("scale", "abc", "expects a number"),
        ("scale", True, "expects a number"),
        ("size", 2.5, "expects an integer"),
        ("size", True, "expects an integer"),
        ("size", "8", "expects an integer"),
        ("robust", 1, "expects true or false"),
        ("robust", "yes", "expects true or false"),
        ("mode", 3, "expects a non-empty string or a list"),
        ("layers", "a", "expects a list of any number of (a non-empty string)"),
        ("layers", [1, 2], "expects a list of any number of (a non-empty string)"),
        ("crop", 2.5, "expects an integer, or none"),
        ("weights", object(), "expects any JSON value"),
    ],
)
def test_overrides_of_the_wrong_type_are_one_line_errors(key: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Mean("paper", **{key: value})
    message = str(info.value)
    assert "mean_contract" in message and f"{key}=" in message and expected in message
    assert "\n" not in message


def test_unknown_hyperparameters_are_rejected() -> None:
    with pytest.raises(ConfigError, match="no hyperparameter 'weights_source'"):
        Mean(weights_source="x")


def test_hyperparameters_copy_is_a_plain_mutable_dict() -> None:
    import copy

    frozen = Hyperparameters({"a": [1]})
    for clone in (copy.copy(frozen), copy.deepcopy(frozen), dict(frozen)):
        clone["a"] = 2
        assert type(clone) is dict
    assert frozen == {"a": [1]}


def test_every_installed_detector_profile_is_self_consistent() -> None:
    """The type check accepts every profile's own values (paper as an override of fast and back)."""
    from autovi_core.registry import get_registry

    for name, cls in get_registry().detectors.items():
        for target, source in (("fast", "paper"), ("paper", "fast")):
            overrides = {k: v for k, v in cls.profiles[source].items() if k in cls.profiles[target]}
            assert cls.resolve_hparams(target, overrides), name


# --- contract version ----------------------------------------------------------------------------
class _Dist:
    def __init__(self, *requires: str) -> None:
        self.requires = list(requires)


@pytest.mark.parametrize(
    ("requires", "compatible"),
    [
        ((), True),
        (("numpy",), True),
        (("autovi-core",), True),
        (("autovi-core>=1.0,<2",), True),
        (("autovi_core>=1.0,<2",), True),
        (("autovi-core>=0.2,<1",), False),
        (("autovi-core>=2",), False),
        (("autovi-core<1; python_version < '3'",), True),  # marker not met: no requirement
    ],
)
def test_incompatibility_reads_the_plugins_pin(requires: tuple[str, ...], compatible: bool) -> None:
    reason = incompatibility(_Dist(*requires), "1.0.0")  # type: ignore[arg-type]
    assert (reason is None) == compatible
    if reason:
        assert "1.0.0" in reason and "requires" in reason


def test_every_plugin_in_the_repository_pins_the_contract() -> None:
    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parents[1]
    pyprojects = sorted(root.glob("plugins/*/pyproject.toml")) + sorted(root.glob("examples/*/pyproject.toml"))
    assert pyprojects
    import tomllib

    for path in pyprojects:
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
        core = [Requirement(d) for d in deps if Requirement(d).name == "autovi-core"]
        assert core, path
        assert core[0].specifier.contains(autovi_core.__version__) and not core[0].specifier.contains("2.0.0"), path


COMPATIBLE = """
import numpy as np
from autovi_core import Detector, Prediction, hookimpl


class Tiny(Detector):
    name = "tiny_contract"
    profiles = {"paper": {}, "fast": {}}

    def learn(self, images, labelled):
        self.level = float(np.mean([im.mean() for im in images]))

    def infer(self, images, output_size):
        maps = np.stack([np.full(output_size, abs(im.mean() - self.level), np.float32) for im in images])
        return Prediction(maps[:, 0, 0], maps)

    def state_dict(self):
        return {"level": np.array(self.level)}

    def load_state_dict(self, state):
        self.level = float(state["level"])


@hookimpl
def autovi_register_detectors():
    return [Tiny]
"""


def _autovi(*args: str, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, AUTOVI_NO_PROGRESS="1", PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "autovi_core.cli", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    make_plugin(
        site, "autovi-old", "old", "autovi_old_mod", "raise RuntimeError('must not be imported')\n", requires=("autovi-core>=0.1,<1",)
    )
    make_plugin(site, "autovi-tiny", "tiny", "autovi_tiny_mod", COMPATIBLE, requires=("autovi-core>=1.0,<2", "numpy"))
    return site


def test_plugin_for_another_major_version_is_listed_incompatible_not_imported(plugin_site: Path) -> None:
    proc = _autovi("--plugins", "old,tiny", "list", "--json", site=plugin_site)
    assert proc.returncode == 0, proc.stderr
    by_name = {e["name"]: e for e in json.loads(proc.stdout)}
    old = by_name["old"]
    assert old["status"] == "incompatible" and old["distribution"] == "autovi-old"
    assert "autovi-core<1,>=0.1" in old["error"] or "autovi-core>=0.1,<1" in old["error"]
    assert "must not be imported" not in proc.stdout + proc.stderr
    assert by_name["tiny_contract"]["status"] == "ok"
    assert "incompatible" in _autovi("--plugins", "old,tiny", "list", site=plugin_site).stdout


def test_all_plugins_skips_incompatible_ones_with_the_reason(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _autovi(
        "--plugins", "old,tiny", "run", "--all-plugins", "-c", "clip_assembly", "--in-process", "--output", str(out), site=plugin_site
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipping incompatible plugin 'old'" in proc.stderr and "requires autovi-core" in proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["detector"] for r in records] == ["tiny_contract"]
    assert records[0]["provenance"] == {"device": "cpu"} and records[0]["versions"]["api"] == autovi_core.API_VERSION
    explicit = _autovi("--plugins", "old,tiny", "run", "-d", "old", "-c", "clip_assembly", "--output", str(out), site=plugin_site)
    assert explicit.returncode == 2 and "incompatible" in explicit.stderr and "\n" not in explicit.stderr.strip()


def test_debug_list_shows_a_broken_plugins_full_traceback(tmp_path: Path) -> None:
    source = "def helper():\n    import no_such_module_for_debug\n\nhelper()\n"
    site = make_plugin(tmp_path / "site", "autovi-broken", "broken", "autovi_broken_debug", source)
    plain = _autovi("--plugins", "broken", "list", site=site)
    assert "no_such_module_for_debug" in plain.stdout and "Traceback" not in plain.stdout + plain.stderr
    debug = _autovi("--debug", "--plugins", "broken", "list", site=site)
    assert debug.returncode == 0
    assert "Traceback (most recent call last)" in debug.stderr and "in helper" in debug.stderr
    as_json = json.loads(_autovi("--debug", "--plugins", "broken", "list", "--json", site=site).stdout)
    assert "in helper" in next(e for e in as_json if e["name"] == "broken")["traceback"]


def test_set_of_a_wrong_type_stops_before_any_experiment(plugin_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    proc = _autovi("--plugins", "tiny", "run", "-d", "tiny_contract", "--set", "weights_source=x", "--output", str(out), site=plugin_site)
    assert proc.returncode == 2 and "no hyperparameter 'weights_source'" in proc.stderr
    assert not (out / "results.jsonl").exists()


def test_capabilities_and_core_exports() -> None:
    assert autovi_core.API_VERSION == "1.1" and autovi_core.__version__.startswith("1.1")
    assert isinstance(Mean.capabilities, Capabilities)
