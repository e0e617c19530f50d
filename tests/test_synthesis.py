"""Tests of autovi_core.synthesis: Perlin noise and masks, anomaly sources, augmentation, blend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autovi_core.errors import ConfigError, DataError
from autovi_core.synthesis import (
    MixedSource,
    ProceduralTextureSource,
    SolidColourSource,
    TextureFolderSource,
    TrainingCropSource,
    augment_source,
    blend_anomaly,
    make_source,
    perlin_mask,
    perlin_masks,
    perlin_noise,
    random_perlin_noise,
    synthesize_anomaly,
)


def test_importing_synthesis_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, autovi_core.synthesis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --- Perlin noise ---------------------------------------------------------------------------------
def test_noise_is_deterministic_under_a_seed() -> None:
    a = random_perlin_noise((40, 56), np.random.default_rng(3))
    b = random_perlin_noise((40, 56), np.random.default_rng(3))
    c = random_perlin_noise((40, 56), np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("shape", [(32, 32), (37, 53), (64, 20)])
@pytest.mark.parametrize("angle", [0.0, 33.0, -90.0])
def test_noise_shape_and_range(shape: tuple[int, int], angle: float) -> None:
    noise = perlin_noise(shape, (4.0, 8.0), np.random.default_rng(0), angle=angle)
    assert noise.shape == shape and noise.dtype == np.float32
    assert np.all(np.abs(noise) <= 1.0 + 1e-6)


def test_noise_statistics() -> None:
    rng = np.random.default_rng(0)
    draws = np.stack([perlin_noise((64, 64), (8.0, 8.0), rng) for _ in range(64)])
    assert abs(float(draws.mean())) < 0.02
    assert 0.15 < float(draws.std()) < 0.6

    # Lag-1 correlation: close to 1 for smooth noise, ~0 for white noise.
    def lag1(x: np.ndarray) -> float:
        a, b = x[:, :, :-1].ravel(), x[:, :, 1:].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    white = rng.standard_normal(draws.shape)
    assert lag1(draws) > 0.8
    assert abs(lag1(white)) < 0.05


def test_noise_zero_at_lattice_points() -> None:
    # Gradient noise vanishes on lattice corners: sample exactly there with 1 period per 8 pixels
    # (pixel centres sit at half-pixel offsets, so use the analytic property on a fine grid instead).
    noise = perlin_noise((64, 64), (1.0, 1.0), np.random.default_rng(0))
    assert abs(float(noise[32, 32])) < 0.05  # the image centre is a lattice point (+/- half a pixel)


def test_mask_share_within_band() -> None:
    rng = np.random.default_rng(0)
    masks = perlin_masks(300, (64, 64), rng, threshold=0.5)
    assert masks.shape == (300, 64, 64) and masks.dtype == bool
    share = float(masks.mean())
    assert 0.01 < share < 0.12, share
    looser = float(perlin_masks(300, (64, 64), np.random.default_rng(0), threshold=0.2).mean())
    assert looser > share * 2


def test_masks_deterministic_nonempty_non_square() -> None:
    a = perlin_masks(5, (30, 70), np.random.default_rng(9), nonempty=True)
    b = perlin_masks(5, (30, 70), np.random.default_rng(9), nonempty=True)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 30, 70)
    assert all(m.any() for m in a)
    assert perlin_mask((8, 8), np.random.default_rng(0), threshold=2.0).sum() == 0


# --- sources -------------------------------------------------------------------------------------
def _check_texture(texture: np.ndarray, shape: tuple[int, int]) -> None:
    assert texture.shape == (*shape, 3) and texture.dtype == np.float32
    assert texture.min() >= 0.0 and texture.max() <= 1.0


def test_procedural_source_draws_every_kind() -> None:
    source = ProceduralTextureSource()
    for kind in source.KINDS:
        texture = getattr(source, f"_{kind}")((33, 47), np.random.default_rng(1))
        _check_texture(np.clip(texture, 0, 1).astype(np.float32), (33, 47))
        assert texture.std() > 0.01, kind
    a = source.sample((20, 30), np.random.default_rng(5))
    np.testing.assert_array_equal(a, source.sample((20, 30), np.random.default_rng(5)))
    assert "procedural" in source.describe()


def test_training_crop_source() -> None:
    images = [np.full((40, 40, 3), v, np.uint8) for v in (10, 200)]
    source = TrainingCropSource(images)
    texture = source.sample((16, 24), np.random.default_rng(0))
    _check_texture(texture, (16, 24))
    assert np.isclose(texture.std(), 0, atol=1e-6)  # crops of constant images stay constant
    assert source.describe() == "train_crops(2 images)"
    with pytest.raises(ConfigError):
        TrainingCropSource([])


def test_texture_folder_source(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(tmp_path / "sub" / "a.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "b.jpg")
    source = TextureFolderSource(tmp_path)
    assert len(source.files) == 2 and "2 images" in source.describe()
    values = {float(source.sample((8, 8), np.random.default_rng(s)).mean().round(1)) for s in range(10)}
    assert values == {0.0, 1.0}
    with pytest.raises(DataError):
        TextureFolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        TextureFolderSource(tmp_path / "empty")


def test_make_source_choices(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "t.png")
    train = [np.zeros((16, 16, 3), np.uint8)] * 3
    assert isinstance(make_source("auto", tmp_path, train), TextureFolderSource)
    auto = make_source("auto", None, train)
    assert isinstance(auto, MixedSource) and "train_crops" in auto.describe() and "procedural" in auto.describe()
    assert isinstance(make_source("procedural", None, train), ProceduralTextureSource)
    assert isinstance(make_source("train_crops", None, train), TrainingCropSource)
    assert make_source("train_crops", None, [np.zeros((8, 8, 3), np.uint8)] * 100, np.random.default_rng(0)).describe() == (
        "train_crops(64 images)"
    )
    with pytest.raises(ConfigError):
        make_source("folder", None, train)
    with pytest.raises(ConfigError):
        make_source("dtd", None, train)
    with pytest.raises(ConfigError):
        make_source("train_crops", None, None)


def test_solid_colour_source() -> None:
    texture = SolidColourSource().sample((5, 7), np.random.default_rng(0))
    _check_texture(texture, (5, 7))
    assert np.allclose(texture, texture[0, 0])


# --- augmentation and blend -----------------------------------------------------------------------
def test_augment_source_range_and_determinism() -> None:
    texture = ProceduralTextureSource().sample((32, 32), np.random.default_rng(0))
    for seed in range(20):
        out = augment_source(texture, np.random.default_rng(seed))
        _check_texture(out, (32, 32))
    np.testing.assert_array_equal(augment_source(texture, np.random.default_rng(1)), augment_source(texture, np.random.default_rng(1)))


def test_blend_formula() -> None:
    image = np.full((4, 4, 3), 0.2, np.float32)
    source = np.full((4, 4, 3), 1.0, np.float32)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    out = blend_anomaly(image, source, mask, beta=0.25)
    np.testing.assert_allclose(out[~mask], 0.2)
    np.testing.assert_allclose(out[mask], 0.75 * 1.0 + 0.25 * 0.2, rtol=1e-6)
    np.testing.assert_allclose(blend_anomaly(image, source, mask, 1.0), image)
    np.testing.assert_allclose(blend_anomaly(image, source, mask, 0.0)[mask], 1.0)
    with pytest.raises(ValueError):
        blend_anomaly(image, source, mask, 1.5)


def test_synthesize_anomaly_changes_only_masked_pixels() -> None:
    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).uniform(0, 1, (48, 40, 3)).astype(np.float32)
    source = ProceduralTextureSource()
    n_anomalous = 0
    for _ in range(20):
        out, mask = synthesize_anomaly(image, source, rng)
        assert out.shape == image.shape and mask.shape == (48, 40) and mask.dtype == np.float32
        outside = mask == 0
        np.testing.assert_allclose(out[outside], image[outside], atol=1e-6)
        n_anomalous += bool(mask.any())
    assert 3 <= n_anomalous <= 17  # about half the samples carry an anomaly
    out, mask = synthesize_anomaly(image, source, rng, anomaly_prob=1.0)
    assert mask.any()
