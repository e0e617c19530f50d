"""autovi_core.shared_fits: a fit saved once in a run's folder and loaded where the run repeats it,
keyed by everything the fit depends on; and the runner's plan of which experiments share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from autovi_core.detector import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.domains import Float, Param
from autovi_core.experiment import Task
from autovi_core.shared_fits import fit_key, fit_shared, plan_shared_fits, sharing_fits

LEARNED: list[str] = []


class NoisyMean(Detector):
    """Mean training image plus noise from the global random state (as a network's initialisation)."""

    name = "noisy_mean"
    params: ClassVar[dict[str, Param]] = {"noise": Param(Float(0.0), paper=0.1, fast=0.1, meaning="noise sd", source="test")}
    capabilities = Capabilities(supervised=True)

    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        LEARNED.append(self.name)
        self.mean = np.mean(np.stack(images), axis=0) + self.hparams["noise"] * np.random.standard_normal(images[0].shape)

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        maps = np.stack([np.abs(image - self.mean).mean(axis=-1) for image in images])[:, : output_size[0], : output_size[1]]
        return Prediction(scores=maps.reshape(len(images), -1).max(axis=1), maps=maps)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.mean = np.asarray(state["mean"])


class ReadsHeldOut(NoisyMean):
    name = "reads_held_out"
    capabilities = Capabilities(uses_held_out_goods=True)


def goods(seed: int, n: int = 4) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).uniform(0, 255, (n, 8, 8, 3)))


@pytest.fixture(autouse=True)
def _clear() -> None:
    LEARNED.clear()


def test_without_a_folder_it_fits_from_the_seed(tmp_path: Path) -> None:
    first, reused = fit_shared(NoisyMean(seed=3), goods(0))
    again, _ = fit_shared(NoisyMean(seed=3), goods(0))
    assert not reused and first.fitted and LEARNED == ["noisy_mean"] * 2
    np.testing.assert_array_equal(first.mean, again.mean)  # seeded before each fit, whatever ran before
    assert not list(tmp_path.iterdir())


def test_a_repeated_fit_is_loaded_not_fitted(tmp_path: Path) -> None:
    images = goods(0)
    with sharing_fits(tmp_path):
        first, reused_first = fit_shared(NoisyMean(seed=3), images)
        np.random.standard_normal(100)  # whatever the run does in between
        second, reused_second = fit_shared(NoisyMean(seed=3), goods(0))
    assert (reused_first, reused_second) == (False, True) and LEARNED == ["noisy_mean"]
    assert [p.name for p in tmp_path.iterdir()] == [fit_key(first, images)]
    np.testing.assert_array_equal(second.mean, first.mean)
    test = goods(9, 2)
    np.testing.assert_array_equal(second.predict(test, (8, 8)).maps, first.predict(test, (8, 8)).maps)
    assert "shared_fit" in second.provenance and "shared_fit" not in first.provenance


@pytest.mark.parametrize(
    "other",
    [
        lambda: (NoisyMean(seed=4), goods(0)),
        lambda: (NoisyMean(seed=3, noise=0.2), goods(0)),
        lambda: (NoisyMean(seed=3, device="cuda"), goods(0)),
        lambda: (NoisyMean(seed=3), goods(1)),
        lambda: (NoisyMean(seed=3), goods(0)[:3]),
    ],
    ids=["seed", "hyperparameter", "device", "images", "fewer-images"],
)
def test_any_difference_in_what_the_fit_depends_on_fits_again(tmp_path: Path, other: Any) -> None:
    with sharing_fits(tmp_path):
        fit_shared(NoisyMean(seed=3), goods(0))
        detector, images = other()
        if detector.device == "cuda":  # only the key: no GPU needed
            assert fit_key(detector, images) != fit_key(NoisyMean(seed=3), goods(0))
            return
        _, reused = fit_shared(detector, images)
    assert not reused and len(LEARNED) == 2 and len(list(tmp_path.iterdir())) == 2


def test_supervised_fits_and_held_out_readers_are_never_shared(tmp_path: Path) -> None:
    labelled = LabelledDefects(images=goods(5, 1), masks=[None], defect_dirs=["x"])
    with sharing_fits(tmp_path):
        for _ in range(2):
            _, reused = fit_shared(NoisyMean(seed=3), goods(0), labelled)
            assert not reused
        for _ in range(2):
            _, reused = fit_shared(ReadsHeldOut(seed=3), goods(0), held_out=goods(7, 2))
            assert not reused
    assert LEARNED == ["noisy_mean", "noisy_mean", "reads_held_out", "reads_held_out"]
    assert not list(tmp_path.iterdir())


def test_an_unreadable_entry_is_fitted_again(tmp_path: Path) -> None:
    images = goods(0)
    entry = tmp_path / fit_key(NoisyMean(seed=3), images)
    entry.mkdir()
    (entry / "config.json").write_text("{broken")
    with sharing_fits(tmp_path):
        detector, reused = fit_shared(NoisyMean(seed=3), images)
    assert not reused and LEARNED == ["noisy_mean"] and (entry / "state.npz").is_file()
    assert NoisyMean.load(entry).mean.shape == detector.mean.shape


def test_held_out_goods_reach_learn_only_during_the_fit() -> None:
    seen = []

    class Spy(ReadsHeldOut):
        def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
            seen.append(self.held_out_goods)
            super().learn(images, labelled)

    detector = Spy()
    held = goods(7, 2)
    detector.fit(goods(0), held_out=held)
    detector.fit(goods(0))
    assert seen[0] is held and seen[1] is None and detector.held_out_goods is None


class FakeRegistry:
    """``detector_class`` for plan_shared_fits: 'combo' fits 'a' and 'b'."""

    class Combo(NoisyMean):
        name = "combo"

        @classmethod
        def component_detectors(cls, hparams: Mapping[str, Any]) -> list[str]:
            return ["a", "b"]

    def detector_class(self, name: str) -> type[Detector]:
        return self.Combo if name == "combo" else NoisyMean


def test_the_plan_shares_between_a_composite_and_its_components_on_the_same_data(tmp_path: Path) -> None:
    tasks = [
        Task("combo", "cat", seed=0),
        Task("a", "cat", seed=0),
        Task("a", "cat", seed=1),  # another seed: nothing to share
        Task("c", "cat", seed=0),  # not a component
        Task("b", "other", seed=0),  # another category
        Task("combo", "cat", seed=2),  # no component of its seed in the run
        Task("b", "cat", seed=0, crop="8x8"),  # other options
    ]
    planned = plan_shared_fits(tasks, FakeRegistry(), tmp_path)
    shared = [(t.detector, t.seed) for t in planned if t.shared_fits == str(tmp_path)]
    assert shared == [("a", 0), ("combo", 0)]
    assert [(t.detector, t.category, t.seed) for t in planned] == [
        ("a", "cat", 0),
        ("a", "cat", 1),
        ("c", "cat", 0),
        ("b", "other", 0),
        ("combo", "cat", 2),
        ("b", "cat", 0),
        ("combo", "cat", 0),  # after the components it loads
    ]
    assert plan_shared_fits([Task("a", "cat"), Task("c", "cat")], FakeRegistry(), tmp_path) == [Task("a", "cat"), Task("c", "cat")]
