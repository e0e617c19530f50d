"""Dataset readers (AutoVI, MVTec LOCO, MVTec AD, VisA, generic folders) on tiny trees in tmp_path."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from autovi_core.dataset import WHOLE_REGION, DefectConfig, read_defects_config
from autovi_core.datasets.autovi import AUTOVI_CATEGORIES, AutoVIDataset, MVTecLOCODataset, read_autovi_category
from autovi_core.datasets.folder import FolderDataset
from autovi_core.datasets.mvtec_ad import MVTecADDataset
from autovi_core.datasets.visa import VisADataset
from autovi_core.errors import DataError
from autovi_core.image_io import read_mask, read_rgb

CONFIG = [
    {"defect_name": "missing", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "blue_hoop", "pixel_value": 254, "saturation_threshold": 200, "relative_saturation": False},
    {"defect_name": "cardboard", "pixel_value": 253, "saturation_threshold": 0.5, "relative_saturation": True},
]


# --- tree builders -------------------------------------------------------------------------------
def save(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an image file (mode inferred by Pillow), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def rgb(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def channel(shape: tuple[int, int], value: int, gray: bool = False, corner: int = 0) -> np.ndarray:
    """A mask with a 4x4 square at ``corner`` set to ``value``; RGB unless ``gray``."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[corner : corner + 4, corner : corner + 4] = value
    return mask if gray else np.repeat(mask[:, :, None], 3, axis=2)


def make_autovi(cat_dir: Path, shape: tuple[int, int] = (16, 16), config: object = CONFIG) -> Path:
    """An AutoVI category: 2 train, 1 good test, ``missing`` (2 images) and ``multiple`` (1 image, 2 channels)."""
    for i in range(2):
        save(cat_dir / "train" / "good" / f"{i:03d}.png", rgb(shape, i))
    save(cat_dir / "test" / "good" / "000.png", rgb(shape, 10))
    for i in range(2):
        save(cat_dir / "test" / "missing" / f"{i:03d}.png", rgb(shape, 20 + i))
    save(cat_dir / "ground_truth" / "missing" / "000" / "000.png", channel(shape, 255))
    save(cat_dir / "ground_truth" / "missing" / "001" / "000.png", channel(shape, 255, gray=True))
    save(cat_dir / "test" / "multiple" / "000.png", rgb(shape, 30))
    save(cat_dir / "ground_truth" / "multiple" / "000" / "000.png", channel(shape, 254, gray=True))
    save(cat_dir / "ground_truth" / "multiple" / "000" / "001.png", channel(shape, 253, corner=8))
    (cat_dir / "defects_config.json").write_text(json.dumps(config))
    return cat_dir


def read_test_category(cat_dir: Path, native_size: tuple[int, int] | None = (16, 16)):
    return read_autovi_category(cat_dir, dataset="autovi", name=cat_dir.name, native_size=native_size)


# --- AutoVI layout -------------------------------------------------------------------------------
def test_autovi_samples_labels_and_channels(tmp_path: Path) -> None:
    category = read_test_category(make_autovi(tmp_path / "pipe_clip"))
    assert [s.key for s in category.train] == ["good/000", "good/001"]
    assert [(s.key, s.label) for s in category.test] == [("good/000", 0), ("missing/000", 1), ("missing/001", 1), ("multiple/000", 1)]
    assert category.defect_dirs == ["missing", "multiple"]
    assert category.summary() == {"train": 2, "test_good": 1, "test_defective": 3}
    multiple = category.test[-1]
    assert [c.path.name for c in multiple.channels] == ["000.png", "001.png"]
    assert all(c.pixel_value == 0 for s in category.test for c in s.channels)  # looked up when loading
    assert category.test[0].channels == ()
    assert [c.defect_name for c in category.defects_config] == ["missing", "blue_hoop", "cardboard"]
    assert category.native_size == (16, 16) and category.has_masks


def test_autovi_load_channels_reads_values_from_rgb_and_grey_masks(tmp_path: Path) -> None:
    category = read_test_category(make_autovi(tmp_path / "pipe_clip"))
    by_key = {s.key: s for s in category.test}
    [(mask, cfg)] = category.load_channels(by_key["missing/001"], (16, 16))  # grayscale PNG
    assert cfg.defect_name == "missing" and mask.dtype == bool and mask.sum() == 16 and mask[0, 0]
    pairs = category.load_channels(by_key["multiple/000"], (16, 16))
    assert [cfg.defect_name for _, cfg in pairs] == ["blue_hoop", "cardboard"]
    assert pairs[0][0][0, 0] and not pairs[0][0][8, 8] and pairs[1][0][8, 8]
    assert pairs[0][1].saturation_area(16) == 16 and pairs[1][1].saturation_area(16) == 8


def test_autovi_mask_value_absent_from_config_is_rejected(tmp_path: Path) -> None:
    cat_dir = make_autovi(tmp_path / "pipe_clip")
    bad = save(cat_dir / "ground_truth" / "missing" / "000" / "000.png", channel((16, 16), 77))
    category = read_test_category(cat_dir)
    with pytest.raises(DataError, match="known") as info:
        category.load_channels(category.test[1])
    assert str(bad) in str(info.value) and "77" in str(info.value) and "253" in str(info.value)


def test_autovi_empty_channel_and_wrong_mask_shape_are_rejected(tmp_path: Path) -> None:
    cat_dir = make_autovi(tmp_path / "pipe_clip")
    empty = save(cat_dir / "ground_truth" / "missing" / "000" / "000.png", np.zeros((16, 16, 3), np.uint8))
    category = read_test_category(cat_dir)
    with pytest.raises(DataError, match="empty") as info:
        category.load_channels(category.test[1])
    assert str(empty) in str(info.value)
    with pytest.raises(DataError, match="mask is 16x16"):
        category.load_channels(category.test[2], (8, 16))


def test_autovi_dataset_categories_native_size_and_nested_zip_layout(tmp_path: Path) -> None:
    make_autovi(tmp_path / "pipe_clip", AUTOVI_CATEGORIES["pipe_clip"])
    make_autovi(tmp_path / "tank_screw" / "tank_screw", AUTOVI_CATEGORIES["tank_screw"])  # zip nesting
    (tmp_path / "not_a_category" / "train" / "good").mkdir(parents=True)
    dataset = AutoVIDataset()
    assert dataset.name == "autovi"
    assert dataset.categories(tmp_path) == ["pipe_clip", "tank_screw"]
    nested = dataset.load_category(tmp_path, "tank_screw")
    assert nested.root == tmp_path / "tank_screw" / "tank_screw"
    assert nested.native_size == (750, 1000) and nested.dataset == "autovi" and nested.name == "tank_screw"
    assert nested.load_image(nested.train[0]).shape == (750, 1000, 3)
    assert nested.ground_truth_shape(nested.test[1]) == (750, 1000)
    with pytest.raises(DataError, match="unknown category"):
        dataset.load_category(tmp_path, "engine_wiring")


def test_autovi_image_with_wrong_size_raises_when_loaded(tmp_path: Path) -> None:
    make_autovi(tmp_path / "pipe_clip", (400, 400))
    wrong = save(tmp_path / "pipe_clip" / "train" / "good" / "001.png", rgb((400, 300)))
    category = AutoVIDataset().load_category(tmp_path, "pipe_clip")
    assert category.load_image(category.train[0]).shape == (400, 400, 3)
    with pytest.raises(DataError, match="300x400") as info:
        category.load_image(category.train[1])
    assert str(wrong) in str(info.value)


def _rm(relative: str) -> Callable[[Path], Path]:
    def mutate(cat_dir: Path) -> Path:
        target = cat_dir / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return target

    return mutate


def _empty(relative: str) -> Callable[[Path], Path]:
    def mutate(cat_dir: Path) -> Path:
        for child in (cat_dir / relative).iterdir():
            child.unlink()
        return cat_dir / relative

    return mutate


def _orphan_ground_truth(cat_dir: Path) -> Path:
    save(cat_dir / "ground_truth" / "missing" / "099" / "000.png", channel((16, 16), 255))
    return cat_dir / "ground_truth" / "missing" / "099"


def _text_file_in(relative: str) -> Callable[[Path], Path]:
    def mutate(cat_dir: Path) -> Path:
        target = cat_dir / relative / "notes.txt"
        target.write_text("not an image")
        return target

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_rm("train/good"), id="missing-train-good"),
        pytest.param(_rm("test"), id="missing-test"),
        pytest.param(_empty("train/good"), id="empty-train"),
        pytest.param(_empty("test/missing"), id="empty-defect-folder"),
        pytest.param(_orphan_ground_truth, id="gt-without-image"),
        pytest.param(_rm("ground_truth/missing/001"), id="image-without-gt"),
        pytest.param(_empty("ground_truth/missing/001"), id="empty-gt-folder"),
        pytest.param(_text_file_in("train/good"), id="non-image-in-train"),
        pytest.param(_text_file_in("test/missing"), id="non-image-in-test"),
        pytest.param(_rm("defects_config.json"), id="missing-config"),
    ],
)
def test_autovi_index_errors_name_the_offending_path(tmp_path: Path, mutate: Callable[[Path], Path]) -> None:
    cat_dir = make_autovi(tmp_path / "pipe_clip")
    offending = mutate(cat_dir)
    with pytest.raises(DataError) as info:
        read_test_category(cat_dir)
    assert str(offending) in str(info.value)
    assert "\n" not in str(info.value)


def test_autovi_hidden_files_are_ignored(tmp_path: Path) -> None:
    cat_dir = make_autovi(tmp_path / "pipe_clip")
    (cat_dir / "train" / "good" / ".DS_Store").write_text("x")
    assert len(read_test_category(cat_dir).train) == 2


@pytest.mark.parametrize(
    ("threshold", "relative", "accepted"),
    [("1", "true", False), ("1.0", "true", True), ("200.0", "false", False), ("200", "false", True)],
)
def test_defects_config_threshold_types_are_strict(tmp_path: Path, threshold: str, relative: str, accepted: bool) -> None:
    path = tmp_path / "defects_config.json"
    path.write_text(
        f'[{{"defect_name": "missing", "pixel_value": 255, "saturation_threshold": {threshold}, "relative_saturation": {relative}}}]'
    )
    if accepted:
        [cfg] = read_defects_config(path)
        assert cfg == DefectConfig("missing", 255, json.loads(threshold), relative == "true")
    else:
        with pytest.raises(DataError, match="saturation_threshold") as info:
            read_defects_config(path)
        assert str(path) in str(info.value)


def test_invalid_config_is_rejected_at_index_time(tmp_path: Path) -> None:
    bad = [dict(CONFIG[0], saturation_threshold=1)]
    cat_dir = make_autovi(tmp_path / "pipe_clip", config=bad)
    with pytest.raises(DataError) as info:
        read_test_category(cat_dir)
    assert str(cat_dir / "defects_config.json") in str(info.value)


# --- MVTec LOCO ----------------------------------------------------------------------------------
def test_mvtec_loco_validation_split_and_free_sizes(tmp_path: Path) -> None:
    cat_dir = make_autovi(tmp_path / "juice_bottle", (24, 32))
    save(cat_dir / "validation" / "good" / "000.png", rgb((24, 32)))
    make_autovi(tmp_path / "pushpins")
    (tmp_path / "readme.txt").write_text("x")
    dataset = MVTecLOCODataset()
    assert dataset.name == "mvtec_loco" and dataset.categories(tmp_path) == ["juice_bottle", "pushpins"]
    category = dataset.load_category(tmp_path, "juice_bottle")
    assert category.native_size is None and category.dataset == "mvtec_loco"
    assert [s.key for s in category.samples if s.split == "validation"] == ["good/000"]
    assert len(category.train) == 2 and len(category.test) == 4
    assert category.load_image(category.test[0]).shape == (24, 32, 3)
    assert category.ground_truth_shape(category.test[1]) == (24, 32)
    assert category.load_channels(category.test[1], (24, 32))[0][1].defect_name == "missing"


# --- MVTec AD ------------------------------------------------------------------------------------
def make_mvtec_ad(cat_dir: Path, shape: tuple[int, int] = (24, 32)) -> Path:
    save(cat_dir / "train" / "good" / "000.png", rgb(shape))
    save(cat_dir / "test" / "good" / "000.png", rgb(shape, 1))
    for i in range(2):
        save(cat_dir / "test" / "broken" / f"{i:03d}.png", rgb(shape, 2 + i))
        save(cat_dir / "ground_truth" / "broken" / f"{i:03d}_mask.png", channel(shape, 255, gray=True))
    return cat_dir


def test_mvtec_ad_reads_single_binary_masks(tmp_path: Path) -> None:
    make_mvtec_ad(tmp_path / "bottle")
    make_mvtec_ad(tmp_path / "carpet")
    (tmp_path / "docs").mkdir()
    (tmp_path / "license.txt").write_text("x")
    dataset = MVTecADDataset()
    assert dataset.name == "mvtec_ad" and dataset.categories(tmp_path) == ["bottle", "carpet"]
    category = dataset.load_category(tmp_path, "bottle")
    assert [(s.key, s.label) for s in category.test] == [("broken/000", 1), ("broken/001", 1), ("good/000", 0)]
    sample = category.test[0]
    assert [(c.path.name, c.pixel_value) for c in sample.channels] == [("000_mask.png", None)]
    [(mask, cfg)] = category.load_channels(sample, (24, 32))
    assert cfg is WHOLE_REGION and mask.shape == (24, 32) and mask.sum() == 16
    assert category.defects_config == () and category.native_size is None


def test_mvtec_ad_missing_mask_names_the_image(tmp_path: Path) -> None:
    cat_dir = make_mvtec_ad(tmp_path / "bottle")
    (cat_dir / "ground_truth" / "broken" / "001_mask.png").unlink()
    with pytest.raises(DataError) as info:
        MVTecADDataset().load_category(tmp_path, "bottle")
    assert str(cat_dir / "test" / "broken" / "001.png") in str(info.value)


def test_mvtec_ad_mask_without_image_is_rejected(tmp_path: Path) -> None:
    cat_dir = make_mvtec_ad(tmp_path / "bottle")
    orphan = save(cat_dir / "ground_truth" / "broken" / "007_mask.png", channel((24, 32), 255))
    with pytest.raises(DataError) as info:
        MVTecADDataset().load_category(tmp_path, "bottle")
    assert str(orphan) in str(info.value)


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("L", np.arange(24 * 32, dtype=np.uint32).reshape(24, 32).astype(np.uint8)),
        ("RGBA", np.random.default_rng(3).integers(0, 256, (24, 32, 4), dtype=np.uint8)),
        ("I;16", (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 80)),
    ],
)
def test_images_come_out_hwc_uint8_rgb(tmp_path: Path, mode: str, array: np.ndarray) -> None:
    cat_dir = make_mvtec_ad(tmp_path / "bottle")
    path = save(cat_dir / "train" / "good" / "001.png", array)
    assert Image.open(path).mode.startswith(mode[0])
    category = MVTecADDataset().load_category(tmp_path, "bottle")
    image = category.load_image(category.train[1])
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    if mode == "L":
        assert all(np.array_equal(image[:, :, c], array) for c in range(3))
    elif mode == "RGBA":
        assert np.array_equal(image, array[:, :, :3])
    else:
        assert np.array_equal(image[:, :, 0], (array / 257.0).astype(np.uint8))
    assert category.load_image(category.train[1]) is image  # decoded once


# --- VisA ----------------------------------------------------------------------------------------
VISA_HEADER = "object,split,label,image,mask\n"


def make_visa(root: Path) -> Path:
    rows = []
    for obj in ("candle", "pcb1"):
        base = f"{obj}/Data"
        for i, split in enumerate(("train", "train", "test")):
            save(root / base / "Images" / "Normal" / f"{i:04d}.JPG", rgb((24, 32), i))
            rows.append(f"{obj},{split},normal,{base}/Images/Normal/{i:04d}.JPG,")
        save(root / base / "Images" / "Anomaly" / "000.JPG", rgb((24, 32), 9))
        save(root / base / "Masks" / "Anomaly" / "000.png", channel((24, 32), 1, gray=True))
        rows.append(f"{obj},test,anomaly,{base}/Images/Anomaly/000.JPG,{base}/Masks/Anomaly/000.png")
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    (root / "split_csv" / "1cls.csv").write_text(VISA_HEADER + "\n".join(rows) + "\n")
    return root


def test_visa_reads_the_split_csv(tmp_path: Path) -> None:
    make_visa(tmp_path)
    dataset = VisADataset()
    assert dataset.name == "visa" and dataset.categories(tmp_path) == ["candle", "pcb1"]
    category = dataset.load_category(tmp_path, "candle")
    assert [s.key for s in category.train] == ["good/0000", "good/0001"]
    assert [(s.key, s.label) for s in category.test] == [("good/0002", 0), ("anomaly/000", 1)]
    assert category.defect_dirs == ["anomaly"]
    anomalous = category.test[1]
    assert anomalous.channels[0].pixel_value is None
    [(mask, cfg)] = category.load_channels(anomalous, (24, 32))
    assert cfg is WHOLE_REGION and mask.sum() == 16  # mask value 1 counts as defect
    assert category.load_image(anomalous).shape == (24, 32, 3)
    assert dataset.categories(tmp_path / "split_csv") == ["candle", "pcb1"]  # --root at split_csv


def test_visa_missing_csv_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        VisADataset().categories(tmp_path)
    assert str(tmp_path / "split_csv" / "1cls.csv") in str(info.value)


def test_visa_missing_referenced_files_are_named(tmp_path: Path) -> None:
    make_visa(tmp_path)
    mask = tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    mask.unlink()
    with pytest.raises(DataError) as info:
        VisADataset().load_category(tmp_path, "candle")
    assert str(mask) in str(info.value)
    image = tmp_path / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG"
    image.unlink()
    with pytest.raises(DataError) as info:
        VisADataset().load_category(tmp_path, "pcb1")
    assert str(image) in str(info.value)


def test_visa_bad_rows_and_unknown_category(tmp_path: Path) -> None:
    make_visa(tmp_path)
    csv_path = tmp_path / "split_csv" / "1cls.csv"
    csv_path.write_text(csv_path.read_text().replace("test,anomaly", "test,defect", 1))
    with pytest.raises(DataError, match="label") as info:
        VisADataset().load_category(tmp_path, "candle")
    assert str(csv_path) in str(info.value)
    with pytest.raises(DataError, match="unknown category"):
        VisADataset().load_category(tmp_path, "capsules")


# --- generic folders -----------------------------------------------------------------------------
def make_folder_category(cat_dir: Path, shape: tuple[int, int] = (16, 16)) -> Path:
    save(cat_dir / "train" / "good" / "000.png", rgb(shape))
    save(cat_dir / "test" / "good" / "000.png", rgb(shape, 1))
    for i in range(3):
        save(cat_dir / "test" / "crack" / f"{i:03d}.png", rgb(shape, 2 + i))
    gt = cat_dir / "ground_truth" / "crack"
    save(gt / "000_mask.png", channel(shape, 255, gray=True))
    save(gt / "001.png", channel(shape, 255))
    save(gt / "002" / "000.png", channel(shape, 254))
    save(gt / "002" / "001.png", channel(shape, 253, corner=8))
    return cat_dir


def test_folder_reads_the_three_mask_styles(tmp_path: Path) -> None:
    make_folder_category(tmp_path / "widget")
    dataset = FolderDataset()
    assert dataset.name == "folder" and dataset.categories(tmp_path) == ["widget"]
    category = dataset.load_category(tmp_path, "widget")
    assert category.has_masks and category.defects_config == ()
    channels = {
        s.key: [(c.path.relative_to(category.root / "ground_truth").as_posix(), c.pixel_value) for c in s.channels] for s in category.test
    }
    assert channels == {
        "good/000": [],
        "crack/000": [("crack/000_mask.png", None)],
        "crack/001": [("crack/001.png", None)],
        "crack/002": [("crack/002/000.png", None), ("crack/002/001.png", None)],
    }
    pairs = category.load_channels(category.test[2], (16, 16))
    assert [cfg for _, cfg in pairs] == [WHOLE_REGION, WHOLE_REGION]


def test_folder_channel_folders_use_defects_config(tmp_path: Path) -> None:
    cat_dir = make_folder_category(tmp_path / "widget")
    (cat_dir / "defects_config.json").write_text(json.dumps(CONFIG))
    category = FolderDataset().load_category(tmp_path, "widget")
    assert [c.pixel_value for c in category.test[2].channels] == [0, 0]
    assert [cfg.defect_name for _, cfg in category.load_channels(category.test[2])] == ["blue_hoop", "cardboard"]
    [(_, cfg)] = category.load_channels(category.test[0])
    assert cfg is WHOLE_REGION


def test_folder_without_ground_truth_is_image_level(tmp_path: Path) -> None:
    cat_dir = make_folder_category(tmp_path / "widget")
    shutil.rmtree(cat_dir / "ground_truth")
    dataset = FolderDataset()
    assert dataset.categories(cat_dir) == ["widget"]  # root is the category itself
    category = dataset.load_category(cat_dir, "widget")
    assert not category.has_masks and category.root == cat_dir
    assert [(s.key, s.label, s.channels) for s in category.test] == [
        ("crack/000", 1, ()),
        ("crack/001", 1, ()),
        ("crack/002", 1, ()),
        ("good/000", 0, ()),
    ]


def test_folder_errors_name_the_offending_path(tmp_path: Path) -> None:
    cat_dir = make_folder_category(tmp_path / "widget")
    (cat_dir / "ground_truth" / "crack" / "001.png").unlink()
    with pytest.raises(DataError) as info:
        FolderDataset().load_category(tmp_path, "widget")
    assert str(cat_dir / "test" / "crack" / "001.png") in str(info.value)
    save(cat_dir / "ground_truth" / "crack" / "001.png", channel((16, 16), 255))
    duplicate = save(cat_dir / "ground_truth" / "crack" / "001_mask.png", channel((16, 16), 255))
    with pytest.raises(DataError, match="already has ground truth") as info:
        FolderDataset().load_category(tmp_path, "widget")
    assert str(duplicate) in str(info.value)
    duplicate.unlink()
    orphan = save(cat_dir / "ground_truth" / "crack" / "009_mask.png", channel((16, 16), 255))
    with pytest.raises(DataError) as info:
        FolderDataset().load_category(tmp_path, "widget")
    assert str(orphan) in str(info.value)


# --- image_io properties -------------------------------------------------------------------------
_shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=_shapes, mode=st.sampled_from(["L", "RGB", "RGBA", "I;16"]), seed=st.integers(0, 2**16))
def test_read_rgb_round_trip(shape: tuple[int, int], mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        array = rng.integers(0, 2**16, shape, dtype=np.uint16)
        expected = np.repeat((array / 257.0 if array.max() > 255 else array).astype(np.uint8)[:, :, None], 3, 2)
    else:
        channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
        array = rng.integers(0, 256, (*shape, *channels), dtype=np.uint8)
        expected = np.repeat(array[:, :, None], 3, 2) if mode == "L" else array[:, :, :3]
    with tempfile.TemporaryDirectory() as tmp:
        path = save(Path(tmp) / "image.png", array)
        image = read_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (*shape, 3)
    assert np.array_equal(image, expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mask=_shapes.flatmap(
        lambda s: st.lists(st.booleans(), min_size=s[0] * s[1], max_size=s[0] * s[1]).map(
            lambda bits: np.array(bits, dtype=bool).reshape(s)
        )
    ),
    value=st.integers(1, 255),
    mode=st.sampled_from(["L", "RGB", "RGBA"]),
)
def test_read_mask_round_trip(mask: np.ndarray, value: int, mode: str) -> None:
    plane = mask.astype(np.uint8) * value
    if mode == "L":
        array = plane
    else:
        array = np.repeat(plane[:, :, None], 3, 2)
        if mode == "RGBA":
            array = np.concatenate([array, np.full((*mask.shape, 1), 255, np.uint8)], axis=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = save(Path(tmp) / "mask.png", array)
        assert Image.open(path).mode == mode
        read, read_value = read_mask(path)
    assert read.dtype == bool and np.array_equal(read, mask)
    assert read_value == (value if mask.any() else None)
