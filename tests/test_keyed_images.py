"""Images carry their category-relative paths from the dataset through the runner to detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from autovi_core import Capabilities, Detector, KeyedImages, Prediction, image_paths
from autovi_core.dataset import select_images
from autovi_core.datasets.autovi import read_autovi_category
from autovi_core.datasets.synthetic import SyntheticCounts, generate_category
from autovi_core.experiment import Task, run_task
from autovi_core.registry import Registry

TINY = SyntheticCounts(train=4, test_good=2, per_defect=1, multiple=1)


def test_keyed_images_are_lists_whose_subsets_keep_paths() -> None:
    images = KeyedImages([np.full((2, 2, 3), i, np.uint8) for i in range(3)], ["a.png", "b.png", "c.png"])
    assert isinstance(images, list) and len(images) == 3 and image_paths(images) == ["a.png", "b.png", "c.png"]
    chosen = select_images(images, [2, 0])
    assert image_paths(chosen) == ["c.png", "a.png"] and int(chosen[0][0, 0, 0]) == 2
    assert image_paths(select_images([images[0]], [0])) is None  # plain lists stay plain
    assert image_paths(images[:2]) is None
    with pytest.raises(ValueError, match="3 images but 2 paths"):
        KeyedImages(list(images), ["a.png", "b.png"])


def test_category_images_know_their_paths(tmp_path: Path) -> None:
    folder = generate_category(tmp_path, "clip_assembly", size=32, counts=TINY)
    category = read_autovi_category(folder, dataset="synthetic", name="clip_assembly", native_size=(32, 32))
    images = category.load_images(category.test)
    assert image_paths(images) == [s.path.relative_to(folder).as_posix() for s in category.test]
    assert "test/missing_screw/000.png" in image_paths(images)


class Recorder(Detector):
    """Remembers the paths it is given."""

    name = "recorder"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "fast": {}}
    capabilities = Capabilities()
    seen: ClassVar[dict[str, list[Any]]] = {}

    def learn(self, images, labelled):  # type: ignore[no-untyped-def]
        Recorder.seen["fit"] = [image_paths(images)]

    def infer(self, images, output_size):  # type: ignore[no-untyped-def]
        Recorder.seen.setdefault("predict", []).append(image_paths(images))
        return Prediction(scores=np.arange(len(images), dtype=float), maps=np.zeros((len(images), *output_size)))

    def state_dict(self):  # type: ignore[no-untyped-def]
        return {}

    def load_state_dict(self, state):  # type: ignore[no-untyped-def]
        pass


def test_runner_gives_detectors_the_image_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_category(tmp_path, "clip_assembly", size=32, counts=TINY)
    registry = Registry()
    monkeypatch.setattr(registry, "detector_class", lambda name: Recorder)
    Recorder.seen.clear()
    record = run_task(Task(detector="recorder", category="clip_assembly", root=str(tmp_path), device="cpu"), registry)
    assert record["status"] == "ok"
    (fitted,) = Recorder.seen["fit"]
    assert fitted and all(p.startswith("train/good/") for p in fitted)
    predicted = Recorder.seen["predict"]
    assert all(paths is not None for paths in predicted)
    assert {p for paths in predicted for p in paths} >= {"test/good/000.png", "test/misplaced_clip/000.png"}
