"""SuperSimpleNet: the conformance suite plus checks of each step against closed forms and scipy."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from autovi_plugin_supersimplenet.detector import SuperSimpleNet
from autovi_plugin_supersimplenet.features import combine_layers, local_average
from autovi_plugin_supersimplenet.networks import SuperSimpleNetModel, binary_focal, feature_anomalies, truncated_l1
from scipy import ndimage

from autovi_core.augmentation import AugmentedImages, recipe
from autovi_core.errors import ConfigError
from autovi_core.testing import DetectorConformance

README = Path(__file__).resolve().parents[1] / "README.md"


class TestSuperSimpleNetConformance(DetectorConformance):
    readme = README
    detector = "supersimplenet"
    category = "textured_plate"
    short_overrides = {"epochs": 2}
    min_auroc = 0.8  # measured 0.90 (seed 0, 30 epochs)
    min_pixel_auroc = 0.9  # measured 0.98


# --- feature-space anomalies ------------------------------------------------------------------------------
def test_noise_only_inside_the_mask_with_the_chosen_variance() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(2, 16, 64, 64)).astype(np.float32))
    mask = torch.from_numpy(rng.random((2, 64, 64)) < 0.4)
    sigma = 0.25
    generator = torch.Generator().manual_seed(0)
    out = feature_anomalies(features, mask, sigma, generator=generator)
    diff = (out - features).permute(0, 2, 3, 1)  # (N, h, w, D)
    assert torch.equal(diff[~mask], torch.zeros_like(diff[~mask]))
    inside = diff[mask].double()
    assert inside.numel() > 50_000
    assert inside.mean().item() == pytest.approx(0.0, abs=0.005)
    assert inside.var().item() == pytest.approx(sigma**2, rel=0.02)


def test_noise_depends_on_the_generator_only() -> None:
    torch.manual_seed(0)
    features = torch.zeros((1, 4, 8, 8))
    mask = torch.ones((1, 8, 8), dtype=torch.bool)
    a = feature_anomalies(features, mask, 1.0, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global state does not matter
    b = feature_anomalies(features, mask, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# --- losses --------------------------------------------------------------------------------------------------
def test_truncated_l1_closed_form() -> None:
    logits = torch.tensor([[-1.0, 0.2, 0.7, -0.3]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # anomalous: max(0, 0.5 - z) -> 1.5, 0.3; normal: max(0, 0.5 + z) -> 1.2, 0.2
    assert truncated_l1(logits, target, 0.5).item() == pytest.approx((1.5 + 0.3 + 1.2 + 0.2) / 4)
    assert truncated_l1(torch.tensor([[2.0, -2.0]]), torch.tensor([[1.0, 0.0]]), 0.5).item() == 0.0


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_binary_focal_closed_form(gamma: float) -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=(3, 5, 5))
    y = (rng.random((3, 5, 5)) < 0.5).astype(np.float64)
    p = 1.0 / (1.0 + np.exp(-z))
    expected = np.mean(-y * (1 - p) ** gamma * np.log(p) - (1 - y) * p**gamma * np.log(1 - p))
    got = binary_focal(torch.from_numpy(z).float(), torch.from_numpy(y).float(), gamma).item()
    assert got == pytest.approx(expected, rel=1e-4)


# --- features ----------------------------------------------------------------------------------------------
def test_local_average_matches_scipy_uniform_filter() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 7, 9)).astype(np.float64)
    got = local_average(torch.from_numpy(x), 3).numpy()
    expected = ndimage.uniform_filter(x, size=(1, 1, 3, 3), mode="constant", cval=0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(local_average(torch.from_numpy(x), 1), torch.from_numpy(x))


def test_layers_are_upsampled_to_a_common_grid_then_averaged() -> None:
    torch.manual_seed(3)
    shallow, deep = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    out = combine_layers({"a": shallow, "b": deep}, ["a", "b"], upscale=2, patch_size=3)
    assert out.shape == (2, 10, 16, 16)
    up = torch.nn.functional.interpolate(shallow, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, :4], local_average(up, 3))
    same = combine_layers({"a": shallow, "b": deep}, ["a", "b"], upscale=1, patch_size=1)
    torch.testing.assert_close(same[:, :4], shallow)


# --- networks ----------------------------------------------------------------------------------------------
def test_heads_shapes_and_the_stopped_gradient() -> None:
    torch.manual_seed(4)
    model = SuperSimpleNetModel(dim=6, seg_width=5, cls_width=3)
    features = torch.randn(2, 6, 8, 8)
    seg, cls = model(features)
    assert seg.shape == (2, 8, 8) and cls.shape == (2,)
    cls.sum().backward()  # the classification loss does not reach the segmentation head
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in model.seg.parameters())
    assert model.adaptor.weight.grad is not None and torch.count_nonzero(model.adaptor.weight.grad) > 0


# --- hyperparameters ---------------------------------------------------------------------------------------
def test_combinations_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="resize=120"):
        SuperSimpleNet("fast", resize=120)
    with pytest.raises(ConfigError, match="lr_milestones"):
        SuperSimpleNet("fast", lr_milestones=[0.9, 0.5])
    with pytest.raises(ConfigError, match="layers"):
        SuperSimpleNet("fast", layers=["blocks.4", "blocks.2"])


# --- --augment: features are extracted again for every epoch's draws -----------------------------------------
def test_augmented_training_extracts_every_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    originals = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in range(4)]
    detector = SuperSimpleNet("fast", seed=0, epochs=3, seg_width=4, cls_width=2)
    seen: list[list[np.ndarray]] = []

    def fake_features(images: Any, description: str) -> torch.Tensor:
        seen.append([np.asarray(image).copy() for image in images])
        return torch.from_numpy(np.random.default_rng(len(seen)).normal(size=(len(images), 6, 8, 8)).astype(np.float32))

    monkeypatch.setattr(detector, "_features", fake_features)
    monkeypatch.setattr(detector, "_feature_extractor", lambda: SimpleNamespace(weights_source=SimpleNamespace(description="test")))
    detector.fit(AugmentedImages(originals, recipe("autovi-paper"), seed=0))
    assert len(seen) == 3  # epoch 0 (the list itself), then epochs 1 and 2
    assert any(not np.array_equal(a, b) for a, b in zip(seen[1], seen[2]))
    seen.clear()
    plain = SuperSimpleNet("fast", seed=0, epochs=3, seg_width=4, cls_width=2)
    monkeypatch.setattr(plain, "_features", fake_features)
    monkeypatch.setattr(plain, "_feature_extractor", lambda: SimpleNamespace(weights_source=SimpleNamespace(description="test")))
    plain.fit(originals)
    assert len(seen) == 1  # without augmentation the features are extracted once
