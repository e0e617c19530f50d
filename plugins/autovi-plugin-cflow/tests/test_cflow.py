"""CFlow-AD: the conformance suite plus checks of the flow algebra and of the training-only normaliser."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from autovi_plugin_cflow.detector import CFlow
from autovi_plugin_cflow.flow import ConditionalFlow, CouplingBlock, positional_encoding_2d
from autovi_plugin_cflow.training import layer_log_likelihoods, learning_rate

from autovi_core.errors import CombinationError, ConfigError
from autovi_core.testing import ConformanceData, DetectorConformance


class TestCFlowConformance(DetectorConformance):
    detector = "cflow"
    category = "textured_plate"
    min_auroc = 0.9  # the fast profile reaches 1.0 on this category
    gpu_paths_on_cpu = True
    min_pixel_auroc = 0.9  # reaches 0.989
    readme = Path(__file__).parents[1] / "README.md"


# --- positional encoding -----------------------------------------------------------------------------
def test_positional_encoding_shape_and_values() -> None:
    pe = positional_encoding_2d(8, 3, 5)
    assert pe.shape == (8, 3, 5)
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    w1 = 10000 ** (-2 / 4)  # second frequency of a 4-channel half
    expected = [torch.sin(cols), torch.cos(cols), torch.sin(cols * w1), torch.cos(cols * w1),
                torch.sin(rows), torch.cos(rows), torch.sin(rows * w1), torch.cos(rows * w1)]  # fmt: skip
    for channel, values in enumerate(expected):
        torch.testing.assert_close(pe[channel], values)
    with pytest.raises(ValueError):
        positional_encoding_2d(6, 2, 2)


# --- coupling blocks ---------------------------------------------------------------------------------
def random_block(channels: int = 5, condition: int = 4, permute_soft: bool = True) -> CouplingBlock:
    torch.manual_seed(0)
    block = CouplingBlock(channels, condition, permute_soft=permute_soft, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():  # move away from the near-identity initialisation
        for p in block.parameters():
            p.add_(torch.randn_like(p))
    return block


@pytest.mark.parametrize("permute_soft", [True, False])
def test_coupling_block_is_invertible(permute_soft: bool) -> None:
    block = random_block(permute_soft=permute_soft)
    x, c = torch.randn(32, 5, dtype=torch.float64), torch.randn(32, 4, dtype=torch.float64)
    y, _ = block(x, c)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(block.inverse(y, c), x, rtol=1e-10, atol=1e-10)


def test_coupling_log_det_equals_autograd_jacobian() -> None:
    block = random_block()
    x, c = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: block(v, c)[0], x).reshape(5, 5)
    _, log_det = block(x, c)
    assert log_det.item() == pytest.approx(torch.linalg.slogdet(jacobian).logabsdet.item(), rel=1e-9, abs=1e-9)


def test_soft_clamp_bounds_the_log_scale() -> None:
    block = random_block()
    with torch.no_grad():
        block.subnet[-1].weight.mul_(1e4)
    s, _ = block._scale_shift(torch.randn(64, block.split, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64))
    assert s.abs().max() <= block.clamp


def test_flow_is_invertible_and_its_likelihood_is_a_density() -> None:
    torch.manual_seed(0)
    flow = ConditionalFlow(2, 4, blocks=3, seed=0).double()
    c = torch.randn(1, 4, dtype=torch.float64)
    x = torch.randn(16, 2, dtype=torch.float64)
    z, _ = flow(x, c.expand(16, -1))
    torch.testing.assert_close(flow.inverse(z, c.expand(16, -1)), x)
    # integrate p(x | c) over a grid of the plane: about 1 for a 2-D density
    axis = torch.linspace(-8, 8, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_likelihood(grid, c.expand(len(grid), -1)).exp()
    assert float(density.sum() * (axis[1] - axis[0]) ** 2) == pytest.approx(1.0, abs=0.02)


def test_learning_rate_warms_up_then_decays() -> None:
    hp = {"lr": 1.0, "meta_epochs": 10, "warmup_epochs": 2}
    assert learning_rate(hp, 0) == pytest.approx(0.1)
    rates = [learning_rate(hp, e) for e in np.linspace(2, 10, 20)]
    assert all(b <= a for a, b in zip(rates, rates[1:])) and rates[-1] == pytest.approx(1e-3)


# --- the likelihood normaliser comes from training data ---------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ConformanceData:
    return ConformanceData(tmp_path_factory.mktemp("cflow-data"), "textured_plate", 64)


@pytest.fixture(scope="module")
def trained(data: ConformanceData) -> CFlow:
    detector = CFlow("fast", meta_epochs=2, sub_epochs=1)
    detector.fit(data.train)
    return detector


def test_normaliser_is_the_training_maximum(trained: CFlow, data: ConformanceData) -> None:
    per_layer = layer_log_likelihoods(trained.flows, trained._features(data.train), trained.hparams["condition_dims"], "cpu")
    np.testing.assert_allclose(trained.normaliser, [float(ll.max()) for ll in per_layer])
    layers = len(trained.layers())
    maps = trained.predict(data.train, (64, 64)).maps
    assert maps.min() >= 0.0 and maps.max() <= layers  # documented bound: [0, number of layers]
    for ll, offset in zip(per_layer, trained.normaliser):  # the most likely training fibre has probability 1
        assert float(torch.exp(ll.max() - offset)) == 1.0
    test_maps = trained.predict(data.test, (64, 64)).maps
    assert test_maps.min() >= 0.0 and test_maps.max() <= layers


def test_predicting_test_images_does_not_change_the_normaliser(trained: CFlow, data: ConformanceData) -> None:
    before = trained.normaliser.copy()
    everything = trained.predict(data.test, (48, 48))
    assert np.array_equal(trained.normaliser, before)
    few = trained.predict(data.test[:3], (48, 48))  # no batch or test-set statistics: same values alone
    np.testing.assert_allclose(few.maps, everything.maps[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(few.scores, everything.scores[:3], rtol=1e-6)


def test_saved_state_carries_the_normaliser(trained: CFlow, tmp_path: Path) -> None:
    loaded = CFlow.load(trained.save(tmp_path / "m"))
    assert np.array_equal(loaded.normaliser, trained.normaliser)
    assert loaded.provenance["weights_source"] and math.isfinite(float(loaded.normaliser.sum()))


def test_checkpoints_and_resume(data: ConformanceData, tmp_path: Path) -> None:
    straight = CFlow("fast", meta_epochs=2, sub_epochs=1, seed=3)
    straight.fit(data.train[:4])
    folder = tmp_path / "ckpt"
    first = CFlow("fast", meta_epochs=2, sub_epochs=1, seed=3, checkpoint_every=1, checkpoint_dir=str(folder))
    first.fit(data.train[:4])
    assert sorted(p.name for p in folder.glob("step-*.pt")) == ["step-000000001.pt", "step-000000002.pt"]
    (folder / "step-000000002.pt").unlink()
    resumed = CFlow("fast", meta_epochs=2, sub_epochs=1, seed=3, checkpoint_every=1, checkpoint_dir=str(folder))
    resumed.fit(data.train[:4])
    np.testing.assert_allclose(resumed.normaliser, straight.normaliser, rtol=1e-6)


# --- hyperparameter domains and impossible combinations -----------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "domain"),
    [
        ("condition_dims", 30, "a multiple of 4"),  # the positional encoding splits its channels in four
        ("loss", "mse", "one of 'logsigmoid', 'nll'"),
        ("meta_epochs", 0, "an integer >= 1"),  # no training: untrained flows, plausible-looking maps
        ("coupling_blocks", 0, "an integer >= 1"),
        ("lr", 0.0, "a number > 0"),
        ("clamp", -1.9, "a number > 0"),
        ("image_size", 100, "a multiple of 8"),
        ("layers", [], "a list of 1 or more"),
        ("checkpoint_every", 0, "an integer >= 1, or none"),
    ],
)
def test_out_of_domain_values_are_refused_by_name(key: str, value: object, domain: str) -> None:
    with pytest.raises(ConfigError) as info:
        CFlow.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert not isinstance(info.value, CombinationError), message
    assert "'cflow'" in message and f"{key}=" in message and domain in message and "\n" not in message, message


def test_set_strings_outside_the_domain_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"'cflow': --set condition_dims=abc refused: expects an integer >= 4, a multiple of 4"):
        CFlow.parse_overrides({"condition_dims": "abc"})
    with pytest.raises(ConfigError, match=r"'cflow': --set loss=NLL refused: expects one of 'logsigmoid', 'nll'"):
        CFlow.parse_overrides({"loss": "NLL"})
    assert CFlow.parse_overrides({"layers": "blocks.2, blocks.4", "checkpoint_every": "none"}) == {
        "layers": ["blocks.2", "blocks.4"],
        "checkpoint_every": None,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 80}, "image_size=80 refused: not a multiple of 32, the stride of the deepest of the preset layers"),
        (
            {"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"], "image_size": 200},
            "image_size=200 refused: not a multiple of 16",
        ),
        ({"layers": ["layer2", "layer3"]}, "layers=['layer2', 'layer3'] refused: backbone 'tf_efficientnet_lite0' has no"),
        ({"layers": ["blocks.2", "blocks.2"]}, "layers=['blocks.2', 'blocks.2'] refused: ['blocks.2'] named more than once"),
        ({"checkpoint_every": 2}, "checkpoint_every=2 refused: checkpoint_dir is none"),
    ],
)
def test_impossible_combinations_are_refused_by_check_hparams(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(CombinationError) as info:
        CFlow.resolve_hparams("fast", overrides)
    assert str(info.value).startswith("detector 'cflow': ") and message in str(info.value) and "\n" not in str(info.value)


def test_check_hparams_accepts_what_the_code_handles() -> None:
    # shallower layers allow finer sizes; an unknown backbone's custom layers are checked when it is built
    assert CFlow.resolve_hparams("fast", {"layers": ["blocks.2", "blocks.4"], "image_size": 96})["image_size"] == 96
    assert CFlow.resolve_hparams("fast", {"backbone": "resnet34", "layers": ["layer2"], "image_size": 72})["layers"] == ["layer2"]
    resolved = CFlow.resolve_hparams("paper", {"checkpoint_dir": "ckpt", "warmup_epochs": 0})
    assert resolved["checkpoint_every"] is None and resolved["checkpoint_dir"] == "ckpt"
