"""PaDiM: the conformance suite plus the Gaussian statistics against numpy and scipy references."""

from __future__ import annotations

import numpy as np
import torch
from autovi_plugin_padim.detector import PaDiM
from autovi_plugin_padim.gaussian import StreamingGaussian, batched_inverse, mahalanobis
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis

from autovi_core.testing import DetectorConformance


class TestPaDiMConformance(DetectorConformance):
    detector = "padim"
    category = "clip_assembly"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.992


class TestPaDiMOnTexture(DetectorConformance):
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
