"""PatchCore: the conformance suite plus checks of each step against independent references."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from autovi_plugin_patchcore.coreset import (
    coreset_indices,
    greedy_k_center,
    random_projection,
)
from autovi_plugin_patchcore.features import patch_features
from autovi_plugin_patchcore.scoring import NearestNeighbours, reweighted_image_scores

from autovi_core.testing import DetectorConformance


class TestPatchCoreConformance(DetectorConformance):
    detector = "patchcore"
    category = "clip_assembly"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.961


class TestPatchCoreOnTexture(DetectorConformance):
    detector = "patchcore"
    category = "textured_plate"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.989


# --- coreset -----------------------------------------------------------------------------------------
def brute_force_k_center(points: np.ndarray, n_select: int, first: int) -> list[int]:
    """Farthest-point selection with the full pairwise distance matrix."""
    full = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    chosen = [first]
    for _ in range(n_select - 1):
        chosen.append(int(np.argmax(full[:, chosen].min(axis=1))))
    return chosen


def test_greedy_k_center_equals_brute_force_on_2d_points() -> None:
    points = np.random.default_rng(0).normal(size=(300, 2))
    first = 17
    # Large initial distances, largest at ``first``: it is picked first, then every distance is exact.
    initial = np.full(len(points), 1e6)
    initial[first] = 1e9
    chosen = greedy_k_center(torch.from_numpy(points), 25, torch.from_numpy(initial))
    assert chosen.tolist() == brute_force_k_center(points, 25, first)


def test_projection_is_identity_when_dimension_is_small() -> None:
    torch.manual_seed(0)
    features = torch.randn(50, 8)
    assert random_projection(features, 128, torch.Generator().manual_seed(0)) is features


def test_coverage_radius_decreases_monotonically() -> None:
    points = torch.from_numpy(np.random.default_rng(1).uniform(size=(500, 2)))
    order = greedy_k_center(points, 60, torch.full((500,), 1e9))
    radii = [torch.cdist(points, points[order[: m + 1]]).min(dim=1).values.max().item() for m in range(60)]
    assert all(b <= a + 1e-12 for a, b in pairwise(radii))
    assert radii[-1] < radii[0] / 4


def test_coreset_size_determinism_and_covering() -> None:
    # 40 tight clusters in 200 dimensions: a 50-point coreset (after projection to 32 dims) hits them all.
    generator = torch.Generator().manual_seed(0)
    centres = 10 * torch.randn(40, 200, generator=generator)
    labels = torch.arange(2000) % 40
    features = centres[labels] + 0.1 * torch.randn(2000, 200, generator=generator)
    a = coreset_indices(features, 0.025, projection_dim=32, seed=3)
    b = coreset_indices(features, 0.025, projection_dim=32, seed=3)
    assert len(a) == 50 and torch.equal(a, b) and len(set(a.tolist())) == 50
    assert set(labels[a].tolist()) == set(range(40))
    assert torch.equal(coreset_indices(features, 1.0), torch.arange(2000))


# --- nearest neighbours and reweighting ------------------------------------------------------------
def test_faiss_matches_brute_force_numpy() -> None:
    rng = np.random.default_rng(2)
    bank, queries = rng.normal(size=(400, 24)).astype(np.float32), rng.normal(size=(60, 24)).astype(np.float32)
    distances, indices = NearestNeighbours(torch.from_numpy(bank), torch.device("cpu")).search(torch.from_numpy(queries), k=3)
    full = np.linalg.norm(queries[:, None] - bank[None], axis=2)
    expected = np.sort(full, axis=1)[:, :3]
    np.testing.assert_allclose(distances.numpy(), expected, rtol=1e-4, atol=1e-4)  # not squared
    np.testing.assert_array_equal(indices.numpy(), np.argsort(full, axis=1)[:, :3])


def test_reweighting_on_a_hand_computed_case() -> None:
    # Bank on a line; the worst test patch sits at x=3 and its nearest bank vector is m* = 2.
    bank = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    knn = NearestNeighbours(bank, torch.device("cpu"))
    feats = torch.tensor([[[0.5], [3.0]]])  # one image, two patches
    scores = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    nearest = torch.tensor([[0, 2]])
    # N_3(m*=2) = {2, 1, 0}; distances from the test patch: 1, 2, 3.
    expected = (1 - math.exp(1) / (math.exp(1) + math.exp(2) + math.exp(3))) * 1.0
    got = reweighted_image_scores(feats, scores, nearest, knn, b=3)
    assert got.item() == pytest.approx(expected, rel=1e-9)


# --- patch features ----------------------------------------------------------------------------------
def test_patch_features_average_neighbourhoods_and_align_grids() -> None:
    torch.manual_seed(0)
    shallow, deep = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    out = patch_features({"a": shallow, "b": deep}, ["a", "b"], patch_size=3, target_dim=1024)
    assert out.shape == (2, 10, 8, 8)
    assert torch.allclose(out[:, :4, 3, 3], shallow[:, :, 2:5, 2:5].mean(dim=(2, 3)), atol=1e-6)
    reduced = patch_features({"a": shallow, "b": deep}, ["a", "b"], patch_size=3, target_dim=4)
    assert reduced.shape == (2, 4, 8, 8)
