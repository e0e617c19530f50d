"""What a run keeps: the sampled exact sPRO curve and the per-experiment file beside results.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from sklearn.metrics import roc_auc_score
from test_metrics_reference import random_case

from autovi_core.dataset import DefectConfig
from autovi_core.experiment_file import (
    FORMAT,
    build_content,
    experiment_path,
    read_experiment_file,
    write_experiment_file,
)
from autovi_core.image_io import read_map
from autovi_core.metrics.evaluate import evaluate_localisation
from autovi_core.metrics.spro import CURVE_FPRS, auc_from_curve, auc_spro, auc_spro_and_curve, spro_curve

RUN = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--in-process"]
EXPERIMENT = "experiments/synthetic/clip_assembly/pixel_gaussian/seed0-fast.json"


def chord_error_bound(fpr: np.ndarray, spro: np.ndarray) -> float:
    """Largest possible |area of the sampled polyline - area of the exact curve| over [0, 1].

    Between two kept vertices the exact curve is monotone, so it stays in the box the two span;
    the chord's area and the curve's differ by at most half that box."""
    return float(np.sum(0.5 * np.diff(fpr) * np.diff(spro)))


# ---------------------------------------------------------------- the sampled curve
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["float32", "uint8"])
@pytest.mark.parametrize("grid", [CURVE_FPRS, (0.001, 0.01, 0.2, 0.5, 1.0)], ids=["default-grid", "coarse-grid"])
def test_sampled_curve_vertices_lie_on_the_exact_curve(seed: int, kind: str, grid: tuple[float, ...]) -> None:
    rng = np.random.default_rng(seed)
    levels = None if kind == "float32" else 50
    maps, channels = random_case(rng, n_images=6, shape=(30, 40), dtype=np.dtype(kind), levels=levels)
    areas, curve = auc_spro_and_curve(maps, channels, fprs=grid)
    assert areas == auc_spro(maps, channels)  # bit-identical AUCs from the same sweep
    fx, fy = spro_curve(maps, channels)
    sx, sy = curve
    assert len(sx) == len(sy) <= len(grid) + 2
    if kind == "float32":
        assert len(fx) > len(grid) + 2  # the sampling does drop vertices
    # every sampled point is a vertex of the full curve
    vertices = {(float(x), float(y)) for x, y in zip(fx, fy)}
    assert all((float(x), float(y)) in vertices for x, y in zip(sx, sy))
    assert np.all(np.diff(sx) >= 0) and np.all(np.diff(sy) >= 0)
    assert (sx[0], sy[0]) == (fx[0], fy[0]) and sx[0] == 0.0
    assert (sx[-1], sy[-1]) == (fx[-1], fy[-1]) and sx[-1] == 1.0
    # for each grid value, the first vertex at or past it is kept
    for g in grid:
        first = int(np.argmax(fx >= g))
        assert any(x == fx[first] and y == fy[first] for x, y in zip(sx, sy)), g
    error = abs(auc_from_curve(sx, sy, 1.0) - areas["1.0"])
    assert error <= chord_error_bound(sx, sy) + 1e-12


def test_sampled_curve_refuses_a_bad_grid_and_is_none_when_undefined() -> None:
    maps, channels = random_case(np.random.default_rng(0))
    for grid in ((), (0.5, 0.1), (0.1, float("nan"))):
        with pytest.raises(ValueError, match="FPR grid"):
            auc_spro_and_curve(maps, channels, fprs=grid)
    areas, curve = auc_spro_and_curve([np.ones((4, 4), np.float32)], [[]])
    assert curve is None and all(np.isnan(v) for v in areas.values())


@pytest.mark.parametrize("mode", ["exact", "official"])
def test_evaluate_localisation_adds_only_the_exact_curve(mode: str) -> None:
    rng = np.random.default_rng(5)
    maps, channels = random_case(rng, n_images=6, shape=(20, 20), dtype=np.dtype("uint8"), levels=30)
    types = [DefectConfig("spot", 255, 0.5, True), DefectConfig("scratch", 254, 10, False)]
    gt, arrays = {}, {}
    for i, (m, chans) in enumerate(zip(maps, channels)):
        key = f"good/{i:03d}" if not chans else f"bad/{i:03d}"
        arrays[key] = m
        gt[key] = [(mask, types[k % 2]) for k, (mask, _) in enumerate(chans)]
    plain = evaluate_localisation(arrays, gt, mode=mode)
    with_curve = evaluate_localisation(arrays, gt, mode=mode, curve_fprs=CURVE_FPRS)
    curve = with_curve.pop("spro_curve")
    assert "spro_curve" not in plain and with_curve == plain
    assert curve["mode"] == "exact" and curve["fpr"][0] == 0.0 and curve["fpr"][-1] == 1.0
    exact = evaluate_localisation(arrays, gt, mode="exact")["auc_spro"]["1.0"]
    fpr, spro = np.array(curve["fpr"]), np.array(curve["spro"])
    assert abs(auc_from_curve(fpr, spro, 1.0) - exact) <= chord_error_bound(fpr, spro) + 1e-12


# ---------------------------------------------------------------- the file on its own
def small_content(**changes: object) -> dict:
    args = dict(
        detector="det",
        dataset="synthetic",
        category="cat",
        seed=3,
        profile="fast",
        supervised=False,
        root="/data",
        keys=["good/000", "bad/000"],
        labels=[0, 1],
        scores=[0.25, float("nan")],
        calibration_scores=[0.1, 0.3, 0.2],
        calibration_map_maxima=[1.0, 3.0, 2.0],
        test_map_range=(0.0, 4.0),
        spro_curve={"fpr": np.array([0.0, 1.0]), "spro": np.array([0.5, 1.0]), "mode": "exact"},
        maps=None,
    )
    return build_content(**(args | changes))


def test_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    relative = write_experiment_file(tmp_path, small_content())
    assert relative == experiment_path("synthetic", "cat", "det", 3, "fast") == "experiments/synthetic/cat/det/seed3-fast.json"
    record = {"detector": "det", "dataset": "synthetic", "category": "cat", "seed": 3, "profile": "fast", "experiment_file": relative}
    content, reason = read_experiment_file(tmp_path, record)
    assert reason is None and content["format"] == FORMAT
    assert content["images"] == [{"key": "good/000", "label": 0, "score": 0.25}, {"key": "bad/000", "label": 1, "score": None}]
    assert content["thresholds"] == {"0.99": 0.3, "0.95": 0.3, "0.9": 0.3}
    assert content["map_thresholds"] == {"0.99": 3.0, "0.95": 3.0, "0.9": 3.0}
    assert content["spro_curve"] == {"fpr": [0.0, 1.0], "spro": [0.5, 1.0], "mode": "exact"}
    (tmp_path / "results.jsonl").touch()  # the results file may stand for its run folder
    assert read_experiment_file(tmp_path / "results.jsonl", record).content == content
    # a second write replaces the file; a failing one leaves the old file and no temporary file
    write_experiment_file(tmp_path, small_content(calibration_scores=None, calibration_map_maxima=None))
    assert read_experiment_file(tmp_path, record).content["thresholds"] is None

    def full_disk(*args: object) -> None:
        raise OSError("disk full")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", full_disk)
        with pytest.raises(OSError, match="disk full"):
            write_experiment_file(tmp_path, small_content())
    assert read_experiment_file(tmp_path, record).content["thresholds"] is None
    assert [p.name for p in (tmp_path / relative).parent.iterdir()] == ["seed3-fast.json"]


def test_reading_tolerates_missing_damaged_and_foreign_files(tmp_path: Path) -> None:
    relative = write_experiment_file(tmp_path, small_content())
    record = {"detector": "det", "category": "cat", "seed": 3, "experiment_file": relative}
    file = tmp_path / relative

    def reason(rec: dict = record) -> str:
        content, why = read_experiment_file(tmp_path, rec)
        assert content is None
        return why

    assert "names no experiment file" in reason({"status": "failed"})
    assert "not a path inside the run folder" in reason(record | {"experiment_file": "../elsewhere.json"})
    assert "not a path inside the run folder" in reason(record | {"experiment_file": str(file)})
    assert "belongs to another experiment" in reason(record | {"seed": 4})
    file.write_text('{"format": "autovi-experiment/1", "detector": "det"')
    assert "damaged (not valid JSON)" in reason()
    file.write_bytes(b"\xff\xfe")
    assert "damaged (not valid JSON)" in reason()
    file.write_text("[1, 2]")
    assert "not a JSON object" in reason()
    file.write_text('{"format": "autovi-experiment/99"}')
    assert "format 'autovi-experiment/99'" in reason()
    file.write_text('{"format": "autovi-experiment/1"}')
    assert "lacks detector" in reason()
    file.unlink()
    assert "file not found" in reason()


# ---------------------------------------------------------------- a real run
def test_run_keeps_one_file_per_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, monkeypatch, *RUN, "--save-maps", "--output", str(out))
    assert code == 0, err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["experiment_file"] == EXPERIMENT
    assert "spro_curve" not in record["metrics"]
    content, reason = read_experiment_file(out, record)
    assert reason is None
    assert {k: content[k] for k in ("detector", "dataset", "category", "seed", "profile")} == {
        k: record[k] for k in ("detector", "dataset", "category", "seed", "profile")
    }
    assert content["supervised"] is record["supervised"] is False
    assert (Path(content["root"]) / "clip_assembly").is_dir() and Path(content["root"]).is_absolute()

    images = content["images"]
    assert len(images) == record["split"]["test"] and len({i["key"] for i in images}) == len(images)
    assert all(i["label"] == (0 if i["key"].startswith("good/") else 1) for i in images)
    labels, scores = [i["label"] for i in images], [i["score"] for i in images]
    assert roc_auc_score(labels, scores) == pytest.approx(record["metrics"]["image_auroc"], abs=1e-12)

    calibrated = record["metrics"]["calibrated"]
    assert len(content["calibration_scores"]) == record["split"]["calibration"] > 0
    assert content["thresholds"] == {level: calibrated[level]["threshold"] for level in calibrated}
    # pixel_gaussian's image score is its map's maximum, so the map thresholds are the same numbers
    stems = [i["key"] for i in images[:5]]
    saved = out / content["maps"] / "float"
    assert [float(read_map(saved / f"{k}.tiff").max()) for k in stems] == [i["score"] for i in images[:5]]
    assert content["map_thresholds"] == content["thresholds"]

    assert content["maps"] == "maps/pixel_gaussian/clip_assembly/seed0"
    scaling = json.loads((out / content["maps"] / "png_scaling.json").read_text())
    assert content["map_range"] == {"low": scaling["min"], "high": scaling["max"]}

    curve = content["spro_curve"]
    fpr, spro = np.array(curve["fpr"]), np.array(curve["spro"])
    assert curve["mode"] == "exact" and len(fpr) <= len(CURVE_FPRS) + 2
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and np.all(np.diff(fpr) >= 0) and np.all(np.diff(spro) >= 0)
    bound = chord_error_bound(fpr, spro)
    assert bound < 0.01
    assert abs(auc_from_curve(fpr, spro, 1.0) - record["metrics"]["auc_spro"]["1.0"]) <= bound + 1e-12
    assert not [p for p in (out / "experiments").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_resume_rewrites_the_file_of_a_rerun_experiment_the_same_in_and_out_of_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    child = [a for a in RUN if a != "--in-process"]  # first in the executor's child process, then in this one
    assert run_cli(capsys, monkeypatch, *child, "--output", str(out))[0] == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    first = read_experiment_file(out, record).content
    assert first["maps"] is None
    # the experiment failed instead, and its file is damaged: --resume runs it again
    failed = {k: record[k] for k in ("detector", "dataset", "category", "seed", "profile")} | {"status": "failed", "error": "x"}
    (out / "results.jsonl").write_text(json.dumps(failed) + "\n")
    (out / EXPERIMENT).write_text("{damaged")
    assert read_experiment_file(out, record).reason.endswith("damaged (not valid JSON)")
    assert run_cli(capsys, monkeypatch, *RUN, "--resume", "--output", str(out))[0] == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert "experiment_file" not in records[0] and records[1]["experiment_file"] == EXPERIMENT
    assert read_experiment_file(out, records[0]).reason.startswith("the record names no experiment file")
    assert read_experiment_file(out, records[1]).content == first


def test_run_task_without_an_output_folder_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autovi_core.experiment import Task, run_task

    monkeypatch.chdir(tmp_path)
    record = run_task(Task(detector="pixel_gaussian", category="clip_assembly"))
    assert record["status"] == "ok" and "experiment_file" not in record and "spro_curve" not in record["metrics"]
    assert list(tmp_path.iterdir()) == []
