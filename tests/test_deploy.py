"""Saved models on the line: ``autovi run --save-models``, ``autovi fit``, ``autovi predict`` and model
folders (docs/deploy.md), with the bad inputs of docs/bad-input.md that concern them.

The parity tests run a small synthetic experiment, predict its test split from the saved model folder
and require the run's image scores back (every installed detector gets the same check from the
conformance kit, ``DetectorConformance.test_model_folder_predicts_as_the_detector``). The rest fits
``pixel_gaussian`` on tiny generated images.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image

from autovi_core import experiment
from autovi_core.datasets.synthetic import SyntheticCounts, SyntheticDataset
from autovi_core.deploy import expand_inputs, fit_model, holdout_split
from autovi_core.errors import DataError, PluginError
from autovi_core.model_folder import CALIBRATION_FILE, load_model_folder
from autovi_core.registry import get_registry

SHAPE = (32, 32)
SMALL = SyntheticCounts(train=12, test_good=4, per_defect=2, multiple=1)


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def part(seed: int, shape: tuple[int, int] = SHAPE, defect: bool = False) -> np.ndarray:
    """A 'part': a fixed pattern plus a little seeded noise; ``defect`` paints a bright square."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], axis=2).astype(np.float64)
    image = base + np.random.default_rng(seed).normal(0, 3, (*shape, 3))
    if defect:
        image[8:16, 8:16] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    for i in range(10):
        save(folder / f"{i:03d}.png", part(i))
    return folder


@pytest.fixture(scope="module")
def model(good_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pixel_gaussian`` fitted on 10 good parts (1 held out), through the Python API of ``autovi fit``."""
    out = tmp_path_factory.mktemp("models") / "model"
    return fit_model(detector="pixel_gaussian", root=good_folder, category=None, output=out, overrides={"size": "16"}, device="cpu")


# --- the run's numbers, from a model folder ---------------------------------------------------------
SMALLER = {"pixel_gaussian": [], "patchcore": ["--set", "resize=64"], "padim": ["--set", "resize=64", "--set", "d=32"]}
"""Settings that keep each parity run to seconds on a CPU (the fast profiles' inputs are 128 pixels)."""


@pytest.mark.parametrize("detector", list(SMALLER))
def test_predict_on_a_saved_run_reproduces_its_scores(
    detector: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``autovi run --save-models`` writes the model with the calibration the run used (the record's
    thresholds), and ``autovi predict`` on the test split gives the run's image scores back."""
    monkeypatch.setitem(get_registry().datasets, "synthetic", SyntheticDataset(size=64, counts=SMALL))
    seen: dict[str, float] = {}
    calibrated: list[str] = []
    original = experiment._predict_by_size

    def recording(detector_, category, samples, images):  # type: ignore[no-untyped-def]
        scores, maps = original(detector_, category, samples, images)
        seen.update({str(s.path): float(v) for s, v in zip(samples, scores) if s.split == "test"})
        calibrated.extend(str(s.path) for s in samples if s.split != "test")
        return scores, maps

    monkeypatch.setattr(experiment, "_predict_by_size", recording)
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    args = [
        "run",
        "-d",
        detector,
        "-c",
        "clip_assembly",
        "--root",
        str(root),
        "--in-process",
        "--save-models",
        *SMALLER[detector],
        "--output",
        str(out),
    ]
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    record = json.loads((out / "results.jsonl").read_text())
    assert record["model_dir"] == f"models/synthetic/clip_assembly/{detector}/seed0-fast"
    folder = out / record["model_dir"]
    info = json.loads((folder / CALIBRATION_FILE).read_text())
    assert info["calibration"]["images"] == record["split"]["calibration"] == 1
    assert len(calibrated) == 1  # the hold-out is predicted once, for the run's metrics and the model folder alike
    for level, rates in record["metrics"]["calibrated"].items():
        assert info["calibration"]["thresholds"][level] == pytest.approx(rates["threshold"], rel=1e-9)
    assert info["plugin"]["distribution"] == get_registry().distribution_of("detector", detector)
    assert info["geometry"]["image_size"] == [64, 64] and info["provenance"] == record["provenance"]

    predictions = tmp_path / "predictions"
    code, stdout, err = run_cli(
        capsys, monkeypatch, "predict", str(folder), str(root / "clip_assembly" / "test"), "--output", str(predictions)
    )
    assert code == 0, err
    got = {r["path"]: r for r in records(predictions)}
    assert set(got) == set(seen) and len(got) == record["split"]["test"]
    threshold = info["calibration"]["thresholds"]["0.99"]
    scale = max(1.0, max(abs(v) for v in seen.values()))
    for path, score in seen.items():
        assert got[path]["score"] == pytest.approx(score, rel=1e-5, abs=1e-6 * scale), path
        assert got[path]["verdict"] == ("defective" if got[path]["score"] > threshold else "good")
        assert got[path]["threshold"] == threshold and got[path]["error"] is None and got[path]["notes"] == []
    assert f"{len(seen)} image(s)" in stdout


# --- autovi fit ---------------------------------------------------------------------------------------
def test_holdout_is_seeded_and_keeps_one_image_each_side() -> None:
    assert holdout_split(1, 0.1, 0) == ([0], [])
    assert holdout_split(2, 0.1, 0)[1] and len(holdout_split(2, 0.1, 0)[0]) == 1
    assert len(holdout_split(40, 0.1, 3)[1]) == 4 and holdout_split(40, 0.1, 3) == holdout_split(40, 0.1, 3)
    assert holdout_split(40, 0.1, 3) != holdout_split(40, 0.1, 4)
    assert len(holdout_split(3, 0.99, 0)[0]) == 1
    assert holdout_split(10, 0.0, 0) == (list(range(10)), [])


def test_fit_on_a_folder_layout_category_then_predict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(12):
        save(tmp_path / "data" / "widget" / "train" / "good" / f"{i:03d}.png", part(i))
    save(tmp_path / "data" / "other" / "train" / "good" / "000.png", part(0))
    model_dir = tmp_path / "model"
    args = ["fit", "-d", "pixel_gaussian", "--root", str(tmp_path / "data"), "--category", "widget", "--set", "size=16"]
    code, stdout, err = run_cli(capsys, monkeypatch, *args, "--seed", "3", "--output", str(model_dir))
    assert code == 0, err
    assert "holding out 1 of 12 good images for calibration (seed 3" in err
    assert f"model: {model_dir}" in stdout and "calibrated image-score thresholds: 99%:" in stdout
    assert sorted(p.name for p in model_dir.iterdir()) == ["calibration.json", "config.json", "state.npz"]
    info = json.loads((model_dir / CALIBRATION_FILE).read_text())
    assert info["training"]["category"] == "widget" and info["training"]["images"] == 11
    assert info["calibration"]["paths"][0].startswith("train/good/")
    assert info["geometry"]["train_sizes"] == [{"size": [32, 32], "images": 11}]
    assert info["seed"] == 3 and info["api_version"].split(".")[0] == "1"

    images = tmp_path / "camera"
    save(images / "ok.png", part(100))
    save(images / "bad.png", part(101, defect=True))
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys, monkeypatch, "predict", str(model_dir), str(images / "*.png"), "--output", str(out), "--maps", "all"
    )
    assert code == 0, err
    by_name = {Path(r["path"]).name: r for r in records(out)}
    assert by_name["bad.png"]["verdict"] == "defective" and by_name["bad.png"]["score"] > by_name["ok.png"]["score"]
    assert by_name["ok.png"]["verdict"] == (
        "defective" if by_name["ok.png"]["score"] > info["calibration"]["thresholds"]["0.99"] else "good"
    )
    assert by_name["bad.png"]["maps"] == {"tiff": "tiff/bad.tiff", "png": "png/bad.png", "overlay": "overlay/bad.png"}
    assert Image.open(out / "tiff" / "bad.tiff").mode == "F" and Image.open(out / "png" / "bad.png").mode == "L"
    assert Image.open(out / "overlay" / "bad.png").size == (32, 32)
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [r["path"] for r in records(out)]
    assert rows[0].keys() == {"path", "score", "verdict", "threshold", "error", "notes"}
    code, _, err = run_cli(capsys, monkeypatch, "predict", str(model_dir), str(images), "--output", str(out), "--fail-on-defect")
    assert code == 1, err
    args = ["predict", str(model_dir), str(images / "ok.png"), "--output", str(out), "--fail-on-defect", "--threshold", "1e9"]
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0 and len(records(out)) == 1, err


def test_fit_on_a_plain_folder_and_thresholds(model: Path, good_folder: Path, tmp_path: Path) -> None:
    loaded = load_model_folder(model)
    calibration = loaded.calibration
    assert calibration["images"] == 1 and len(calibration["scores"]) == 1
    assert set(calibration["thresholds"]) == {"0.99", "0.95", "0.9"} and set(calibration["pixel_thresholds"]) == {"0.99", "0.95", "0.9"}
    assert calibration["map_min"] < calibration["map_max"]
    assert loaded.threshold("0.95")[0] == calibration["thresholds"]["0.95"] == loaded.threshold("95%")[0]
    assert loaded.threshold("2.5") == (2.5, "score threshold given on the command line")
    assert loaded.info["training"]["layout"] == "images" and loaded.detector.hparams["size"] == 16


def test_predict_streams_batches_and_names_maps_by_their_folder(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = tmp_path / "camera"
    for i in range(7):
        save(camera / ("left" if i % 2 else "right") / f"{i // 2:03d}.png", part(200 + i, defect=i == 3))
    save(camera / ".hidden" / "000.png", part(0))
    calls: list[int] = []
    detector_cls = get_registry().detector_class("pixel_gaussian")
    original = detector_cls.infer

    def counting(self, images, output_size):  # type: ignore[no-untyped-def]
        calls.append(len(images))
        return original(self, images, output_size)

    monkeypatch.setattr(detector_cls, "infer", counting)
    out = camera / "out"  # inside the input folder: its files are never taken as input
    for _ in range(2):
        code, _, err = run_cli(
            capsys, monkeypatch, "predict", str(model), str(camera), "--output", str(out), "--batch-size", "3", "--maps", "png"
        )
        assert code == 0, err
    assert calls == [3, 3, 1, 3, 3, 1]
    got = records(out)
    assert len(got) == 7 and sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        f"png/{side}/{i:03d}.png" for side, n in (("left", 3), ("right", 4)) for i in range(n)
    )
    assert [r["verdict"] for r in got if r["path"].endswith("left/001.png")] == ["defective"]


def test_expand_inputs_keys_files_folders_and_patterns(tmp_path: Path) -> None:
    for name in ("a/x.png", "b/x.png", "b/y.jpg"):
        save(tmp_path / name, part(0))
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    found = expand_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "*"), str(tmp_path / "a" / "x.png"), str(tmp_path / "none.png")])
    assert [key for _, key in found.items] == ["x.png", "x~2.png", "y.jpg"]
    assert found.warnings == [f"{tmp_path / 'none.png'}: no such file or folder"]


# --- bad input ----------------------------------------------------------------------------------------
def test_predict_goes_on_past_bad_images_with_notes_and_one_line_errors(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = tmp_path / "camera"
    save(camera / "a_good.png", part(300))
    save(camera / "b_grey.png", part(301), mode="L")
    save(camera / "c_rgba.png", part(302), mode="RGBA")
    save(camera / "d_large.png", part(303, shape=(48, 40)))
    full = save(camera / "e_truncated.png", part(304)).read_bytes()
    (camera / "e_truncated.png").write_bytes(full[: len(full) // 2])
    (camera / "f_text.png").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, monkeypatch, "predict", str(model), str(camera), "--output", str(out), "--maps", "tiff")
    assert code == 0, err
    got = {Path(r["path"]).name: r for r in records(out)}
    assert list(got) == ["a_good.png", "b_grey.png", "c_rgba.png", "d_large.png", "e_truncated.png", "f_text.png"]
    assert got["a_good.png"]["notes"] == [] and got["a_good.png"]["verdict"] in ("good", "defective")
    assert got["b_grey.png"]["notes"] == ["grayscale image: converted to RGB (grey replicated)"]
    assert got["c_rgba.png"]["notes"] == ["RGBA image: alpha dropped"]
    assert got["d_large.png"]["notes"] == [
        "image is 40x48, the model was trained on 32x32 images: resized by the detector to its working size as in training; map at 40x48"
    ]
    assert Image.open(out / "tiff" / "d_large.tiff").size == (40, 48)
    for name in ("e_truncated.png", "f_text.png"):
        message = got[name]["error"]
        assert message.startswith(f"{camera / name}: cannot be read as an image (") and "\n" not in message
        assert got[name]["score"] is None and got[name]["verdict"] is None and got[name]["maps"] == {}
        assert f"error: {message}" in err
    assert "6 image(s): " in stdout and "2 not predicted" in stdout
    code, _, _ = run_cli(capsys, monkeypatch, "predict", str(model), str(camera / "e_truncated.png"), "--output", str(out))
    assert code == 2
    code, _, _ = run_cli(capsys, monkeypatch, "predict", str(model), str(camera), "--output", str(out), "--fail-on-defect")
    assert code == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["{tmp}/empty"], "error: nothing to predict: {tmp}/empty: folder holds no images"),
        (["{tmp}/empty/*.png"], "error: nothing to predict: {tmp}/empty/*.png: pattern matched no image"),
        (["{tmp}/missing.png", "{tmp}/empty"], "error: nothing to predict: {tmp}/missing.png: no such file or folder; {tmp}/empty: folder"),
    ],
    ids=["empty-folder", "pattern-matching-nothing", "missing-file"],
)
def test_predict_with_nothing_to_predict_exits_2(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, inputs: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        capsys, monkeypatch, "predict", str(model), *[i.replace("{tmp}", str(tmp_path)) for i in inputs], "--output", str(out)
    )
    assert code == 2 and one_line(err) and message.replace("{tmp}", str(tmp_path)) in err.replace("\n", ""), err
    assert not out.exists() and not stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "abc"], "error: --threshold 'abc' refused: expects 0.99, 0.95, 0.9 (calibrated levels) or a score threshold"),
        (["--threshold", "nan"], "error: --threshold 'nan' refused: expects a finite number"),
        (["--maps", "jpeg"], "error: --maps 'jpeg' refused: expects one of 'none', 'tiff', 'png', 'overlay', 'all'"),
        (["--batch-size", "0"], "error: --batch-size 0 refused: expects an integer >= 1"),
        (["--device", "gpu"], "error: --device 'gpu' refused: expects auto, cpu, cuda or cuda:N"),
    ],
    ids=["threshold-not-a-number", "threshold-nan", "unknown-maps", "batch-size-0", "bad-device"],
)
def test_predict_refuses_bad_options_before_writing(
    model: Path,
    good_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, monkeypatch, "predict", str(model), str(good_folder), "--output", str(out), *args)
    assert code == 2 and one_line(err) and message in err, err
    assert not out.exists() and not stdout


def test_predict_without_calibration_needs_a_score_threshold(
    good_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    args = ["fit", "-d", "pixel_gaussian", "--root", str(good_folder), "--holdout", "0", "--set", "size=16", "--output", str(model_dir)]
    code, stdout, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0 and "--holdout 0: nothing held out, so no calibrated thresholds" in err, err
    assert "calibrated image-score thresholds" not in stdout
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, monkeypatch, "predict", str(model_dir), str(good_folder), "--output", str(out))
    assert code == 2 and one_line(err) and f"error: --threshold 0.99: {model_dir} has no calibrated thresholds" in err, err
    code, _, err = run_cli(
        capsys, monkeypatch, "predict", str(model_dir), str(good_folder), "--output", str(out), "--threshold", "1e9", "--maps", "png"
    )
    assert code == 0, err
    got = records(out)
    assert all(r["verdict"] == "good" for r in got)
    assert "no saved map normalisation (nothing held out): map scaled by its own min/max" in got[0]["notes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "nope"], "error: unknown detector 'nope'; valid: "),
        (["-d", "pixel_gaussian", "--set", "size=4"], "error: detector 'pixel_gaussian': --set size=4 refused: expects an integer >= 8"),
        (["-d", "pixel_gaussian", "--set", "coreset=1"], "error: detector 'pixel_gaussian' has no hyperparameter 'coreset'; valid: "),
        (["-d", "pixel_gaussian", "--holdout", "1"], "error: --holdout 1.0 refused: expects a number in [0, 1)"),
        (["-d", "pixel_gaussian", "--seed", "-1"], "error: --seed -1 refused: expects an integer in [0, 4294967295]"),
        (["-d", "pixel_gaussian", "--profile", "slow"], "error: --profile 'slow' refused: expects one of 'paper', 'fast'"),
        (
            ["-d", "segad"],
            "error: detector 'segad' is supervised: it needs labelled defective images, and autovi fit trains on good images only",
        ),
        (["-d", "pixel_gaussian", "--root", "{tmp}/nowhere"], "error: --root {tmp}/nowhere: not a folder"),
        (["-d", "pixel_gaussian", "--root", "{tmp}/empty"], "error: --root {tmp}/empty: holds no images (no .png, .jpg"),
        (
            ["-d", "pixel_gaussian", "--root", "{tmp}/layout"],
            "error: --root {tmp}/layout holds the folder-layout categories widget: choose one with --category",
        ),
        (
            ["-d", "pixel_gaussian", "--root", "{tmp}/layout", "-c", "gadget"],
            "error: unknown category 'gadget' for dataset 'folder' at {tmp}/layout; valid: widget",
        ),
        (["-d", "pixel_gaussian", "--output", "{tmp}/file.txt"], "error: --output {tmp}/file.txt: exists and is not a folder"),
        (
            ["-d", "pixel_gaussian", "--output", "{tmp}/layout"],
            "error: --output {tmp}/layout: a non-empty folder that is not a model folder",
        ),
        (["-d", "pixel_gaussian", "--root", "{tmp}/broken"], "error: {tmp}/broken/001.png: cannot be read as an image ("),
    ],
    ids=[
        "unknown-detector",
        "set-outside-domain",
        "set-unknown-key",
        "holdout-1",
        "negative-seed",
        "unknown-profile",
        "supervised",
        "root-missing",
        "root-without-images",
        "layout-without-category",
        "unknown-category",
        "output-is-a-file",
        "output-is-another-folder",
        "unreadable-training-image",
    ],
)
def test_fit_refusals_are_one_line_and_write_nothing(
    good_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    save(tmp_path / "layout" / "widget" / "train" / "good" / "000.png", part(0))
    (tmp_path / "file.txt").write_text("x")
    save(tmp_path / "broken" / "000.png", part(0))
    save(tmp_path / "broken" / "002.png", part(2))
    (tmp_path / "broken" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    defaults = [] if "--root" in args else ["--root", str(good_folder)]
    defaults += [] if "--output" in args else ["--output", str(tmp_path / "model")]
    code, stdout, err = run_cli(capsys, monkeypatch, "fit", *args, *defaults)
    assert code == 2, err
    *before, last = err.strip().splitlines()  # the hold-out is announced before images are read
    assert message.replace("{tmp}", str(tmp_path)) in last and "Traceback" not in err, err
    assert before == [] or (len(before) == 1 and before[0].startswith("holding out")), err
    assert not (tmp_path / "model").exists() and not stdout


def _edit_info(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        info = json.loads((folder / CALIBRATION_FILE).read_text())
        change(info)
        (folder / CALIBRATION_FILE).write_text(json.dumps(info))

    return mutate


def _other_detector(info: dict) -> None:
    info["detector"] = "gone_detector"
    info["plugin"] = {"name": "gone_detector", "distribution": "autovi-plugin-gone-detector", "version": "1.2.0"}


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda m: (m / CALIBRATION_FILE).unlink(), DataError, "calibration.json: not found; {model} is not a model folder"),
        (lambda m: (m / CALIBRATION_FILE).write_text("{"), DataError, "calibration.json: damaged (Expecting"),
        (lambda m: (m / CALIBRATION_FILE).write_text("[]"), DataError, "calibration.json: not a model's calibration file (no detector"),
        (
            _edit_info(lambda i: i.update(api_version="2.0", autovi_core="2.0.0")),
            DataError,
            "{model}: saved by autovi-core 2.0.0 (contract API 2.0); this autovi-core",
        ),
        (
            _edit_info(_other_detector),
            PluginError,
            "{model}: its detector 'gone_detector' is not installed: pip install autovi-plugin-gone-detector==1.2.0",
        ),
        (
            _edit_info(lambda i: i["calibration"].update(thresholds=[1])),
            DataError,
            "calibration.json: damaged (thresholds must map levels to numbers)",
        ),
        (lambda m: (m / "state.npz").write_bytes(b"x"), DataError, "state.npz: missing or not a saved state"),
        (lambda m: (m / "config.json").unlink(), DataError, "config.json: not a saved pixel_gaussian detector"),
        (lambda m: __import__("shutil").rmtree(m), DataError, "{model}: model folder not found"),
    ],
    ids=[
        "no-calibration",
        "damaged-calibration",
        "calibration-not-an-object",
        "other-api-major",
        "plugin-not-installed",
        "damaged-thresholds",
        "damaged-state",
        "no-config",
        "no-folder",
    ],
)
def test_model_folder_refusals(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mutate: Callable[[Path], None],
    error: type[Exception],
    message: str,
) -> None:
    import shutil

    copy = shutil.copytree(model, tmp_path / "model")
    mutate(copy)
    expected = message.replace("{model}", str(copy))
    with pytest.raises(error) as info:
        load_model_folder(copy)
    assert expected in str(info.value) and "\n" not in str(info.value), info.value
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, monkeypatch, "predict", str(copy), str(tmp_path), "--output", str(out))
    assert code == 2 and one_line(err) and expected in err.replace("\n", ""), err
    assert not out.exists() and not stdout


def test_model_folder_of_a_broken_plugin_names_its_state(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from autovi_core.plugins import PluginRecord

    copy = shutil.copytree(model, tmp_path / "model")
    _edit_info(_other_detector)(copy)
    broken = PluginRecord("plugin", "gone_detector", "autovi-plugin-gone-detector", "1.0.0", "incompatible", "requires autovi-core>=2")
    monkeypatch.setattr(get_registry(), "records", [*get_registry().records, broken])
    with pytest.raises(
        PluginError, match="its detector 'gone_detector' comes from autovi-plugin-gone-detector, which is incompatible here"
    ):
        load_model_folder(copy)


def test_predict_refuses_an_output_that_is_a_file(
    model: Path, good_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.txt"
    out.write_text("x")
    code, stdout, err = run_cli(capsys, monkeypatch, "predict", str(model), str(good_folder), "--output", str(out))
    assert code == 2 and one_line(err) and f"error: --output {out}: exists and is not a folder" in err, err
    assert out.read_text() == "x" and not stdout


def test_pattern_matches_are_keyed_under_the_pattern_folder(tmp_path: Path) -> None:
    for name in ("test/good/000.png", "test/scratch/000.png"):
        save(tmp_path / name, part(0))
    found = expand_inputs([str(tmp_path / "test" / "**" / "*.png")])
    assert [key for _, key in found.items] == ["good/000.png", "scratch/000.png"] and not found.warnings
