"""benchmarks/training_steps.py: the step clock, each plan's steps per unit against whole epochs, the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture
def script(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("training_steps")


def test_clock_tells_kinds_apart_and_counts_only_adjacent_intervals(script: ModuleType) -> None:
    """Two modules under one optimiser and a second optimiser: three kinds; an interval only between
    two directly consecutive steps of a kind; the stop comes at the wanted interval count."""
    torch.manual_seed(0)
    a, b, c = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    shared = torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)
    alone = torch.optim.SGD(c.parameters(), lr=0.1)
    x = torch.rand(4, 2)

    def step(module: torch.nn.Module, optimiser: torch.optim.Optimizer) -> None:
        optimiser.zero_grad(set_to_none=True)
        module(x).sum().backward()
        optimiser.step()

    with script.StepClock() as clock:
        for module, optimiser in [(a, shared), (a, shared), (b, shared), (a, shared), (a, shared), (a, shared), (c, alone)]:
            step(module, optimiser)
    assert clock.steps == {0: 5, 1: 1, 2: 1}
    assert [len(clock.intervals(kind)) for kind in range(3)] == [3, 0, 0]
    assert all(t > 0 for t in clock.intervals(0)) and clock.first[0] < clock.first[1] < clock.first[2]
    with script.StepClock(kind=0, stop_after=2) as clock, pytest.raises(script.EnoughSteps):
        for _ in range(5):
            step(a, shared)
    assert clock.steps[0] == 3
    step(a, shared)  # the hook is gone after the block
    assert clock.steps[0] == 3


# One unit of each plan at a small setting: the detector, its overrides, and which plans it checks.
WHOLE_UNITS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("draem", {"epochs": 1, "image_size": 64, "samples_per_epoch": 20, "batch_size": 6}, ["draem"]),
    ("glass", {"epochs": 1, "resize": 64, "batch_size": 4, "backbone": "tf_efficientnet_lite0"}, ["glass"]),
    ("supersimplenet", {"epochs": 1, "resize": 64, "batch_size": 4, "backbone": "tf_efficientnet_lite0"}, ["supersimplenet"]),
    ("efficientad", {"steps": 3, "teacher_steps": 2, "image_size": 64, "model_size": "small"}, ["efficientad"]),
    (
        "dsr",
        {
            "image_size": 64,
            "stage1_epochs": 1,
            "stage2_epochs": 1,
            "stage3_epochs": 1,
            "stage1_samples_per_epoch": 12,
            "stage2_samples_per_epoch": 9,
            "stage3_samples_per_epoch": 16,
            "batch_size": 4,
        },
        ["dsr-stage1", "dsr-stage2", "dsr-stage3"],
    ),
    (
        "cflow",
        {"meta_epochs": 1, "sub_epochs": 2, "image_size": 64, "backbone": "tf_efficientnet_lite0"},
        ["cflow-flow1", "cflow-flow2", "cflow-flow3"],
    ),
]


@pytest.mark.parametrize(("detector", "overrides", "plans"), WHOLE_UNITS, ids=[row[0] for row in WHOLE_UNITS])
def test_steps_per_unit_match_a_whole_unit(script: ModuleType, detector: str, overrides: dict[str, Any], plans: list[str]) -> None:
    """Each plan's count of steps in one unit equals the steps its kind takes in a whole fit of one unit."""
    pytest.importorskip(f"autovi_plugin_{detector}")
    from autovi_core.registry import get_registry

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(7)]
    model = get_registry().create_detector(detector, "fast", device="cpu", **overrides)
    with script.StepClock() as clock:
        model.fit(images)
    hp = dict(model.hparams)
    for name in plans:
        plan = script.STEP_PLANS[name]
        units = hp[plan.units] if plan.unit == "training step" else 1
        assert clock.steps[plan.kind] == units * plan.steps_per_unit(hp, len(images), model), name
    assert len(clock.steps) == max(script.STEP_PLANS[name].kind for name in plans) + 1


def test_report_of_a_real_fit_in_a_child_process(script: ModuleType, tmp_path: Path) -> None:
    """The whole script on the cheapest plan: a child process fits SuperSimpleNet's paper profile
    until two step intervals are timed, and the report's unit time is the step x the steps per unit."""
    pytest.importorskip("autovi_plugin_supersimplenet")
    out = tmp_path / "steps.md"
    text = script.main(
        ["--plan", "supersimplenet", "--size", "64", "--train-images", "10", "--data", str(tmp_path / "data"), "--output", str(out)]
    )
    assert out.read_text() == text
    row = next(line for line in text.splitlines() if line.startswith("| supersimplenet (epoch)"))
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    images, step, steps, unit, units, set_up, peak = cells[1:8]
    assert int(images) == 9  # the training split after the calibration hold-out
    assert int(steps) == 1 and units == "300"  # 9 images in batches of 32; the paper's 300 epochs
    assert float(unit) == pytest.approx(float(step.split()[0]), abs=0.051)
    assert float(set_up) > 0 and float(peak.replace(",", "")) > 100
    assert "Lite0" in cells[8] and "Device: CPU" in text
