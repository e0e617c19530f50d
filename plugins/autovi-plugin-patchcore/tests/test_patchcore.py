"""PatchCore: the conformance suite plus checks of each step against independent references."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from autovi_plugin_patchcore.coreset import (
    coreset_indices,
    greedy_k_center,
    random_projection,
)
from autovi_plugin_patchcore.detector import PatchCore
from autovi_plugin_patchcore.features import patch_features
from autovi_plugin_patchcore.scoring import NearestNeighbours, reweighted_image_scores
from torch.overrides import TorchFunctionMode

from autovi_core.errors import CombinationError, ConfigError
from autovi_core.testing import DetectorConformance


class TestPatchCoreConformance(DetectorConformance):
    readme = Path(__file__).resolve().parents[1] / "README.md"
    detector = "patchcore"
    category = "clip_assembly"
    min_auroc = 0.9
    min_pixel_auroc = 0.9  # reaches 0.961


class TestPatchCoreOnTexture(DetectorConformance):
    readme = Path(__file__).resolve().parents[1] / "README.md"
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


def test_blas_and_simd_paths_find_the_same_neighbours_and_the_threshold_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search runs faiss's BLAS path from FAISS_BLAS_THRESHOLD queries (the SIMD path of the wheel's
    default is 3x slower there): same neighbours, distances equal to float32 rounding, global left as it was."""
    import faiss
    from autovi_plugin_patchcore import scoring

    rng = np.random.default_rng(5)
    bank, queries = rng.normal(size=(3000, 152)).astype(np.float32), rng.normal(size=(300, 152)).astype(np.float32)
    knn = NearestNeighbours(torch.from_numpy(bank), torch.device("cpu"))
    before = faiss.cvar.distance_compute_blas_threshold
    blas = knn.search(torch.from_numpy(queries), k=3)
    assert faiss.cvar.distance_compute_blas_threshold == before and len(queries) >= scoring.FAISS_BLAS_THRESHOLD
    monkeypatch.setattr(scoring, "FAISS_BLAS_THRESHOLD", 10**9)  # every query count below it: the SIMD path
    simd = knn.search(torch.from_numpy(queries), k=3)
    assert faiss.cvar.distance_compute_blas_threshold == before
    np.testing.assert_array_equal(blas[1].numpy(), simd[1].numpy())
    np.testing.assert_allclose(blas[0].numpy(), simd[0].numpy(), rtol=1e-5, atol=1e-4)


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


# --- hyperparameter domains and combinations -----------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("coreset_ratio", -1, "coreset_ratio=-1"),  # ran and scored AUROC 0.5 before the domains (issue #17)
        ("coreset_ratio", 0.0, "coreset_ratio=0.0"),  # one bank vector
        ("coreset_ratio", 1.5, "coreset_ratio=1.5"),  # silently the same as 1
        ("patch_size", 2, "patch_size=2"),  # even: the patch grid shifts by half a cell
        ("patch_size", 0, "patch_size=0"),  # silently no aggregation
        ("reweight_neighbours", 1, "reweight_neighbours=1"),  # every reweighted image score would be 0
        ("k", 0, "k=0"),
        ("blur_sigma", -1.0, "blur_sigma=-1.0"),  # silently no blur
        ("coreset_start_points", 0, "coreset_start_points=0"),
        ("resize", 8, "resize=8"),
        ("layers", [], "layers=[]"),
    ],
)
def test_out_of_domain_value_is_refused_by_name(key: str, value: object, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        PatchCore.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert not isinstance(info.value, CombinationError)
    assert "'patchcore'" in message and shown in message and str(PatchCore.params[key].domain) in message, message
    assert "\n" not in message


def test_set_string_that_is_not_a_number_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'patchcore': --set coreset_ratio=abc refused: expects a number in \(0(\.0)?, 1(\.0)?\]"):
        PatchCore.parse_overrides({"coreset_ratio": "abc"})
    assert PatchCore.parse_overrides({"coreset_ratio": "0.01", "crop": "none", "layers": "layer2,layer3"}) == {
        "coreset_ratio": 0.01,
        "crop": None,
        "layers": ["layer2", "layer3"],
    }


@pytest.mark.parametrize(
    ("profile", "overrides", "pattern"),
    [
        ("paper", {"crop": 288}, r"crop=288 refused: larger than resize=256"),
        ("paper", {"layers": ["layer2", "blocks.4"]}, r"layers=\['layer2', 'blocks.4'\] refused: backbone 'wide_resnet50_2' has no"),
        ("paper", {"layers": ["layer2", "layer2"]}, r"layers=\['layer2', 'layer2'\] refused: \['layer2'\] named more than once"),
        ("paper", {"layers": ["layer3", "layer2"]}, r"layers=\['layer3', 'layer2'\] refused: not from the shallowest to the deepest"),
        ("fast", {"target_dim": 1}, r"target_dim=1 refused: fewer than the 2 layers"),
        ("fast", {"layers": ["blocks.1", "blocks.2", "blocks.4"], "target_dim": 2}, r"target_dim=2 refused: fewer than the 3 layers"),
        ("fast", {"resize": 120}, r"resize=120 refused: not a multiple of 16"),
        ("paper", {"crop": 200}, r"crop=200 refused: not a multiple of 16"),
        ("paper", {"layers": ["layer2", "layer4"], "resize": 240, "crop": 208}, r"crop=208 refused: .* multiple of 32.*layer4"),
        ("fast", {"backbone": "some_timm_model", "resize": 100}, r"resize=100 refused: .* multiple of 16"),
    ],
)
def test_check_hparams_refuses_impossible_combinations(profile: str, overrides: dict, pattern: str) -> None:
    with pytest.raises(CombinationError, match=pattern) as info:
        PatchCore.resolve_hparams(profile, overrides)
    assert str(info.value).startswith("detector 'patchcore': ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("profile", "overrides"),
    [
        ("paper", {"crop": 256}),  # crop == resize: no crop
        ("paper", {"resize": 250, "crop": 224}),  # only the crop must fit the strides
        ("paper", {"layers": ["layer1", "layer2"], "crop": 216}),  # stride 8 is the deepest
        ("paper", {"layers": ["layer2", "layer4"], "crop": 224}),
        ("fast", {"layers": ["blocks.4"], "target_dim": 1}),
        ("fast", {"backbone": "some_timm_model", "layers": ["stage2"], "resize": 100}),  # strides known to timm only
    ],
)
def test_check_hparams_accepts_possible_combinations(profile: str, overrides: dict) -> None:
    PatchCore(profile, **overrides)


# --- the pruned greedy (coreset_algorithm="pruned") and the memory check ---------------------------
def test_pruned_greedy_equals_brute_force_on_2d_points() -> None:
    from autovi_plugin_patchcore.pruned_greedy import pruned_greedy_k_center

    points = np.random.default_rng(0).normal(size=(300, 2))
    first = 17
    initial = np.full(len(points), 1e6)
    initial[first] = 1e9
    chosen, min_sq, _ = pruned_greedy_k_center(points, 25, initial)
    assert chosen.tolist() == brute_force_k_center(points.astype(np.float32).astype(np.float64), 25, first)
    # the minimum distances it keeps are the true ones to the chosen set (skipped points included)
    p32 = points.astype(np.float32).astype(np.float64)
    expected = np.linalg.norm(p32[:, None] - p32[chosen][None], axis=2).min(axis=1) ** 2
    np.testing.assert_allclose(min_sq, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_selects_what_exact_selects_on_clustered_features(seed: int) -> None:
    # 4000 points in 24 clusters of 64 dims, projected to 32: both algorithms, seeded, same 400 points
    generator = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(24, 64, generator=generator)
    features = centres[torch.arange(4000) % 24] + torch.randn(4000, 64, generator=generator)
    exact = coreset_indices(features, 0.1, projection_dim=32, seed=seed, algorithm="exact")
    pruned = coreset_indices(features, 0.1, projection_dim=32, seed=seed, algorithm="pruned")
    assert torch.equal(exact, pruned)


def test_pruned_progress_wrapper_does_not_change_the_selection() -> None:
    features = torch.randn(3000, 40, generator=torch.Generator().manual_seed(4))
    seen: list[int] = []

    def steps(r: range):  # noqa: ANN202
        for step in r:
            seen.append(step)
            yield step

    wrapped = coreset_indices(features, 0.05, projection_dim=16, algorithm="pruned", steps=steps)
    assert torch.equal(wrapped, coreset_indices(features, 0.05, projection_dim=16, algorithm="pruned"))
    assert seen == list(range(150))


def test_coreset_algorithm_is_a_declared_choice() -> None:
    assert PatchCore.resolve_hparams("paper", {})["coreset_algorithm"] == "pruned"
    assert PatchCore.resolve_hparams("fast", {"coreset_algorithm": "exact"})["coreset_algorithm"] == "exact"
    with pytest.raises(ConfigError, match=r"coreset_algorithm='greedy' refused"):
        PatchCore.resolve_hparams("fast", {"coreset_algorithm": "greedy"})


class EmptyCalls(TorchFunctionMode):
    """Records the positional arguments of every ``torch.empty`` call made inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.empty:
            self.calls.append(args)
        return func(*args, **(kwargs or {}))


def test_bank_that_does_not_fit_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    import autovi_plugin_patchcore.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: (100_000, "available system memory"))
    images = [np.full((64, 64, 3), 100 + i, dtype=np.uint8) for i in range(3)]
    detector = PatchCore("fast", resize=64, batch_size=2)
    # A torch-function mode sees every torch.empty call; replacing torch.empty itself would also end up
    # in the constructor set torch caches for `with torch.device(...)`, breaking it for the process.
    with EmptyCalls() as empty, pytest.raises(ConfigError) as info:
        detector.fit(images)
    allocated = empty.calls
    message = str(info.value)
    assert "\n" not in message, message
    # 3 images x 8 x 8 patches x 152 dims (Lite0 blocks.2 + blocks.4) x 4 bytes
    assert "3 training images x 64 patches = 192 patches x 152 dims x 4 bytes" in message, message
    for option in ("resize/crop", "target_dim", "coreset_ratio"):
        assert option in message, message
    assert allocated and not any(args and args[0] == (192, 152) for args in allocated)  # the spy saw the allocations, not the bank


def test_available_memory_honours_an_address_space_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    import psutil
    from autovi_plugin_patchcore.memory import available_memory, check_bank_fits

    vms = psutil.Process().memory_info().vms
    monkeypatch.setattr(resource, "getrlimit", lambda which: (vms + 50 * 2**20, resource.RLIM_INFINITY))
    available, source = available_memory()
    assert 0 < available <= 50 * 2**20 + 2**20 and "RLIMIT_AS" in source
    check_bank_fits("patchcore", 10, 100, 152, 128)  # 1,000 patches: about 1.2 MB
    with pytest.raises(ConfigError, match=r"= 100,000 patches x 152 dims x 4 bytes = 58.0 MB .*RLIMIT_AS"):
        check_bank_fits("patchcore", 1000, 100, 152, 128)


def test_exact_selection_is_the_one_of_earlier_versions() -> None:
    # Computed with coreset.py before coreset_algorithm existed (autovi-plugin-patchcore 1.1.0).
    features = torch.randn(3000, 200, generator=torch.Generator().manual_seed(7))
    expected = [227, 523, 771, 780, 796, 887, 1017, 1052, 1200, 1264, 1341, 1382, 1532, 1558, 1629]
    expected += [1702, 1830, 1861, 1947, 2212, 2232, 2314, 2596, 2804, 2824, 2885, 2926, 2928, 2939, 2956]
    assert coreset_indices(features, 0.01, projection_dim=128, seed=5, algorithm="exact").tolist() == expected
    assert coreset_indices(features, 0.01, projection_dim=128, seed=5, algorithm="pruned").tolist() == expected
