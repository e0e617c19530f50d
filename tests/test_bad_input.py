"""Bad input a user can give autovi, and what autovi answers: the tests behind docs/bad-input.md.

Each test here backs rows of the catalogue that no other test proves; the last test checks that every
test the catalogue cites exists. Everything is tiny and seeded: 16x16 images made with numpy and
Pillow in tmp_path, the CLI run in this process (refusals happen before any experiment starts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli
from PIL import Image

from autovi_core import Detector, Prediction
from autovi_core.dataset import read_defects_config
from autovi_core.datasets.autovi import read_autovi_category
from autovi_core.datasets.folder import FolderDataset
from autovi_core.datasets.visa import VisADataset
from autovi_core.domains import Float, Param
from autovi_core.errors import DataError, NotFittedError

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "docs" / "bad-input.md"
SHAPE = (16, 16)
CONFIG = [{"defect_name": "crack", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True}]


# --- helpers ----------------------------------------------------------------------------------------


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def square(value: int = 255) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:6, 2:6] = value
    return mask


def make_category(cat_dir: Path) -> Path:
    """An AutoVI-layout category: 2 train, 2 good test and 2 ``crack`` test images with one channel each."""
    for i in range(2):
        save(cat_dir / "train" / "good" / f"{i:03d}.png", rgb(i))
        save(cat_dir / "test" / "good" / f"{i:03d}.png", rgb(10 + i))
        save(cat_dir / "test" / "crack" / f"{i:03d}.png", rgb(20 + i))
        save(cat_dir / "ground_truth" / "crack" / f"{i:03d}" / "000.png", square())
    (cat_dir / "defects_config.json").write_text(json.dumps(CONFIG))
    return cat_dir


def make_maps(maps: Path) -> Path:
    """Float ``.npy`` maps for every test image of :func:`make_category`, higher on the defects."""
    rng = np.random.default_rng(0)
    for key in ("good/000", "good/001", "crack/000", "crack/001"):
        amap = rng.random(SHAPE).astype(np.float32)
        if key.startswith("crack"):
            amap[2:6, 2:6] += 1.0
        (maps / key).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{key}.npy", amap)
    return maps


def read(cat_dir: Path):
    return read_autovi_category(cat_dir, dataset="autovi", name=cat_dir.name, native_size=None)


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


# --- CLI values -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "patchcore", "--set", "coreset_ratio=-1"], "detector 'patchcore': --set coreset_ratio=-1 refused: expects a number in (0"),
        (["-d", "patchcore", "--set", "coreset_ratio=abc"], "detector 'patchcore': --set coreset_ratio=abc refused: expects a number"),
        (["-d", "patchcore", "--profile", "paper", "--set", "crop=288"], "detector 'patchcore': crop=288 refused: larger than resize=256"),
        (["-d", "pixel_gaussian", "--set", "size"], "--set expects KEY=VALUE, got 'size'"),
        (["-d", "pixel_gaussian", "--device", "cuda:x"], "--device 'cuda:x' refused: expects auto, cpu, cuda or cuda:N"),
        (["-d", "pixel_gaussian", "--ray-cpus-per-task", "0"], "--ray-cpus-per-task 0.0 refused: expects a number > 0"),
        (["-d", "pixel_gaussian", "--ray-gpus-per-task", "-1"], "--ray-gpus-per-task -1.0 refused: expects a number >= 0"),
        (["-d", "nope"], "unknown detector 'nope'; valid: "),
        ([], "choose detectors with --detector NAME or --all-plugins; installed: "),
        (["-d", "pixel_gaussian", "--dataset", "folder"], "dataset 'folder' needs --root pointing at its files"),
        (
            ["-d", "pixel_gaussian", "--dataset", "folder", "--root", "{tmp}/nowhere"],
            "nowhere: dataset root of 'folder' is not a directory",
        ),
        (["-d", "pixel_gaussian", "--dataset", "mvtec_ad", "--root", "{tmp}", "-c", "bottle"], "unknown category 'bottle' for dataset"),
    ],
)
def test_run_refuses_bad_cli_values_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, example_plugin: Any, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    category = [] if "-c" in args else ["-c", "clip_assembly"]
    code, stdout, err = run_cli(capsys, monkeypatch, "run", *category, *args, "--output", str(out))
    assert code == 2, err
    assert message in err and one_line(err), err
    assert not out.exists() and not stdout


def _broken_category(root: Path) -> Path:
    import shutil

    shutil.rmtree(make_category(root / "engine_wiring") / "test")
    return root


def _output_is_a_file(root: Path) -> Path:
    (root / "run").write_text("not a folder")
    return root


@pytest.mark.parametrize(
    ("prepare", "args", "message"),
    [
        (lambda root: root, ["--dataset", "autovi", "--root", "{root}"], "no category of dataset 'autovi' found there"),
        (_broken_category, ["--dataset", "autovi", "--root", "{root}"], "engine_wiring/test: test folder not found"),
        (lambda root: root, ["-c", "clip_assembly", "--weights", "{root}/none.pth", "-d", "patchcore"], "none.pth: no such file"),
        (
            lambda root: root,
            ["-c", "clip_assembly", "--backbone", "resnet18"],
            "--backbone resnet18: none of the detectors pixel_gaussian has a 'backbone' hyperparameter",
        ),
        (lambda root: root, ["-c", "clip_assembly", "--in-process", "--executor", "ray"], "--in-process works with --executor local only"),
        (_output_is_a_file, ["-c", "clip_assembly"], "run: exists and is not a folder"),
    ],
    ids=["root-without-categories", "broken-layout", "missing-weights", "unused-backbone", "in-process-ray", "output-is-a-file"],
)
def test_run_refuses_data_and_option_problems_before_any_experiment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    example_plugin: Any,
    prepare: Any,
    args: list,
    message: str,
) -> None:
    root = prepare(tmp_path)
    out = tmp_path / "run"
    existed = out.exists()
    args = [a.replace("{root}", str(root)) for a in args]
    code, stdout, err = run_cli(capsys, monkeypatch, "run", "-d", "pixel_gaussian", *args, "--output", str(out))
    assert code == 2, err
    assert message in err and one_line(err), err
    assert out.exists() == existed and not stdout


def test_repeated_seeds_and_categories_run_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    args = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "-c", "clip_assembly", "-s", "0", "-s", "0", "--in-process"]
    code, _, err = run_cli(capsys, monkeypatch, *args, "--output", str(out))
    assert code == 0, err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1


def test_run_refuses_a_cuda_device_without_a_gpu(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from autovi_core.device import resolve_device

    if resolve_device("auto") != "cpu":
        pytest.skip("a GPU is visible: --device cuda is valid here")
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, monkeypatch, "run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--device", "cuda", "--output", str(out)
    )
    assert code == 2 and "device 'cuda' requested but no CUDA GPU is visible to torch" in err and one_line(err), err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "abc"], "Invalid value for '--seed'"),
        (["--timeout", "abc"], "Invalid value for '--timeout'"),
        (["--no-such-option"], "No such option: --no-such-option"),
    ],
)
def test_run_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, monkeypatch, "run", "-d", "pixel_gaussian", "-c", "clip_assembly", *args, "--output", str(out))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_resume_without_output_is_refused(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # the default output would be runs/<timestamp> here
    code, _, err = run_cli(capsys, monkeypatch, "run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--resume")
    assert code == 2 and "--resume needs --output DIR of the run to continue" in err and one_line(err), err
    assert not any(tmp_path.iterdir())


def test_describe_refuses_an_unknown_detector(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run_cli(capsys, monkeypatch, "describe", "nope")
    assert code == 2 and "unknown detector 'nope'; valid: " in err and one_line(err) and not out, err


# --- dataset layouts --------------------------------------------------------------------------------
def _no_defect_folders(cat: Path) -> str:
    for folder in ("good", "crack"):
        for image in (cat / "test" / folder).iterdir():
            image.unlink()
        (cat / "test" / folder).rmdir()
    return f"{cat / 'test'}: test split is empty (no test/<defect_dir> folders)"


def _same_stem(cat: Path) -> str:
    save(cat / "train" / "good" / "000.jpg", rgb(5))
    return f"{cat / 'train' / 'good'}: several images share the name '000' (different suffixes)"


def _text_in_ground_truth(cat: Path) -> str:
    (cat / "ground_truth" / "crack" / "000" / "notes.txt").write_text("x")
    return f"{cat / 'ground_truth' / 'crack' / '000' / 'notes.txt'}: not an image file in a ground-truth folder"


def _file_instead_of_channel_folder(cat: Path) -> str:
    save(cat / "ground_truth" / "crack" / "001.png", square())
    return f"{cat / 'ground_truth' / 'crack' / '001.png'}: unexpected entry in a ground-truth folder"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_no_defect_folders, id="test-without-folders"),
        pytest.param(_same_stem, id="two-images-one-stem"),
        pytest.param(_text_in_ground_truth, id="non-image-in-gt-folder"),
        pytest.param(_file_instead_of_channel_folder, id="gt-file-not-folder"),
    ],
)
def test_autovi_layout_refusals_name_the_path(tmp_path: Path, mutate: Callable[[Path], str]) -> None:
    cat = make_category(tmp_path / "widget")
    message = mutate(cat)
    with pytest.raises(DataError) as info:
        read(cat)
    assert str(info.value) == message


VISA_HEADER = "object,split,label,image,mask\n"


def _visa(root: Path, rows: list[str], header: str = VISA_HEADER) -> Path:
    save(root / "candle" / "n0.png", rgb(0))
    save(root / "candle" / "a0.png", rgb(1))
    save(root / "candle" / "a0_mask.png", square(1))
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text(header + "\n".join(rows) + "\n")
    return root / "split_csv" / "1cls.csv"


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        (
            ["candle,train,normal,candle/n0.png,"],
            "object,split,label,image\n",
            "missing column(s) ['mask']; expected object,split,label,image,mask",
        ),
        (
            ["candle,train,anomaly,candle/a0.png,candle/a0_mask.png", "candle,test,normal,candle/n0.png,"],
            VISA_HEADER,
            "line 2: anomalous image in the train split (candle/a0.png)",
        ),
        (["candle,train,normal,candle/n0.png,"], VISA_HEADER, "category 'candle' has no test images"),
        (["candle,train,normal,candle/n0.png,", "candle,test,anomaly,candle/a0.png,"], VISA_HEADER, "has no mask"),
        (["candle,val,normal,candle/n0.png,"], VISA_HEADER, "line 2: split must be train or test, got 'val'"),
    ],
    ids=["missing-column", "anomaly-in-train", "no-test-images", "anomaly-without-mask", "unknown-split"],
)
def test_visa_layout_refusals_name_the_split_file(tmp_path: Path, rows: list[str], header: str, message: str) -> None:
    csv_path = _visa(tmp_path, rows, header)
    with pytest.raises(DataError) as info:
        VisADataset().load_category(tmp_path, "candle")
    assert str(csv_path) in str(info.value) and message in str(info.value), info.value


# --- images -----------------------------------------------------------------------------------------
def _truncated(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "cannot be read as an image (image file is truncated"


def _empty_file(path: Path) -> str:
    path.write_bytes(b"")
    return "cannot be read as an image (cannot identify image file"


def _text_file(path: Path) -> str:
    path.write_text("not an image")
    return "cannot be read as an image (cannot identify image file"


def _cmyk(path: Path) -> str:
    Image.new("CMYK", SHAPE).save(path, format="TIFF")
    return "image mode 'CMYK' is not supported; use grey, RGB or RGBA (8 or 16 bit)"


def _float(path: Path) -> str:
    Image.fromarray(np.zeros(SHAPE, np.float32)).save(path, format="TIFF")
    return "image mode 'F' is not supported"


def _deleted(path: Path) -> str:
    path.unlink()
    return "file not found"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(_truncated, id="truncated"),
        pytest.param(_empty_file, id="empty-file"),
        pytest.param(_text_file, id="text-named-png"),
        pytest.param(_cmyk, id="cmyk"),
        pytest.param(_float, id="float"),
        pytest.param(_deleted, id="deleted-after-indexing"),
    ],
)
def test_unreadable_or_unsupported_images_are_refused_naming_the_file(tmp_path: Path, spoil: Callable[[Path], str]) -> None:
    category = read(make_category(tmp_path / "widget"))
    path = category.train[1].path
    message = spoil(path)
    assert category.load_image(category.train[0]).shape == (*SHAPE, 3)
    with pytest.raises(DataError) as info:
        category.load_image(category.train[1])
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value), info.value


def test_images_of_different_sizes_keep_their_own_size_outside_autovi(tmp_path: Path) -> None:
    cat = make_category(tmp_path / "widget")
    save(cat / "test" / "good" / "001.png", rgb(3, (24, 32)))
    category = FolderDataset().load_category(tmp_path, "widget")
    sample = next(s for s in category.test if s.key == "good/001")
    assert category.load_image(sample).shape == (24, 32, 3) and category.ground_truth_shape(sample) == (24, 32)
    assert category.ground_truth_shape(category.test[0]) == SHAPE


# --- ground-truth masks -----------------------------------------------------------------------------
def _two_values(path: Path) -> str:
    mask = square()
    mask[8:10, 8:10] = 128
    save(path, mask)
    return "a mask must hold one non-zero value, found [128, 255]"


def _two_colours(path: Path) -> str:
    mask = np.repeat(square()[:, :, None], 3, axis=2)
    mask[2:6, 2:6, 1] = 254
    save(path, mask)
    return "a mask must hold one non-zero value, found [254, 255]"


def _truncated_mask(path: Path) -> str:
    return _truncated(path)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(_two_values, id="grey-two-values"),
        pytest.param(_two_colours, id="rgb-two-values"),
        pytest.param(_truncated_mask, id="truncated"),
    ],
)
def test_bad_masks_are_refused_naming_the_file(tmp_path: Path, spoil: Callable[[Path], str]) -> None:
    category = read(make_category(tmp_path / "widget"))
    sample = next(s for s in category.test if s.key == "crack/000")
    path = sample.channels[0].path
    message = spoil(path)
    with pytest.raises(DataError) as info:
        category.load_channels(sample, SHAPE)
    assert str(info.value).startswith(f"{path}: {message}"), info.value


# --- defects_config.json ----------------------------------------------------------------------------
ENTRY = CONFIG[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON (Expecting"),
        ("{}", "must be a non-empty JSON list of defect objects"),
        ("[]", "must be a non-empty JSON list of defect objects"),
        ("[1]", "each entry must be an object, got int"),
        (json.dumps([{"defect_name": "crack"}]), "lacks key(s) ['pixel_value', 'relative_saturation', 'saturation_threshold']"),
        (json.dumps([dict(ENTRY, defect_name="")]), "defect_name must be a non-empty string, got ''"),
        (json.dumps([dict(ENTRY, pixel_value=0)]), "pixel_value of 'crack' must be an int in 1..255, got 0"),
        (json.dumps([dict(ENTRY, pixel_value=256)]), "pixel_value of 'crack' must be an int in 1..255, got 256"),
        (json.dumps([dict(ENTRY, relative_saturation="true")]), "relative_saturation of 'crack' must be true or false, got 'true'"),
        (
            json.dumps([dict(ENTRY, saturation_threshold=1.5)]),
            "saturation_threshold of 'crack' is relative, so it must be a float in (0, 1]",
        ),
        (
            json.dumps([dict(ENTRY, saturation_threshold=0, relative_saturation=False)]),
            "saturation_threshold of 'crack' is absolute, so it must be a positive int number of pixels, got 0",
        ),
        (json.dumps([ENTRY, dict(ENTRY, defect_name="dent")]), "pixel_value entries must be unique, got [255, 255]"),
    ],
    ids=[
        "malformed",
        "object",
        "empty-list",
        "entry-not-object",
        "missing-keys",
        "empty-name",
        "pixel-value-0",
        "pixel-value-256",
        "relative-not-bool",
        "relative-above-1",
        "absolute-0",
        "duplicate-pixel-value",
    ],
)
def test_defects_config_refusals_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "defects_config.json"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_defects_config(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value), info.value


def test_defects_config_that_is_not_utf8_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "defects_config.json"
    path.write_bytes(b'[{"defect_name": "\xff"}]')
    with pytest.raises(DataError, match=re.escape(f"{path}: not UTF-8 text (invalid start byte at byte ")):
        read_defects_config(path)


# --- maps for `autovi evaluate` ---------------------------------------------------------------------
def _colour_map(maps: Path) -> str:
    (maps / "good" / "000.npy").unlink()
    colour = np.zeros((*SHAPE, 3), np.uint8)
    colour[0, 0, 0] = 9
    save(maps / "good" / "000.png", colour)
    return "good/000.png: colour anomaly map (channels differ); write a single-channel map"


def _bool_map(maps: Path) -> str:
    np.save(maps / "good" / "000.npy", np.zeros(SHAPE, bool))
    return "good/000.npy: an anomaly map must be numeric, got bool"


def _pickled_map(maps: Path) -> str:
    np.save(maps / "good" / "000.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return "good/000.npy: not a readable .npy array (Object arrays cannot be loaded when allow_pickle=False)"


def _one_level_too_deep(maps: Path) -> str:
    inner = maps / "widget" / "test"
    inner.mkdir(parents=True)
    for folder in ("good", "crack"):
        (maps / folder).rename(inner / folder)
    return "crack/000.png: missing anomaly map (4 of 4 test images have none)"


def _no_maps_folder(maps: Path) -> str:
    for path in sorted(maps.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    maps.rmdir()
    return "maps: maps folder not found"


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(_colour_map, id="colour"),
        pytest.param(_bool_map, id="bool"),
        pytest.param(_pickled_map, id="pickled-npy"),
        pytest.param(_one_level_too_deep, id="category-level-folder"),
        pytest.param(_no_maps_folder, id="no-maps-folder"),
    ],
)
def test_evaluate_refuses_bad_maps_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spoil: Callable[[Path], str]
) -> None:
    make_category(tmp_path / "data" / "widget")
    maps = make_maps(tmp_path / "maps")
    message = spoil(maps)
    args = ["evaluate", "--dataset-root", str(tmp_path / "data"), "--category", "widget", "--maps", str(maps)]
    code, out, err = run_cli(capsys, monkeypatch, *args, "--output", str(tmp_path / "result.json"))
    assert code == 2 and message in err and one_line(err) and not out, err
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize(
    ("spoil", "extra", "message"),
    [
        (lambda data: None, ["--category", "nope"], "nope: category folder not found under --dataset-root"),
        (lambda data: (data / "widget" / "defects_config.json").unlink(), [], "defects_config.json: defects_config.json not found"),
        (lambda data: None, ["--spro-mode", "fast"], "--spro-mode 'fast' refused: expects one of 'exact', 'official'"),
    ],
    ids=["unknown-category", "broken-dataset", "bad-spro-mode"],
)
def test_evaluate_refuses_a_bad_dataset_or_option_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spoil: Callable, extra: list[str], message: str
) -> None:
    make_category(tmp_path / "data" / "widget")
    maps = make_maps(tmp_path / "maps")
    spoil(tmp_path / "data")
    args = ["evaluate", "--dataset-root", str(tmp_path / "data"), "--category", "widget", "--maps", str(maps), *extra]
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 2 and message in err and one_line(err) and not out, err


def test_evaluate_accepts_the_test_parent_and_resizes_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_category(tmp_path / "data" / "widget")
    args = ["evaluate", "--dataset-root", str(tmp_path / "data"), "--category", "widget", "--maps"]
    code, out, err = run_cli(capsys, monkeypatch, *args, str(make_maps(tmp_path / "maps")))
    assert code == 0 and not err, err
    reference = json.loads(out)
    code, out, err = run_cli(capsys, monkeypatch, *args, str(make_maps(tmp_path / "parent" / "test").parent))
    assert code == 0 and json.loads(out)["localization"] == reference["localization"], err
    small = make_maps(tmp_path / "small")
    np.save(small / "good" / "000.npy", np.zeros((8, 8), np.float32))
    code, out, err = run_cli(capsys, monkeypatch, *args, str(small))
    assert code == 0 and "note: resized 1 map(s) from 8x8 to the ground truth's 16x16 (bilinear in float)" in err, err
    assert json.loads(out)["notes"] == [err.strip().removeprefix("note: ")]


# --- results folders for `autovi report` ------------------------------------------------------------
RECORD = {"detector": "a", "dataset": "d", "category": "c", "seed": 0, "profile": "fast", "status": "ok", "metrics": {"image_auroc": 0.9}}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "results file not found: "),
        (["--format", "pdf"], "--format 'pdf' refused: expects one of 'md', 'csv', 'html', got 'pdf'"),
        (["--metric", "image_aurc"], "--metric 'image_aurc': no such metric in "),
        (["--output", "{tmp}/results.jsonl/table.md"], "table.md: cannot write there"),
    ],
    ids=["no-results-file", "unknown-format", "unknown-metric", "unwritable-output"],
)
def test_report_refusals_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    if extra:
        (tmp_path / "results.jsonl").write_text(json.dumps(RECORD) + "\n")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, out, err = run_cli(capsys, monkeypatch, "report", str(tmp_path), *extra)
    assert code == 2 and message in err and one_line(err), err
    assert not out or "--output" in extra  # the table is printed before --output is written


def test_report_writes_output_into_new_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "results.jsonl").write_text(json.dumps(RECORD) + "\n")
    code, out, err = run_cli(capsys, monkeypatch, "report", str(tmp_path), "--output", str(tmp_path / "new" / "table.md"))
    assert code == 0 and (tmp_path / "new" / "table.md").read_text().strip() == out.strip(), err


def test_report_skips_unreadable_lines_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [json.dumps(RECORD).encode(), b"[1, 2]", b'"text"', b"\xff\xfe", b"not json", b'{"detector": "a", "cat']
    (tmp_path / "results.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, err = run_cli(capsys, monkeypatch, "report", str(tmp_path))
    assert code == 0 and err.strip() == "warning: skipped 5 unreadable line(s)", err
    assert "| d | c | **90.0** |" in out and "5 unreadable line(s) skipped." in out


# --- saved models -----------------------------------------------------------------------------------
class Tiny(Detector):
    name = "tiny_bad_input"
    params = {"scale": Param(Float(0.0, 10.0, low_open=True), 1.0, 1.0, "a factor", "test")}

    def learn(self, images, labelled) -> None:
        self.level = float(np.mean([image.mean() for image in images]))

    def infer(self, images, output_size) -> Prediction:
        return Prediction(np.full(len(images), self.level), np.zeros((len(images), *output_size)))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"level": np.array(self.level)}

    def load_state_dict(self, state) -> None:
        self.level = float(state["level"])


def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(model: Path) -> None:
        config = json.loads((model / "config.json").read_text())
        change(config)
        (model / "config.json").write_text(json.dumps(config))

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda m: (m / "config.json").unlink(), DataError, "config.json: not a saved tiny_bad_input detector ([Errno 2]"),
        (lambda m: (m / "config.json").write_text("{"), DataError, "config.json: not a saved tiny_bad_input detector (Expecting"),
        (_edit_config(lambda c: c.update(detector="patchcore")), DataError, "model: holds detector 'patchcore', not 'tiny_bad_input'"),
        (
            _edit_config(lambda c: c["hparams"].update(scale=-1.0)),
            DataError,
            "saved hyperparameters are refused by this version: detector 'tiny_bad_input': scale=-1.0 refused: expects a number in (0, 10]",
        ),
        (
            _edit_config(lambda c: c["hparams"].update(gone=3)),
            DataError,
            "model: its saved hyperparameters are refused by this version: detector 'tiny_bad_input' has no hyperparameter 'gone'",
        ),
        (
            lambda m: (m / "config.json").write_text("[1, 2]"),
            DataError,
            "config.json: not a saved detector (no detector, profile, seed, hparams)",
        ),
        (_edit_config(lambda c: c.pop("seed")), DataError, "config.json: not a saved detector (no seed)"),
        (
            _edit_config(lambda c: c.update(api_version="2.0")),
            DataError,
            "model: saved with plugin contract API 2.0; this autovi-core speaks API 1.",
        ),
        (lambda m: (m / "state.npz").unlink(), DataError, "state.npz: missing or not a saved state"),
        (lambda m: (m / "state.npz").write_bytes(b"not a zip"), DataError, "state.npz: missing or not a saved state"),
        (lambda m: np.savez(m / "state.npz", other=np.zeros(1)), DataError, "state.npz: lacks the array"),
    ],
    ids=[
        "no-config",
        "corrupt-config",
        "other-detector",
        "refused-hparam",
        "unknown-hparam",
        "config-not-an-object",
        "config-without-seed",
        "other-api-major",
        "no-state",
        "state-not-npz",
        "state-lacks-array",
    ],
)
def test_detector_load_refusals(tmp_path: Path, mutate: Callable[[Path], None], error: type[Exception], message: str) -> None:
    model = Tiny().fit([rgb(0)]).save(tmp_path / "model")
    assert Tiny.load(model).predict([rgb(1)], SHAPE).scores.shape == (1,)
    mutate(model)
    with pytest.raises(error) as info:
        Tiny.load(model)
    assert message in str(info.value) and "\n" not in str(info.value), info.value


def test_load_of_a_missing_folder_and_save_before_fit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nowhere' / 'config.json'}: not a saved tiny_bad_input detector")):
        Tiny.load(tmp_path / "nowhere")
    with pytest.raises(NotFittedError, match=r"detector 'tiny_bad_input' must be fitted \(or loaded\) before save"):
        Tiny().save(tmp_path / "unfitted")
    assert not (tmp_path / "unfitted").exists()


# --- the catalogue ----------------------------------------------------------------------------------
CITATION = re.compile(r"`((?:tests|plugins|examples)/[\w./-]+\.py)::([\w:]+)`")


def catalogue_rows() -> list[tuple[str, list[tuple[str, str]]]]:
    """Every table row of docs/bad-input.md (header and rule lines excluded) with its citations."""
    rows = []
    for line in CATALOGUE.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[\s|:-]+\|", line) and not line.startswith("| bad input"):
            rows.append((line, CITATION.findall(line)))
    return rows


def test_catalogue_cites_only_existing_tests() -> None:
    rows = catalogue_rows()
    assert len(rows) >= 60, len(rows)
    for line, citations in rows:
        assert citations, f"row without a test: {line}"
        for path, name in citations:
            source = (REPO / path).read_text(encoding="utf-8")
            *classes, function = name.split("::")
            for cls in classes:
                assert re.search(rf"^class {cls}\b", source, re.MULTILINE), f"{path}::{name}: no class {cls}"
            assert re.search(rf"^\s*def {function}\(", source, re.MULTILINE), f"{path}::{name}: no test {function}"
            assert function.startswith("test_"), f"{path}::{name} is not a test"
