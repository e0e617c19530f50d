"""The section-6 run options: augmentation statistics, few-shot subsets, centre crops, and how a run records them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from autovi_core.augmentation import RECIPES, AugmentationRecipe, AugmentedImages, epoch_images, recipe
from autovi_core.dataset import Sample
from autovi_core.datasets.synthetic import SyntheticDataset
from autovi_core.errors import ConfigError
from autovi_core.experiment import Task, record_key
from autovi_core.run_options import CroppedCategory, Window, options_label, options_of, split_few_shot
from autovi_core.training import refresh_for_epoch
from tests.cli_runner import run_cli

PAPER = RECIPES["autovi-paper"]


# --- augmentation -----------------------------------------------------------------------------------
def test_paper_recipe_draws_match_section_6_1_over_many_images() -> None:
    draws = [PAPER.draw(seed, epoch, index) for seed in range(4) for epoch in range(10) for index in range(250)]
    angles = np.array([a for a, _ in draws if a is not None])
    variances = np.array([v for _, v in draws if v is not None])
    n = len(draws)
    # each with probability 0.5: within 4.5 binomial standard deviations of n / 2
    for count in (len(angles), len(variances)):
        assert abs(count - n / 2) < 4.5 * np.sqrt(n / 4)
    assert angles.min() >= -15 and angles.max() <= 15
    assert stats.kstest(angles, stats.uniform(loc=-15, scale=30).cdf).pvalue > 1e-3
    assert variances.min() >= 10 and variances.max() <= 120
    assert stats.kstest(variances, stats.uniform(loc=10, scale=110).cdf).pvalue > 1e-3
    rotated = np.array([a is not None for a, _ in draws])
    noisy = np.array([v is not None for _, v in draws])
    table = [[np.sum(rotated & noisy), np.sum(rotated & ~noisy)], [np.sum(~rotated & noisy), np.sum(~rotated & ~noisy)]]
    assert stats.chi2_contingency(table).pvalue > 1e-3  # independent, as the recipe says


def test_draws_depend_on_seed_epoch_and_index_only() -> None:
    assert PAPER.draw(3, 7, 11) == PAPER.draw(3, 7, 11)
    per_epoch = {PAPER.draw(0, epoch, 0) for epoch in range(40)}
    assert len(per_epoch - {(None, None)}) > 20  # fresh draws every epoch (a quarter leave the image as it is)


def test_noise_has_the_drawn_variance() -> None:
    noise_only = AugmentationRecipe("noise", 0.0, 15.0, 1.0, (10.0, 120.0), "test")
    image = np.full((200, 200, 3), 128, np.uint8)  # far from 0 and 255: no clipping
    for index in range(5):
        _, variance = noise_only.draw(0, 0, index)
        out = noise_only.apply(image, 0, 0, index).astype(np.float64)
        # rounding to integers adds 1/12 to the variance
        assert out.var() == pytest.approx(variance + 1 / 12, rel=0.03)
        assert out.mean() == pytest.approx(128, abs=0.1)


def test_rotation_turns_a_point_counter_clockwise_by_the_drawn_angle() -> None:
    rotate_only = AugmentationRecipe("rotate", 1.0, 15.0, 0.0, (10.0, 120.0), "test")
    image = np.zeros((201, 201, 3), np.uint8)
    image[100, 180] = 255  # 80 px right of the centre
    for index in range(5):
        angle, variance = rotate_only.draw(0, 0, index)
        assert variance is None
        out = rotate_only.apply(image, 0, 0, index)[..., 0].astype(np.float64)
        rows, cols = np.nonzero(out)
        weights = out[rows, cols]
        x, y = np.average(cols, weights=weights) - 100, 100 - np.average(rows, weights=weights)
        assert np.degrees(np.arctan2(y, x)) == pytest.approx(angle, abs=0.5)
        assert out.shape == (201, 201)


def test_augmented_images_hold_epoch_zero_and_give_fresh_epochs() -> None:
    rng = np.random.default_rng(0)
    originals = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    images = AugmentedImages(originals, PAPER, seed=5)
    assert len(images) == 6 and images.paths == [f"train/{i}" for i in range(6)]
    assert all(np.array_equal(a, b) for a, b in zip(images, images.for_epoch(0)))
    assert epoch_images(images, 0) is images and epoch_images(originals, 3) is originals
    epoch_1 = epoch_images(images, 1)
    changed = [not np.array_equal(a, o) for a, o in zip(epoch_1, originals)]
    assert sum(changed) >= 3  # P(untouched) = 1/4 per image

    class Holder:
        images = None

    holder = Holder()
    refresh_for_epoch(holder, originals, 1, 16)
    assert holder.images is None  # no augmentation: the dataset is left alone
    refresh_for_epoch(holder, images, 1, 16)
    assert holder.images.shape == (6, 16, 16, 3) and holder.images.dtype == np.float32


def test_unknown_recipe_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="autovi-paper"):
        recipe("flips")


# --- few-shot subsets ---------------------------------------------------------------------------
def _samples(n: int) -> list[Sample]:
    from pathlib import Path

    return [Sample(Path(f"train/good/{i:03d}.png"), "train", "good", 0) for i in range(n)]


def test_few_shot_subsets_are_seeded_nested_and_disjoint_from_calibration() -> None:
    train = _samples(40)
    chosen, held, note = split_few_shot(train, 8, 0.1, seed=3)
    again, held_again, _ = split_few_shot(train, 8, 0.1, seed=3)
    assert chosen == again and held == held_again and note is None
    assert len(chosen) == 8 and len(held) == 4 and not set(map(id, chosen)) & set(map(id, held))
    smaller, _, _ = split_few_shot(train, 4, 0.1, seed=3)
    assert set(s.path for s in smaller) <= set(s.path for s in chosen)  # nested in N under one seed
    other, _, _ = split_few_shot(train, 8, 0.1, seed=4)
    assert [s.path for s in other] != [s.path for s in chosen]


def test_few_shot_hold_out_shrinks_to_what_is_left_with_a_note() -> None:
    train = _samples(20)
    chosen, held, note = split_few_shot(train, 19, 0.1, seed=0)
    assert len(chosen) == 19 and len(held) == 1 and "instead of 2" in note
    chosen, held, note = split_few_shot(train, 20, 0.1, seed=0)
    assert len(held) == 0 and "no calibration hold-out" in note
    with pytest.raises(ConfigError, match="only 20 training images"):
        split_few_shot(train, 21, 0.1, seed=0)


# --- centre crops -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_category(tmp_path_factory):
    provider = SyntheticDataset()
    root = tmp_path_factory.mktemp("synthetic")
    from autovi_core.datasets.synthetic import generate_category

    generate_category(root, "clip_assembly")
    return provider.load_category(root, "clip_assembly")


def test_crop_cuts_images_and_masks_at_the_same_pixels(clip_category) -> None:
    window = Window.parse("96x80")
    cropped = CroppedCategory.of(clip_category, window)
    rows, cols = window.slices(clip_category.native_size)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (24, 104, 16, 112)
    for sample in [s for s in cropped.test if s.label == 1][:6] + cropped.train[:2]:
        full = clip_category.load_image(sample)
        assert np.array_equal(cropped.load_image(sample), full[rows, cols])
        assert cropped.ground_truth_shape(sample) == (80, 96)
        for (mask, config), (full_mask, full_config) in zip(cropped.load_channels(sample, (80, 96)), clip_category.load_channels(sample)):
            assert np.array_equal(mask, full_mask[rows, cols]) and config == full_config


def test_crop_leaves_out_defective_images_whose_defect_is_outside_the_window(clip_category) -> None:
    cropped = CroppedCategory.of(clip_category, Window.parse("6x6"))
    defective = [s for s in clip_category.test if s.label == 1]
    assert cropped.dropped and len(cropped.dropped) + sum(s.label for s in cropped.test) == len(defective)
    for sample in cropped.dropped:
        assert not any(m[Window(6, 6).slices(m.shape)].any() for m, _ in clip_category.load_channels(sample))


def test_crop_larger_than_the_images_is_refused_with_why(clip_category) -> None:
    with pytest.raises(ConfigError, match="larger than the published images needs the uncropped originals"):
        CroppedCategory.of(clip_category, Window.parse("200x100"))
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        Window.parse("200 by 200")


# --- recorded, keyed and shown --------------------------------------------------------------------
def test_options_travel_in_the_task_key_record_and_label() -> None:
    plain = Task(detector="padim", category="clip_assembly")
    task = Task(detector="padim", category="clip_assembly", augment="autovi-paper", train_images=8, crop="96x96")
    assert Task.from_json(task.to_json()) == task
    assert plain.key != task.key
    record = task.base_record()
    assert record["options"] == {"augment": "autovi-paper", "train_images": 8, "crop": "96x96"}
    assert record_key(record) == task.key and record_key(plain.base_record()) == plain.key
    assert record_key({k: v for k, v in plain.base_record().items() if k != "options"}) == plain.key  # records before the options
    assert options_label(options_of(record)) == "augment=autovi-paper, train-images=8, crop=96x96"


def test_cli_run_records_options_and_the_report_shows_them(tmp_path, capsys, monkeypatch, example_plugin) -> None:
    monkeypatch.setenv("AUTOVI_NO_PROGRESS", "1")
    out = tmp_path / "run"
    common = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--in-process", "--output", str(out)]
    assert run_cli(capsys, monkeypatch, *common)[0] == 0
    code, _, err = run_cli(capsys, monkeypatch, *common, "--train-images", "12", "--crop", "96x96", "--augment", "autovi-paper")
    assert code == 0, err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["options"]["crop"] for r in records] == [None, "96x96"]
    assert records[1]["split"]["train"] == 12 and records[1]["split"]["calibration"] == 4
    assert records[0]["experiment_file"] != records[1]["experiment_file"]
    assert (out / records[1]["experiment_file"]).is_file()
    code, report, _ = run_cli(capsys, monkeypatch, "report", str(out))
    assert code == 0 and "pixel_gaussian (augment=autovi-paper, train-images=12, crop=96x96)" in report
    code, _, err = run_cli(capsys, monkeypatch, *common, "--crop", "300x96")
    assert code == 2 and "needs the uncropped originals" in err
    code, _, err = run_cli(capsys, monkeypatch, *common, "--train-images", "0")
    assert code == 2 and "--train-images" in err


def test_a_model_saved_from_a_cropped_run_crops_what_it_predicts(tmp_path, capsys, monkeypatch, example_plugin) -> None:
    """``autovi predict`` on full-size test images gives the scores the cropped run computed."""
    monkeypatch.setenv("AUTOVI_NO_PROGRESS", "1")
    out = tmp_path / "run"
    args = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--in-process", "--save-models", "--crop", "96x96", "--output", str(out)]
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    record = json.loads((out / "results.jsonl").read_text())
    assert record["model_dir"].endswith("seed0-fast-crop-96x96")
    run_scores = {i["key"]: i["score"] for i in json.loads((out / record["experiment_file"]).read_text())["images"]}
    test_dir = SyntheticDataset().default_root() / "clip_assembly" / "test"
    model = str(out / record["model_dir"])
    code, _, err = run_cli(capsys, monkeypatch, "predict", model, str(test_dir), "--output", str(tmp_path / "pred"))
    assert code == 0, err
    predicted = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert all("96x96 window" in " ".join(p["notes"]) for p in predicted)
    by_key = {"/".join(p["path"].split("/")[-2:]).rsplit(".", 1)[0]: p["score"] for p in predicted}
    assert set(run_scores) <= set(by_key)
    for key, score in run_scores.items():
        assert by_key[key] == pytest.approx(score, rel=1e-6, abs=1e-9), key


def test_the_html_report_shows_a_cropped_methods_maps_over_its_window(tmp_path, capsys, monkeypatch, example_plugin) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    from autovi_core.html_report import write_html_report

    monkeypatch.setenv("AUTOVI_NO_PROGRESS", "1")
    out = tmp_path / "run"
    common = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--in-process", "--save-maps", "--output", str(out)]
    assert run_cli(capsys, monkeypatch, *common)[0] == 0
    assert run_cli(capsys, monkeypatch, *common, "--crop", "96x64")[0] == 0
    page = write_html_report(out)
    html = page.read_text() if page.is_file() else (page / "index.html").read_text()
    assert "pixel_gaussian (crop=96x64)" in html and "centred 96x64 window" in html
    windows = sorted((page.parent if page.is_file() else page).rglob("images/*-96x64.png"))
    assert windows
    for picture in windows:
        width, height = Image.open(picture).size
        assert width / height == pytest.approx(96 / 64, rel=0.05)
