"""benchmarks/gpu_measurements.py, the script for the GPU timings, checked on the CPU in its quick mode."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_measurements.py"


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_measurements", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_mode_times_training_and_inference(tmp_path: Path) -> None:
    pytest.importorskip("autovi_plugin_draem")
    pytest.importorskip("autovi_plugin_efficientad")
    script = load_script()
    out = tmp_path / "report.md"
    text = script.main(["--device", "cpu", "--quick", "--detector", "draem", "--detector", "efficientad",
                        "--category", "clip_assembly", "--output", str(out)])
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| draem") or line.startswith("| efficientad")]
    assert [r.split("|")[2].strip() for r in rows] == ["epoch", "training step"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[3]) > 0 and float(cells[4]) > 0 and float(cells[5]) > 0  # s/unit, img/s, batch-1 ms
    assert "EfficientAD-S fused forward, 256 x 256, batch 1" in text and "Device: CPU" in text
