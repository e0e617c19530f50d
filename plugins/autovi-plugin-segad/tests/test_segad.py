"""SegAD: conformance (supervised mode), its building blocks against direct computations, and the
proof that it improves on its base detector under the runner's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from autovi_plugin_segad.classifier import PAPER_SETTINGS, BoostedForest
from autovi_plugin_segad.detector import SegAD, resolve_base_detectors
from autovi_plugin_segad.features import (
    feature_matrix,
    feature_names,
    image_features,
    part_statistics,
)
from autovi_plugin_segad.segmentation import KMeansParts, UserPartMaps, nearest_resize
from scipy import stats

from autovi_core.dataset import KeyedImages
from autovi_core.detector import LabelledDefects
from autovi_core.errors import CombinationError, ConfigError, DataError
from autovi_core.registry import get_registry
from autovi_core.testing import DetectorConformance

SIZE = 64
BASE = {"patchcore": {"resize": SIZE}}


class TestSegAD(DetectorConformance):
    readme = Path(__file__).resolve().parents[1] / "README.md"
    detector = "segad"
    overrides: ClassVar[dict[str, Any]] = {"base_detectors": ["patchcore"], "base_overrides": BASE}
    image_size = SIZE


# --- features ------------------------------------------------------------------------------------
def test_part_statistics_match_numpy_and_scipy() -> None:
    values = np.random.default_rng(0).gamma(2.0, size=500)
    expected = [np.quantile(values, 0.995), values.mean(), stats.skew(values), stats.kurtosis(values)]
    np.testing.assert_allclose(part_statistics(values), expected, rtol=1e-12)


def test_empty_and_constant_parts_give_zeros() -> None:
    np.testing.assert_array_equal(part_statistics(np.array([])), np.zeros(4))
    np.testing.assert_array_equal(part_statistics(np.full(10, 0.5)), [0.5, 0.5, 0.0, 0.0])


def test_image_features_layout() -> None:
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(8, 8)), rng.normal(size=(8, 8))]
    parts = np.zeros((8, 8), dtype=int)
    parts[4:] = 2  # part 1 is empty
    row = image_features(maps, parts, n_parts=3)
    names = feature_names(["a", "b"], 3)
    assert row.shape == (len(names),) == (4 * 3 * 2 + 2,)
    got = dict(zip(names, row))
    assert got["a/part0/q995"] == pytest.approx(np.quantile(maps[0][:4], 0.995))
    assert got["b/part2/kurtosis"] == pytest.approx(stats.kurtosis(maps[1][4:].ravel()))
    assert all(got[f"a/part1/{s}"] == 0 for s in ("q995", "mean", "skew", "kurtosis"))
    assert got["b/max"] == maps[1].max()
    stacked = feature_matrix([m[None] for m in maps], parts[None], 3)
    np.testing.assert_array_equal(stacked[0], row)


# --- classifier ----------------------------------------------------------------------------------
def test_forest_has_the_papers_settings() -> None:
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(30, 5)), np.r_[np.zeros(20), np.ones(10)]
    forest = BoostedForest(seed=7, n_jobs=1).fit(features, labels)
    params = forest.model.get_params()
    for key, value in {
        "n_estimators": 10, "num_parallel_tree": 200, "max_depth": 5, "learning_rate": 0.3,
        "objective": "binary:logitraw", "subsample": 0.6, "colsample_bytree": 0.6,
        "colsample_bynode": 0.6, "reg_alpha": 1.0, "random_state": 7,
    }.items():  # fmt: skip
        assert params[key] == value, key
    assert params["scale_pos_weight"] == pytest.approx(30 / 10)
    assert set(PAPER_SETTINGS) <= set(SegAD.profiles["paper"])


def test_forest_json_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(30, 5)), np.r_[np.zeros(20), np.ones(10)]
    features[labels == 1] += 1.0
    forest = BoostedForest(seed=0, n_jobs=1).fit(features, labels)
    forest.save(tmp_path / "forest.json")
    again = BoostedForest.load(tmp_path / "forest.json", seed=0, n_jobs=1)
    np.testing.assert_allclose(again.score(features), forest.score(features), rtol=1e-6)
    assert (tmp_path / "forest.json").read_text().lstrip().startswith("{")


# --- part segmentation ---------------------------------------------------------------------------
def scene(shift: int, rng: np.random.Generator) -> np.ndarray:
    """A grey background with a red square and a blue disc, shifted by ``shift`` px, plus noise."""
    image = np.full((64, 64, 3), 120.0)
    image[16 + shift : 32 + shift, 10 + shift : 26 + shift] = (200, 40, 40)
    rows, cols = np.mgrid[:64, :64]
    image[(rows - 44 - shift) ** 2 + (cols - 44 - shift) ** 2 < 64] = (40, 60, 210)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("features", ["backbone", "colour"])
def test_kmeans_part_labels_are_stable_across_images(features: str) -> None:
    rng = np.random.default_rng(0)
    train = [scene(int(s), rng) for s in rng.integers(-2, 3, size=6)]
    parts = KMeansParts(3, features, input_size=128, position_weight=0.1).fit(train, (64, 64), use_cache=False)
    a, b = parts.labels([scene(-1, rng), scene(1, rng)], (64, 64))
    for r, c in ((24, 18), (44, 44), (4, 60)):  # inside the square, the disc and the background
        assert a[r, c] == b[r, c]
    # colour separates all three; Lite0 features (stride 8-16 on a toy scene) at least object vs background
    assert len({a[24, 18], a[44, 44], a[4, 60]}) >= (3 if features == "colour" else 2)


def test_kmeans_parts_are_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = [scene(0, rng) for _ in range(3)]
    first = KMeansParts(2, "colour").fit(train, (32, 32))
    again = KMeansParts(2, "colour").fit(train, (32, 32))
    np.testing.assert_array_equal(first.centroids, again.centroids)


def test_user_part_maps_are_read(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = {"train/good/000": scene(0, rng), "test/crack/007": scene(2, rng)}
    for key, image in images.items():
        (tmp_path / "cat" / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "cat" / f"{key}.png")
    good = np.zeros((32, 32), np.uint8)
    good[16:] = 1
    (tmp_path / "parts" / "crack").mkdir(parents=True)
    np.save(tmp_path / "parts" / "000.npy", good)  # <stem>.npy at the top
    Image.fromarray((good * 2).astype(np.uint8)).save(tmp_path / "parts" / "crack" / "007.png")  # <defect_dir>/<stem>.png
    by_content = UserPartMaps(tmp_path / "parts", tmp_path / "cat", n_parts=3)
    labels = by_content.labels(list(images.values()), (64, 64))
    np.testing.assert_array_equal(labels[0], nearest_resize(good.astype(np.int64), (64, 64)))
    assert set(np.unique(labels[1])) == {0, 2}

    # images from the runner carry their paths: no image folder needed, and the pixels do not matter
    by_path = UserPartMaps(tmp_path / "parts", None, n_parts=3)
    keyed = KeyedImages([np.zeros((8, 8, 3), np.uint8)] * 2, [f"{key}.png" for key in images])
    np.testing.assert_array_equal(by_path.labels(keyed, (64, 64)), labels)
    with pytest.raises(ConfigError, match="part_maps_images"):
        by_path.labels(list(images.values()), (64, 64))
    with pytest.raises(DataError, match="no part map for test/crack/008"):
        by_path.labels(KeyedImages([images["test/crack/007"]], ["test/crack/008.png"]), (64, 64))


# --- base detectors through the registry --------------------------------------------------------
def test_auto_picks_the_preferred_unsupervised_detector() -> None:
    registry = get_registry()
    assert resolve_base_detectors("auto") == ["patchcore"]  # installed alongside in this repository
    assert not any(registry.detector_class(n).capabilities.supervised for n in resolve_base_detectors("auto"))
    with pytest.raises(ConfigError, match="supervised"):
        resolve_base_detectors(["segad"])


def test_fit_refuses_no_labelled_defects() -> None:
    with pytest.raises(ConfigError, match="supervised"):
        SegAD("fast", base_detectors=["patchcore"]).fit([np.zeros((32, 32, 3), np.uint8)] * 4, LabelledDefects())


def test_cross_fit_folds_partition_the_goods() -> None:
    detector = SegAD("fast", base_detectors=["patchcore"], negatives="cross_fit", folds=4, seed=3)
    folds = detector.fold_goods(22)
    assert len(folds) == 4 and sorted(np.concatenate(folds).tolist()) == list(range(22))
    assert [len(f) for f in folds] == [6, 6, 5, 5]
    with pytest.raises(ValueError, match="at least 8"):
        detector.fold_goods(7)
    with pytest.raises(ConfigError, match="negatives"):
        SegAD("fast", base_detectors=["patchcore"], negatives="all")


# --- the proof: SegAD on top of PatchCore vs PatchCore alone, under the runner's protocol -------------
PROOF_CATEGORY = "wire_harness"
PROOF_SEEDS = range(5)
PROOF_HELD_OUT = 0.25
"""The synthetic category has only 36 goods after calibration: the paper's 10 % would leave SegAD
4 negatives (VisA gives it ~90); a quarter gives it 9, and its PatchCore still sees 27 goods."""


def test_segad_beats_patchcore_alone_over_seeds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SegAD on PatchCore against PatchCore alone (fitted on all the goods) on the same evaluation
    images, mean image AUROC over 5 seeds, with both ways of getting SegAD's negatives.

    The category is wire_harness, whose cable path varies from part to part: with 36 goods PatchCore
    flags unseen cable paths, and SegAD learns from 10 labelled defects that high scores on the cable
    part are mostly normal. Measured: PatchCore 0.905, SegAD 0.915 (paper split, a quarter held
    out) and 0.926 (cross_fit). Where the base detector is already near its ceiling SegAD does not
    help: on textured_plate PatchCore 0.973 vs SegAD 0.951, on clip_assembly 0.907 vs 0.899, and
    with 200 goods on wire_harness 0.984 vs 0.984 (the plugin's README).

    Per seed, like ``autovi run``: 10 % of train goods held out for calibration, 10 labelled
    defects carved out of the test split; PatchCore alone gets the remaining goods, SegAD gets the
    same goods. Both score the same images."""
    from autovi_core.datasets.autovi import read_autovi_category
    from autovi_core.datasets.synthetic import generate_category
    from autovi_core.experiment import split_calibration, split_labelled
    from autovi_core.metrics.classification import image_auroc

    folder = generate_category(tmp_path_factory.mktemp("proof"), PROOF_CATEGORY, size=SIZE, seed=0)
    category = read_autovi_category(folder, dataset="synthetic", name=PROOF_CATEGORY, native_size=(SIZE, SIZE))
    registry = get_registry()
    modes = {"split": {"held_out_fraction": PROOF_HELD_OUT}, "cross_fit": {"negatives": "cross_fit"}}
    alone: list[float] = []
    segad: dict[str, list[float]] = {mode: [] for mode in modes}
    for seed in PROOF_SEEDS:
        train, _ = split_calibration(category.train, 0.1, seed)
        test, labelled = split_labelled(category.test, 10, seed)
        goods, images = category.load_images(train), category.load_images(test)
        defects = LabelledDefects(images=category.load_images(labelled))
        labels = [s.label for s in test]

        patchcore = registry.create_detector("patchcore", "fast", seed=seed, **BASE["patchcore"])
        patchcore.fit(goods)
        alone.append(image_auroc(patchcore.predict(images, (SIZE, SIZE)).scores, labels))
        for mode, settings in modes.items():
            detector = registry.create_detector("segad", "fast", seed=seed, base_detectors=["patchcore"], base_overrides=BASE, **settings)
            detector.fit(goods, defects)
            segad[mode].append(image_auroc(detector.predict(images, (SIZE, SIZE)).scores, labels))
    print(f"\nimage AUROC per seed  PatchCore {np.round(alone, 4)}")
    for mode, values in segad.items():
        print(f"SegAD ({mode}) {np.round(values, 4)}  mean {np.mean(values):.4f} vs PatchCore {np.mean(alone):.4f}")
    for values in segad.values():
        assert np.mean(values) >= np.mean(alone)


# --- hyperparameter domains and combinations (no fits) -------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "domain"),
    [
        ("held_out_fraction", 0.0, "a number in (0, 1)"),
        ("held_out_fraction", 1.0, "a number in (0, 1)"),
        ("negatives", "all", "one of 'split', 'cross_fit'"),
        ("folds", 1, "an integer >= 2"),
        ("n_parts", 0, "an integer >= 1"),
        ("segmentation", "grid", "one of 'auto', 'backbone', 'colour', 'user'"),
        ("segmentation_input", 100, "a multiple of 16"),
        ("position_weight", -0.5, "a number >= 0"),
        ("map_size", 0, "an integer >= 1"),
        ("base_detectors", [], "a list of 1 or more"),
        ("base_profile", "slow", "one of 'paper', 'fast', or none"),
        ("base_overrides", ["patchcore"], "a mapping {base detector name: {hyperparameter: value}}"),
        ("base_overrides", {"patchcore": 64}, "a mapping {base detector name: {hyperparameter: value}}"),
        ("n_estimators", 0, "an integer >= 1"),  # no boosting round: every score equal
        ("learning_rate", 0.0, "a number in (0, 1]"),  # eta 0: every score equal
        ("subsample", 0.0, "a number in (0, 1]"),
        ("objective", "binary:hinge", "one of 'binary:logitraw', 'binary:logistic'"),  # 0/1 scores
        ("reg_alpha", -1.0, "a number >= 0"),
        ("n_jobs", 0, "an integer >= 1"),
    ],
)
def test_out_of_domain_value_is_refused_by_name(key: str, value: Any, domain: str) -> None:
    with pytest.raises(ConfigError) as info:
        SegAD.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert message.startswith(f"detector 'segad': {key}=") and domain in message and "\n" not in message, message
    with pytest.raises(ConfigError, match=f"{key}="):
        SegAD("fast", **{key: value})


def test_set_strings_that_are_not_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"detector 'segad': --set held_out_fraction=abc refused: expects a number in \(0, 1\)"):
        SegAD.parse_overrides({"held_out_fraction": "abc"})
    with pytest.raises(ConfigError, match=r"--set folds=2\.5 refused: expects an integer >= 2"):
        SegAD.parse_overrides({"folds": "2.5"})
    with pytest.raises(ConfigError, match="base_overrides="):
        SegAD.parse_overrides({"base_overrides": "patchcore"})


def test_base_detectors_set_strings_give_a_name_or_a_list() -> None:
    parse = SegAD.parse_overrides
    assert parse({"base_detectors": "auto"}) == {"base_detectors": "auto"}
    assert parse({"base_detectors": "patchcore"}) == {"base_detectors": "patchcore"}
    assert parse({"base_detectors": "patchcore, padim"}) == {"base_detectors": ["patchcore", "padim"]}
    assert parse({"base_detectors": '["patchcore", "padim"]'}) == {"base_detectors": ["patchcore", "padim"]}
    assert parse({"base_overrides": '{"patchcore": {"resize": 64}}'}) == {"base_overrides": BASE}


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ({"base_detectors": "no_such_detector"}, "base_detectors='no_such_detector' refused: unknown detector 'no_such_detector'"),
        ({"base_detectors": ["segad"]}, "base_detectors=['segad'] refused: 'segad' is supervised"),
        ({"base_detectors": ["patchcore", "patchcore"]}, "base_detectors=['patchcore', 'patchcore'] refused: it lists ['patchcore'] twice"),
        (
            {"base_detectors": ["patchcore"], "base_overrides": {"padim": {}}},
            "base_overrides={'padim': {}} refused: names ['padim'], which are not among the base detectors ['patchcore']",
        ),
        ({"segmentation": "user"}, "segmentation='user' refused: it needs part_maps"),
        ({"segmentation": "colour", "part_maps": "parts"}, "part_maps='parts' refused: segmentation='colour' does not read part maps"),
        ({"part_maps_images": "cat"}, "part_maps_images='cat' refused: it only serves to find part maps"),
        ({"n_parts": 5, "map_size": 2}, "n_parts=5 refused: more parts than the map_size=2 grid has cells (4)"),
    ],
)
def test_check_hparams_refuses_impossible_combinations(overrides: dict[str, Any], refusal: str) -> None:
    with pytest.raises(CombinationError) as info:
        SegAD.resolve_hparams("fast", overrides)
    assert str(info.value).startswith(f"detector 'segad': {refusal}") and "\n" not in str(info.value), str(info.value)


def test_base_overrides_are_refused_by_the_base_detector() -> None:
    """A bad nested value stops resolution, naming SegAD's key and the base detector's own refusal."""
    with pytest.raises(CombinationError, match=r"base_overrides=.* refused \(base_profile='fast'\): detector 'patchcore': resize=-1"):
        SegAD.resolve_hparams("fast", {"base_detectors": "patchcore", "base_overrides": {"patchcore": {"resize": -1}}})
    with pytest.raises(CombinationError, match="base_profile='paper'.*no hyperparameter 'no_such'"):
        SegAD.resolve_hparams("fast", {"base_profile": "paper", "base_overrides": {"patchcore": {"no_such": 1}}})
    resolved = SegAD.resolve_hparams("fast", {"base_detectors": ["patchcore"], "base_overrides": BASE})
    assert resolved["base_overrides"] == BASE


def test_checking_hyperparameters_imports_no_torch() -> None:
    """Resolving SegAD's hyperparameters (base detectors looked up in the registry, their overrides
    checked by them) and constructing it, as ``autovi run`` does when it builds tasks, imports no torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from autovi_core.registry import get_registry\n"
        "cls = get_registry().detector_class('segad')\n"
        f"cls.resolve_hparams('fast', {{'base_detectors': ['patchcore'], 'base_overrides': {BASE!r}}})\n"
        f"cls('fast', base_overrides={BASE!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("profile", "base_profile"), [("fast", None), ("fast", "paper"), ("paper", None), ("paper", "fast")])
def test_base_overrides_are_checked_under_the_base_profile(profile: str, base_profile: str | None) -> None:
    """SegAD accepts ``base_overrides`` exactly when the base detector accepts them under the profile
    it will be built with (``base_profile``, else SegAD's own)."""
    patchcore = get_registry().detector_class("patchcore")
    try:
        patchcore.resolve_hparams(base_profile or profile, BASE["patchcore"])
        accepted = True
    except ConfigError:
        accepted = False
    overrides = {"base_detectors": "patchcore", "base_profile": base_profile, "base_overrides": BASE}
    if accepted:
        SegAD.resolve_hparams(profile, overrides)
    else:
        with pytest.raises(CombinationError, match=f"base_profile='{base_profile or profile}'"):
            SegAD.resolve_hparams(profile, overrides)
