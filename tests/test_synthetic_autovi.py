"""The built-in synthetic_autovi dataset: layout, defects_config.json, determinism, drift and masks.

Every image is a pure function of its seed (the fixtures and helpers pass ``seed`` explicitly), so
these tests draw nothing unseeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autovi_core.dataset import read_defects_config
from autovi_core.datasets.autovi import AUTOVI_CATEGORIES
from autovi_core.datasets.synthetic import generate_category as generate_synthetic
from autovi_core.datasets.synthetic_autovi import (
    CATEGORY_SPECS,
    DEFAULT_SIZES,
    GENERATOR,
    GENERATOR_VERSION,
    SYNTHETIC_AUTOVI_CATEGORIES,
    SyntheticAutoVICounts,
    SyntheticAutoVIDataset,
    generate_category,
    render,
    render_image,
    shot_schedule,
)
from autovi_core.errors import DataError
from autovi_core.image_io import read_mask, read_rgb

TINY = SyntheticAutoVICounts(train=4, test_good=3, per_defect=2, multiple=1)
SEED = 0


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All six categories at their default sizes with TINY counts, generated once for the module."""
    root = tmp_path_factory.mktemp("synthetic_autovi")
    return {category: generate_category(root, category, seed=SEED, counts=TINY) for category in SYNTHETIC_AUTOVI_CATEGORIES}


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def all_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- layout and defects_config.json ----------------------------------------------------------------
def test_categories_are_autovi_s_with_its_geometry() -> None:
    assert set(SYNTHETIC_AUTOVI_CATEGORIES) == set(AUTOVI_CATEGORIES)
    for category, (height, width) in AUTOVI_CATEGORIES.items():
        small_h, small_w = DEFAULT_SIZES[category]
        assert small_w * height == small_h * width  # same aspect ratio as AutoVI, reduced
        assert SyntheticAutoVIDataset(scale=1.0).native_size(category) == (height, width)
    assert SyntheticAutoVIDataset().native_size("pipe_clip") == (128, 128)
    assert SyntheticAutoVIDataset().native_size("tank_screw") == (120, 160)


@pytest.mark.parametrize("category", SYNTHETIC_AUTOVI_CATEGORIES)
def test_layout_is_autovi_s(generated: dict[str, Path], category: str) -> None:
    folder = generated[category]
    spec = CATEGORY_SPECS[category]
    height, width = DEFAULT_SIZES[category]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "defects_config.json",
        "ground_truth",
        "test",
        "train",
    ]
    assert [p.name for p in (folder / "train").iterdir()] == ["good"]
    assert len(pngs(folder / "train" / "good")) == TINY.train
    assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(["good", *spec.folders])
    assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(spec.folders)
    for defect_dir, names in spec.folders.items():
        images = pngs(folder / "test" / defect_dir)
        assert len(images) == (TINY.multiple if defect_dir == "multiple" else TINY.per_defect)
        for image in images:
            channels = pngs(folder / "ground_truth" / defect_dir / image.stem)
            assert [p.name for p in channels] == [f"{k:03d}.png" for k in range(len(names))]
    for image_path in folder.glob("*/*/*.png"):
        with Image.open(image_path) as image:
            assert (image.mode, image.size, image.format) == ("RGB", (width, height), "PNG")


@pytest.mark.parametrize("category", SYNTHETIC_AUTOVI_CATEGORIES)
def test_read_back_through_the_autovi_reader(generated: dict[str, Path], category: str) -> None:
    provider = SyntheticAutoVIDataset(seed=SEED, counts=TINY)
    loaded = provider.load_category(generated[category].parent, category)
    spec = CATEGORY_SPECS[category]
    defective = sum(TINY.multiple if f == "multiple" else TINY.per_defect for f in spec.folders)
    assert (loaded.dataset, loaded.name, loaded.native_size) == ("synthetic_autovi", category, DEFAULT_SIZES[category])
    assert loaded.summary() == {"train": TINY.train, "test_good": TINY.test_good, "test_defective": defective}
    assert loaded.defect_dirs == sorted(spec.folders)
    for sample in loaded.test:
        channels = loaded.load_channels(sample, shape=DEFAULT_SIZES[category])
        assert [cfg.defect_name for _, cfg in channels] == list(spec.folders.get(sample.defect_dir, ()))
        assert all(mask.any() for mask, _ in channels)


def _config(folder: Path) -> dict[str, dict[str, object]]:
    return {entry["defect_name"]: entry for entry in json.loads((folder / "defects_config.json").read_text())}


@pytest.mark.parametrize("category", SYNTHETIC_AUTOVI_CATEGORIES)
def test_defects_config_is_valid_for_the_reader(generated: dict[str, Path], category: str) -> None:
    folder = generated[category]
    configs = read_defects_config(folder / "defects_config.json")  # the official evaluator's strictness
    assert [c.defect_name for c in configs] == [d.name for d in CATEGORY_SPECS[category].defects]
    for entry in _config(folder).values():
        expected_type = float if entry["relative_saturation"] else int
        assert type(entry["saturation_threshold"]) is expected_type
    values = {c.pixel_value: c.defect_name for c in configs}
    for defect_dir, names in CATEGORY_SPECS[category].folders.items():
        for gt in (folder / "ground_truth" / defect_dir).iterdir():
            rgb = [np.asarray(Image.open(p)) for p in pngs(gt)]
            assert all((c[:, :, 0] == c[:, :, 1]).all() and (c[:, :, 0] == c[:, :, 2]).all() for c in rgb)
            assert [values[read_mask(p)[1]] for p in pngs(gt)] == list(names)


def test_saturation_rules_follow_the_paper(generated: dict[str, Path]) -> None:
    """0.7 of the area for missing items, half the area for pipe_clip, the smallest hoop seen in good
    images (an absolute pixel count) for engine_wiring's blue hoop."""
    for category in ("pipe_staple", "tank_screw", "underbody_screw"):
        assert _config(generated[category])["missing"]["saturation_threshold"] == 0.7
        assert _config(generated[category])["missing"]["relative_saturation"] is True
    clip = _config(generated["pipe_clip"])
    assert {name: (e["saturation_threshold"], e["relative_saturation"]) for name, e in clip.items()} == {
        "unclipped": (0.5, True),
        "operator": (0.5, True),
    }
    hoop = _config(generated["engine_wiring"])["blue_hoop"]
    shots = shot_schedule("engine_wiring", SEED, TINY)
    size = DEFAULT_SIZES["engine_wiring"]
    areas = [
        render("engine_wiring", size=size, seed=SEED, split="train", folder="good", index=i, shot=shots[("train", "good", i)]).measures[
            "hoop_area"
        ]
        for i in range(TINY.train)
    ]
    assert hoop["relative_saturation"] is False and hoop["saturation_threshold"] == min(areas) > 0
    assert len(set(areas)) > 1  # the hoop's size varies between good images


# --- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_pixels(generated: dict[str, Path], tmp_path: Path) -> None:
    for category in SYNTHETIC_AUTOVI_CATEGORIES:
        again = generate_category(tmp_path / "again", category, seed=SEED, counts=TINY)
        assert all_files(again) == all_files(generated[category])
    other = generate_category(tmp_path / "other", "tank_screw", seed=SEED + 1, counts=TINY)
    for image in pngs(other / "train" / "good"):
        assert not np.array_equal(read_rgb(image), read_rgb(generated["tank_screw"] / "train" / "good" / image.name))


# --- production drift ----------------------------------------------------------------------------
def test_train_images_are_the_first_shots() -> None:
    shots = shot_schedule("pipe_clip", SEED, TINY)
    train = [t for (split, _, _), t in shots.items() if split == "train"]
    test = [t for (split, _, _), t in shots.items() if split == "test"]
    assert max(train) < min(test) and min(train) == 0.0 and max(test) == 1.0
    assert sorted(shots.values()) == pytest.approx(np.linspace(0.0, 1.0, len(shots)))
    goods = sorted(t for (split, folder, _), t in shots.items() if split == "test" and folder == "good")
    assert goods[-1] - goods[0] > 0.3  # test goods are spread over the rest of the series


@pytest.mark.parametrize("category", SYNTHETIC_AUTOVI_CATEGORIES)
def test_later_shots_are_darker_and_warmer(category: str) -> None:
    """The same scene shot later in the series: dimmer, with more red and less blue (the documented drift)."""
    kwargs = dict(size=DEFAULT_SIZES[category], seed=SEED, split="test", folder="good", index=0)
    early = render_image(category, shot=0.0, **kwargs)[0].astype(float)
    late = render_image(category, shot=1.0, **kwargs)[0].astype(float)
    assert late.mean() < 0.95 * early.mean()
    early_rb = early[:, :, 0].mean() / early[:, :, 2].mean()
    late_rb = late[:, :, 0].mean() / late[:, :, 2].mean()
    assert late_rb > early_rb * 1.03


def test_test_goods_are_systematically_shifted_from_train_goods(tmp_path: Path) -> None:
    counts = SyntheticAutoVICounts(train=12, test_good=12, per_defect=1, multiple=1)
    for category in ("engine_wiring", "underbody_pipes"):  # single-model scenes with slight lighting changes
        folder = generate_category(tmp_path, category, seed=SEED, counts=counts)
        train = np.stack([read_rgb(p).astype(float) for p in pngs(folder / "train" / "good")])
        test = np.stack([read_rgb(p).astype(float) for p in pngs(folder / "test" / "good")])
        assert test.mean() < 0.97 * train.mean(), category
        assert test[..., 0].mean() / test[..., 2].mean() > train[..., 0].mean() / train[..., 2].mean(), category


# --- masks and defects ---------------------------------------------------------------------------
@pytest.mark.parametrize("category", SYNTHETIC_AUTOVI_CATEGORIES)
def test_masks_align_with_the_rendered_defects(category: str) -> None:
    """Inside a defect's mask the image differs from its defect-free twin; outside it does not."""
    size = DEFAULT_SIZES[category]
    for defect_dir in CATEGORY_SPECS[category].folders:
        for index in range(3):
            kwargs = dict(size=size, seed=SEED, split="test", folder=defect_dir, index=index, shot=0.8)
            image, channels = render_image(category, **kwargs)
            twin, none = render_image(category, with_defects=False, **kwargs)
            assert none == [] and [n for n, _ in channels] == list(CATEGORY_SPECS[category].folders[defect_dir])
            diff = np.abs(image.astype(float) - twin.astype(float)).mean(axis=2)
            union = np.logical_or.reduce([m for _, m in channels])
            assert diff[~union].mean() < 1.0, (category, defect_dir, index)
            for name, mask in channels:
                assert mask.any() and diff[mask].mean() > 6.0, (category, defect_dir, index, name, diff[mask].mean())


def test_goods_vary_by_model_pose_and_lighting(generated: dict[str, Path]) -> None:
    for category, folder in generated.items():
        train = np.stack([read_rgb(p).astype(float) for p in pngs(folder / "train" / "good")])
        for a in range(len(train)):
            for b in range(a + 1, len(train)):
                assert np.abs(train[a] - train[b]).mean() > 1.0, category


# --- caching and the provider ------------------------------------------------------------------
def test_cached_category_is_reused_and_foreign_folders_are_kept(tmp_path: Path) -> None:
    folder = generate_category(tmp_path, "underbody_screw", seed=SEED, counts=TINY)
    stamp = (folder / "train" / "good" / "000.png").stat().st_mtime_ns
    assert generate_category(tmp_path, "underbody_screw", seed=SEED, counts=TINY) == folder
    assert (folder / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    marker = json.loads((folder / ".autovi-synthetic.json").read_text())
    assert (marker["generator"], marker["version"], marker["size"]) == (GENERATOR, GENERATOR_VERSION, [120, 160])
    synthetic = generate_synthetic(tmp_path / "other", "clip_assembly", size=32)
    (tmp_path / "other" / "pipe_clip").mkdir()
    with pytest.raises(DataError, match="not a generated synthetic_autovi category"):
        generate_category(tmp_path / "other", "pipe_clip", seed=SEED, counts=TINY)
    synthetic.rename(tmp_path / "other" / "tank_screw")  # another generator's category is not ours either
    with pytest.raises(DataError, match="not a generated synthetic_autovi category"):
        generate_category(tmp_path / "other", "tank_screw", seed=SEED, counts=TINY)
    with pytest.raises(DataError, match="unknown synthetic_autovi category"):
        generate_category(tmp_path, "clip_assembly")


def test_provider_default_root_and_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOVI_CACHE_DIR", str(tmp_path / "cache"))
    provider = SyntheticAutoVIDataset()
    root = provider.default_root()
    assert root == tmp_path / "cache" / "synthetic_autovi" / f"v{GENERATOR_VERSION}" and root.is_dir()
    assert provider.categories(None) == list(SYNTHETIC_AUTOVI_CATEGORIES) == provider.categories(root)
    (tmp_path / "foreign" / "something").mkdir(parents=True)
    assert provider.categories(tmp_path / "foreign") == []
    assert SyntheticAutoVIDataset(scale=0.5).native_size("underbody_pipes") == (375, 500)
    image, channels = render_image("underbody_screw", size=(180, 240), seed=SEED, split="test", folder="missing", index=0, shot=0.5)
    assert image.shape == (180, 240, 3) and channels[0][1].shape == (180, 240) and channels[0][1].any()
    with pytest.raises(DataError, match="scale must be positive"):
        SyntheticAutoVIDataset(scale=0.0)
