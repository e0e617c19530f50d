"""benchmarks/gpu_measurements.py, the script for the GPU timings, checked on the CPU in its quick mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def script(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("gpu_measurements")


def test_quick_mode_times_training_and_inference(script: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("autovi_plugin_draem")
    pytest.importorskip("autovi_plugin_efficientad")
    pytest.importorskip("autovi_plugin_patchcore")
    out = tmp_path / "report.md"
    text = script.main(
        [
            "--device",
            "cpu",
            "--quick",
            "--detector",
            "draem",
            "--detector",
            "efficientad",
            "--detector",
            "patchcore",
            "--category",
            "clip_assembly",
            "--size",
            "64",
            "--train-images",
            "8",
            "--data",
            str(tmp_path / "data"),
            "--output",
            str(out),
        ]
    )
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.split("|")[1:2] and line.split("|")[1].strip() in script.PLANS]
    assert [r.split("|")[2].strip() for r in rows] == ["epoch", "training step", "whole fit"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[4]) > 0 and float(cells[5]) > 0 and float(cells[7]) > 0  # img/s, batch-1 ms, peak RSS MB
        # s/unit: a difference of two fits, so on a loaded machine the few extra quick-mode units can vanish in
        # the noise; the script then prints no number and says so, never a negative time.
        assert float(cells[3]) > 0 if cells[3] != "-" else "lost in the timing noise" in cells[8], row
    assert "EfficientAD-S fused forward, 256 x 256, batch 1" in text and "Device: CPU" in text
    assert "synthetic `clip_assembly` (8 training images, 64 px)" in text
    assert len(list((tmp_path / "data" / "clip_assembly" / "train" / "good").iterdir())) == 8


def test_every_plan_names_real_paper_hyperparameters(script: ModuleType) -> None:
    """The full (GPU) mode builds each detector's paper profile with the plan's overrides: check they exist."""
    from autovi_core.registry import get_registry

    registry = get_registry()
    for name, plan in script.PLANS.items():
        if name not in registry.detectors:
            continue
        detector = registry.create_detector(name, "paper", device="cpu", **plan.fixed, **{knob: 3 for knob, _ in plan.knobs})
        assert all(detector.hparams[knob] == 3 for knob, _ in plan.knobs)


def test_backbones_are_lite0_or_the_papers_untrained(script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --random-weights the pretrained detectors run on Lite0; with it, on the paper's backbone and a weights file."""
    pytest.importorskip("autovi_plugin_patchcore")
    pytest.importorskip("autovi_plugin_efficientad")
    made = []
    monkeypatch.setattr(script, "random_weights_file", lambda backbone, folder: made.append(backbone) or folder / f"{backbone}.pth")
    assert script.backbone_overrides("patchcore", script.PLANS["patchcore"], None) == (script.LITE0, script.LITE0_NOTE)
    assert script.backbone_overrides("draem", script.PLANS["draem"], tmp_path) == ({}, "")
    overrides, note = script.backbone_overrides("patchcore", script.PLANS["patchcore"], tmp_path)
    assert overrides == {"backbone": "wide_resnet50_2", "weights": str(tmp_path / "wide_resnet50_2.pth")}
    assert "untrained" in note
    overrides, _ = script.backbone_overrides("efficientad", script.PLANS["efficientad"], tmp_path)
    assert overrides["backbone"] == "wide_resnet101_2" and made == ["wide_resnet50_2", "wide_resnet101_2"]


def test_one_run_times_the_whole_fit_once(script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--one-run: a single run at the low unit count, no warm-up, for every detector; its whole fit is the bound."""
    calls = []

    def fake_run(detector, data, profile, overrides, device):  # type: ignore[no-untyped-def]
        calls.append(dict(overrides))
        timing = {"fit_s": 12.5, "predict_images_per_s": 3.0, "batch1_latency_ms": 7.0, "peak_gpu_mb": None}
        return {"timing": timing}

    monkeypatch.setattr(script, "run_once", fake_run)
    settings = {**script.FULL, "one_run": True}
    rows = script.measure_detector("dsr", script.Data("clip_assembly"), "cpu", settings)
    assert calls == [{"stage1_epochs": 1, "stage2_epochs": 1, "stage3_epochs": 1}]
    assert [(row["unit"], row["per_unit_s"]) for row in rows] == [
        ("whole fit at 1 stage-1 epoch, 1 stage-2 epoch, 1 stage-3 epoch (no warm-up)", 12.5)
    ]
    calls.clear()
    rows = script.measure_detector("padim", script.Data("clip_assembly"), "cpu", settings)  # no knobs: one run too
    assert len(calls) == 1 and rows[0]["unit"] == "whole fit at its only setting (no warm-up)"
