"""AnomalyDINO: the conformance suite plus checks of each step against independent references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from autovi_plugin_anomalydino import features as features_module
from autovi_plugin_anomalydino.detector import AnomalyDINO
from autovi_plugin_anomalydino.features import network_size, rotate, rotate_resampled, tokens_to_grid, usable_cells
from autovi_plugin_anomalydino.masking import MAX_COVERAGE, first_component, foreground_mask, otsu_threshold
from autovi_plugin_anomalydino.scoring import CosineNearestNeighbour, top_count, top_fraction_mean
from scipy import ndimage
from scipy.spatial.distance import cdist

from autovi_core.backbones import WeightsSource
from autovi_core.errors import CombinationError, ConfigError
from autovi_core.testing import DetectorConformance

README = Path(__file__).resolve().parents[1] / "README.md"


class TestAnomalyDINOConformance(DetectorConformance):
    readme = README
    detector = "anomalydino"
    category = "clip_assembly"
    min_auroc = 0.9  # reaches 1.0 (12 references, rotated copies added)
    min_pixel_auroc = 0.75  # reaches 0.83


class TestAnomalyDINOMaskedTexture(DetectorConformance):
    """The masking path (PCA mask, fallbacks, their provenance) through the whole kit. On a texture the
    mask is rarely trusted and the images fall back to no mask, which is what keeps the quality."""

    readme = README
    detector = "anomalydino"
    category = "textured_plate"
    overrides = {"masking": True, "rotations": []}
    min_auroc = 0.9  # reaches 1.0
    min_pixel_auroc = 0.9  # reaches 0.99


# --- scoring --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [1 << 24, 100])  # one block, and blocks of 2 query rows
def test_cosine_distances_match_scipy(budget: int) -> None:
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(50, 8)), rng.normal(size=(21, 8))
    knn = CosineNearestNeighbour(torch.from_numpy(bank), torch.device("cpu"), budget=budget)
    got = knn.distances(torch.from_numpy(queries)).numpy()
    expected = cdist(queries, bank, metric="cosine").min(axis=1)
    assert got.dtype == np.float32 and got.shape == (21,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cosine_distance_ignores_scale_and_reaches_both_ends() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    knn = CosineNearestNeighbour(bank, torch.device("cpu"))
    got = knn.distances(torch.tensor([[5.0, 0.0], [-2.0, 0.0], [1.0, 1.0]])).numpy()
    np.testing.assert_allclose(got, [0.0, 1.0, 1.0 - np.sqrt(0.5)], atol=1e-6)  # (-1, 0) is orthogonal to (0, 3)
    far = CosineNearestNeighbour(torch.tensor([[1.0, 0.0]]), torch.device("cpu"))
    assert far.distances(torch.tensor([[-1.0, 0.0]])).item() == pytest.approx(2.0)


def test_top_one_percent_mean_on_known_numbers() -> None:
    values = np.random.default_rng(1).permutation(np.arange(1000.0))
    assert top_count(1000, 0.01) == 10
    assert top_fraction_mean(values, 0.01) == pytest.approx(np.arange(990.0, 1000.0).mean())  # 994.5
    assert top_fraction_mean(values.reshape(10, 100), 0.01) == pytest.approx(994.5)
    assert top_fraction_mean(np.array([0.2, 0.9, 0.4]), 0.01) == pytest.approx(0.9)  # fewer than 100: the maximum
    assert top_count(100, 0.29) == 29  # 0.29 * 100 is 28.999... in floating point
    assert top_fraction_mean(np.arange(10.0), 1.0) == pytest.approx(4.5)
    with pytest.raises(ValueError):
        top_fraction_mean(np.array([]), 0.01)


# --- geometry and rotations ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "short", "multiple", "expected"),
    [
        ((100, 150), 448, 14, (448, 672)),
        ((150, 100), 448, 14, (672, 448)),
        ((700, 1000), 448, 14, (448, 644)),  # 640 rounded to the nearest multiple of 14
        ((64, 64), 128, 16, (128, 128)),
        ((100, 101), 448, 14, (448, 448)),
    ],
)
def test_network_size_keeps_the_aspect_ratio_on_the_grid(shape: tuple, short: int, multiple: int, expected: tuple) -> None:
    assert network_size(*shape, short, multiple) == expected


def test_resampled_rotation_by_90_degrees_is_rot90() -> None:
    batch = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    turned, coverage = rotate_resampled(batch, 90.0)
    torch.testing.assert_close(turned, torch.rot90(batch, 1, dims=(-2, -1)), atol=1e-5, rtol=1e-5)
    assert bool((coverage > 1 - 1e-4).all())
    exact, full = rotate(batch, 270.0)
    assert torch.equal(exact, torch.rot90(batch, 3, dims=(-2, -1))) and bool((full == 1).all())


def test_rotation_by_45_degrees_marks_the_corners_unusable() -> None:
    batch = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    turned, coverage = rotate(batch, 45.0)
    assert turned.shape == batch.shape
    assert coverage[0, 0] == 0 and coverage[32, 32] == pytest.approx(1.0)
    cells = usable_cells(coverage, (8, 8))
    assert not cells[0, 0] and not cells[0, 7] and not cells[7, 0] and not cells[7, 7]
    assert cells[3:5, 3:5].all()
    assert usable_cells(torch.ones(64, 64), (8, 8)).all()


def test_tokens_to_grid_drops_class_and_register_tokens() -> None:
    prefix, h, w, dims = 5, 2, 3, 4  # one class token + four registers, as vit_small_patch14_reg4_dinov2
    tokens = torch.arange(2 * (prefix + h * w) * dims, dtype=torch.float32).reshape(2, prefix + h * w, dims)
    grid = tokens_to_grid(tokens, prefix, (h, w))
    assert grid.shape == (2, dims, h, w)
    torch.testing.assert_close(grid[1, :, 1, 2], tokens[1, prefix + 1 * w + 2])  # row-major patch order
    with pytest.raises(ValueError, match="not 5 prefix tokens"):
        tokens_to_grid(tokens, prefix, (3, 3))


# --- masking ---------------------------------------------------------------------------------------------
def _grid_with_foreground(foreground: np.ndarray, seed: int, dims: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    background_vector, object_vector = rng.normal(size=dims), rng.normal(size=dims)
    features = np.where(foreground[..., None], object_vector, background_vector)
    return features + 0.05 * rng.normal(size=(*foreground.shape, dims))


def test_pca_mask_finds_a_known_foreground() -> None:
    truth = np.zeros((16, 16), dtype=bool)
    truth[5:12, 4:13] = True
    features = _grid_with_foreground(truth, seed=4)
    raw = foreground_mask(features, dilation=0)
    assert not raw.fallback and np.array_equal(raw.mask, truth)
    assert raw.coverage == pytest.approx(truth.mean())
    grown = foreground_mask(features, dilation=1)
    assert np.array_equal(grown.mask, ndimage.binary_dilation(truth, structure=np.ones((3, 3), bool)))


def test_pca_mask_picks_the_centred_group_even_when_it_is_the_larger_one() -> None:
    truth = np.ones((12, 12), dtype=bool)
    truth[:, :3] = False  # the object fills 3/4 of the frame, background on the left
    mask = foreground_mask(_grid_with_foreground(truth, seed=5), dilation=0)
    assert not mask.fallback and np.array_equal(mask.mask, truth)


def test_pca_mask_with_a_fixed_threshold_tries_both_signs() -> None:
    truth = np.zeros((10, 10), dtype=bool)
    truth[3:7, 3:7] = True
    features = _grid_with_foreground(truth, seed=6)
    projection = first_component(features.reshape(100, -1))
    assert otsu_threshold(projection) == pytest.approx(otsu_threshold(-projection) * -1)
    cut = float(np.abs(projection).min()) / 2  # between the two groups whatever the component's sign
    assert np.array_equal(foreground_mask(features, threshold=cut, dilation=0).mask, truth)


def test_pca_mask_falls_back_when_it_covers_almost_nothing_or_everything() -> None:
    speck = np.zeros((16, 16), dtype=bool)
    speck[0, 0] = True  # the centred group is everything but one corner patch
    result = foreground_mask(_grid_with_foreground(speck, seed=7), dilation=0)
    assert result.fallback and result.mask.all() and result.coverage > MAX_COVERAGE
    constant = foreground_mask(np.ones((8, 8, 5)), dilation=1)
    assert constant.fallback and constant.mask.all()


def test_pca_mask_considers_only_usable_cells() -> None:
    truth = np.zeros((16, 16), dtype=bool)
    truth[6:10, 6:10] = True
    features = _grid_with_foreground(truth, seed=8)
    usable = np.ones((16, 16), dtype=bool)
    usable[:3, :3] = False
    features[:3, :3] = 100.0  # what a rotated copy's empty corner might hold: ignored, not a third group
    result = foreground_mask(features, dilation=0, usable=usable)
    assert not result.fallback and np.array_equal(result.mask, truth)
    assert result.coverage == pytest.approx(truth.sum() / usable.sum())


# --- the detector ----------------------------------------------------------------------------------------
def _images(shapes: list[tuple[int, int]], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8) for shape in shapes]


def test_vit_patch_tokens_path_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper's feature path (timm ViT tokens at a non-default, non-square size) with a small ViT whose
    weights the test gives explicitly (seeded), since no DINOv2 weights exist offline."""
    import timm

    torch.manual_seed(9)
    given = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()

    def fake_load_backbone(backbone: str, weights: object) -> tuple:
        assert backbone == "vit_tiny_patch16_224"
        return given, WeightsSource("file", "test", "vit_tiny_patch16_224: seeded test weights")

    monkeypatch.setattr(features_module, "load_backbone", fake_load_backbone)
    detector = AnomalyDINO("paper", backbone="vit_tiny_patch16_224", resize=32, rotations=[90.0], masking=False)
    references = _images([(32, 48), (48, 32)], seed=10)
    detector.fit(references)
    # 32x48 -> 2x3 patches, 48x32 -> 3x2, each with its 90-degree copy: 4 views x 6 patches
    assert detector.bank.shape == (24, given.embed_dim)
    assert detector.provenance["rotations_applied"] == [90.0] and "patch tokens" in detector.provenance["features"]
    independent = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True).eval()
    independent.load_state_dict(given.state_dict())
    with torch.inference_mode():
        tokens = independent.forward_features(features_module.to_tensor(references[:1], (32, 48)))[0, 1:]
    expected = torch.nn.functional.normalize(tokens, dim=1).numpy()
    np.testing.assert_allclose(detector.bank[:6], expected, rtol=1e-4, atol=1e-5)
    prediction = detector.predict(references + _images([(40, 40)], seed=11), output_size=(20, 30))
    assert prediction.maps.shape == (3, 20, 30) and np.isfinite(prediction.maps).all()
    assert prediction.scores[:2] == pytest.approx([0.0, 0.0], abs=1e-5)  # the references are in the bank
    assert prediction.scores[2] > 0.01


def test_masking_fills_bank_and_provenance_consistently() -> None:
    from autovi_plugin_anomalydino.masking import foreground_mask as mask_of

    detector = AnomalyDINO("fast", masking=True, rotations=[], resize=64)
    images = _images([(64, 64)] * 3, seed=12)
    for image in images:  # a bright centred square on a dark background: an object the PCA can find
        image[...] //= 4
        image[20:44, 20:44] = 200
    detector.fit(images)
    expected = 0
    for image in images:
        grid = detector._feature_source()(features_module.to_tensor([image], (64, 64)))[0].permute(1, 2, 0).numpy()
        expected += int(mask_of(grid, dilation=1).mask.sum())
    assert detector.bank.shape[0] == expected
    assert detector.provenance["reference_views"] == 3
    assert detector.provenance["mask_fallback_reference_views"] == int(detector.reference_fallback.sum())


def test_refuses_to_run_without_the_vit_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    import autovi_core.backbones.weights as weights

    tried: list[str] = []

    def no_hub(backbone: str, model: object) -> None:
        tried.append(backbone)
        return None

    monkeypatch.setattr(weights, "_try_hub", no_hub)
    for name in ("AUTOVI_WEIGHTS_VIT_SMALL_PATCH14_DINOV2_LVD142M", "AUTOVI_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    detector = AnomalyDINO("paper")
    with pytest.raises(ConfigError) as info:
        detector.fit(_images([(56, 56)], seed=13))
    message = str(info.value)
    assert "no pretrained weights for backbone 'vit_small_patch14_dinov2.lvd142m'" in message, message
    assert "--weights FILE" in message and "AUTOVI_WEIGHTS_VIT_SMALL_PATCH14_DINOV2_LVD142M" in message
    assert "never runs on random weights" in message and "\n" not in message
    assert tried == ["vit_small_patch14_dinov2.lvd142m"] and not detector.fitted


# --- hyperparameters -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("profile", "overrides", "pattern"),
    [
        ("paper", {"layers": ["blocks.2"]}, r"layers=\['blocks.2'\] refused: the ViT 'vit_small_patch14_dinov2.lvd142m' gives"),
        ("paper", {"resize": 450}, r"resize=450 refused: not a multiple of 14, the patch side"),
        ("fast", {"resize": 120}, r"resize=120 refused: not a multiple of 16"),
        ("fast", {"layers": ["blocks.4", "blocks.2"]}, r"not from the shallowest to the deepest"),
        ("fast", {"rotations": [90.0, 90.0]}, r"rotations=\[90.0, 90.0\] refused: \[90.0\] named more than once"),
    ],
)
def test_check_hparams_refuses_impossible_combinations(profile: str, overrides: dict, pattern: str) -> None:
    with pytest.raises(CombinationError, match=pattern) as info:
        AnomalyDINO.resolve_hparams(profile, overrides)
    assert str(info.value).startswith("detector 'anomalydino': ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("top_fraction", 0.0), ("top_fraction", 1.5), ("rotations", [0.0]), ("rotations", [360.0]), ("mask_dilation", -1), ("resize", 4)],
)
def test_out_of_domain_values_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"'anomalydino': {key}=") as info:
        AnomalyDINO.resolve_hparams("fast", {key: value})
    assert not isinstance(info.value, CombinationError)


def test_set_strings_parse() -> None:
    assert AnomalyDINO.parse_overrides({"rotations": "90,180", "masking": "no", "mask_threshold": "none"}) == {
        "rotations": [90.0, 180.0],
        "masking": False,
        "mask_threshold": None,
    }
    assert AnomalyDINO.parse_overrides({"rotations": "[]"}) == {"rotations": []}
