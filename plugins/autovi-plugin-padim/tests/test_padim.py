"""PaDiM: the conformance suite plus the Gaussian statistics against numpy and scipy references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from autovi_plugin_padim.detector import PaDiM
from autovi_plugin_padim.gaussian import StreamingGaussian, batched_inverse, mahalanobis
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from autovi_core.errors import CombinationError, ConfigError
from autovi_core.testing import DetectorConformance


class TestPaDiMConformance(DetectorConformance):
    detector = "padim"
    readme = Path(__file__).resolve().parents[1] / "README.md"
    category = "clip_assembly"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.992


class TestPaDiMOnTexture(DetectorConformance):
    readme = Path(__file__).resolve().parents[1] / "README.md"
    detector = "padim"
    category = "textured_plate"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.994


def random_embeddings(n: int = 23, d: int = 5, p: int = 7) -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(d, d))
    return np.einsum("nkp,dk->ndp", rng.normal(size=(n, d, p)), mixing) + rng.normal(size=(1, d, p))


def test_streamed_mean_and_covariance_equal_numpy_on_all_features() -> None:
    x = random_embeddings()
    stats = StreamingGaussian(dim=5, positions=7)
    for batch in np.array_split(x, [4, 5, 16]):  # uneven batches
        stats.update(torch.from_numpy(batch))
    mean, cov = stats.finalize(eps=0.01)
    for p in range(7):
        np.testing.assert_allclose(mean[p].numpy(), x[:, :, p].mean(axis=0), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov[p].numpy(), np.cov(x[:, :, p], rowvar=False) + 0.01 * np.eye(5), rtol=1e-9, atol=1e-12)


def test_mahalanobis_equals_scipy() -> None:
    x = random_embeddings()
    stats = StreamingGaussian(dim=5, positions=7)
    stats.update(torch.from_numpy(x[:20]))
    mean, cov = stats.finalize(eps=0.01)
    inverse = batched_inverse(cov, chunk=3)
    np.testing.assert_allclose((inverse @ cov).numpy(), np.broadcast_to(np.eye(5), (7, 5, 5)), atol=1e-9)
    got = mahalanobis(torch.from_numpy(x[20:]), mean, inverse, chunk=2).numpy()
    for b in range(3):
        for p in range(7):
            expected = scipy_mahalanobis(x[20 + b, :, p], mean[p].numpy(), np.linalg.inv(cov[p].numpy()))
            assert abs(got[b, p] - expected) < 1e-9


def test_random_channel_subset_is_fixed_by_the_seed_and_only_when_needed() -> None:
    a, b, c = PaDiM("paper", seed=1), PaDiM("paper", seed=1), PaDiM("paper", seed=2)
    chosen = a._choose_channels(448)
    assert len(chosen) == 100 and len(set(chosen.tolist())) == 100 and chosen.max() < 448
    assert np.array_equal(chosen, b._choose_channels(448)) and not np.array_equal(chosen, c._choose_channels(448))
    assert np.array_equal(PaDiM("fast")._choose_channels(176), np.arange(176))


# --- hyperparameter domains and combinations ---------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "domain"),
    [
        ("eps", 0, "a number > 0"),  # a singular covariance: Cholesky fails or the distances blow up
        ("eps", -0.01, "a number > 0"),
        ("d", 0, "an integer >= 1"),
        ("blur_sigma", -1.0, "a number >= 0"),
        ("crop", 0, "an integer >= 16"),
        ("resize", 8, "an integer >= 16"),
        ("batch_size", 0, "an integer >= 1"),
        ("layers", [], "a list of 1 or more"),
    ],
)
def test_out_of_domain_values_are_refused_by_name(key: str, value: object, domain: str) -> None:
    with pytest.raises(ConfigError) as info:
        PaDiM.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert f"detector 'padim': {key}={value!r} refused" in message and domain in message, message
    assert not isinstance(info.value, CombinationError)


def test_set_strings_that_are_no_number_are_refused_by_name() -> None:
    for key, text in (("d", "abc"), ("eps", "abc"), ("d", "1.5")):
        with pytest.raises(ConfigError, match=rf"detector 'padim': --set {key}={text} refused: expects"):
            PaDiM.parse_overrides({key: text})
    assert PaDiM.parse_overrides({"layers": "layer1, layer2", "crop": "none"}) == {"layers": ["layer1", "layer2"], "crop": None}


@pytest.mark.parametrize(
    ("profile", "overrides", "match"),
    [
        ("paper", {"crop": 288}, r"crop=288 refused: larger than resize=256"),
        ("fast", {"crop": 160}, r"crop=160 refused: larger than resize=128"),
        ("paper", {"layers": ["layer1", "layer5"]}, r"layers=\['layer1', 'layer5'\] refused: backbone 'resnet18' has no \['layer5'\]"),
        ("fast", {"layers": ["layer1", "layer2"]}, r"backbone 'tf_efficientnet_lite0' has no \['layer1', 'layer2'\]"),
        ("paper", {"layers": ["layer1", "layer2", "layer1"]}, r"\['layer1'\] named more than once"),
        ("paper", {"layers": ["layer3", "layer1"]}, r"layers=\['layer3', 'layer1'\] refused: not from the shallowest to the deepest"),
        ("paper", {"crop": 220}, r"crop=220 refused: not a multiple of 16"),
        ("fast", {"resize": 100}, r"resize=100 refused: not a multiple of 16"),
        ("fast", {"resize": 144, "layers": ["blocks.1", "blocks.6"]}, r"resize=144 refused: .* multiple of 32"),
        ("fast", {"backbone": "convnext_tiny", "resize": 120}, r"resize=120 refused: .* multiple of 16"),
    ],
)
def test_impossible_combinations_are_refused_by_name(profile: str, overrides: dict, match: str) -> None:
    with pytest.raises(CombinationError, match=match) as info:
        PaDiM.resolve_hparams(profile, overrides)
    assert str(info.value).startswith("detector 'padim': ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("profile", "overrides"),
    [
        ("paper", {"layers": ["layer1", "layer2", "layer3"]}),
        ("paper", {"resize": 250, "crop": 224}),  # only the network input needs the stride
        ("paper", {"layers": ["layer2", "layer4"], "crop": 192}),
        ("fast", {"resize": 144}),
        ("fast", {"backbone": "convnext_tiny", "layers": ["stages.0", "stages.1"], "resize": 100}),  # unknown strides: left to timm
    ],
)
def test_possible_combinations_are_accepted(profile: str, overrides: dict) -> None:
    assert PaDiM(profile, **overrides).hparams.items() >= overrides.items()
