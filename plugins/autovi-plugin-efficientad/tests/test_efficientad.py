"""EfficientAD: the conformance suite plus checks of the networks, losses, normalisation and teacher cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from autovi_plugin_efficientad import teacher as teacher_module
from autovi_plugin_efficientad.detector import EfficientAD
from autovi_plugin_efficientad.losses import hard_feature_loss, map_quantiles, normalise_map, quantile
from autovi_plugin_efficientad.networks import Autoencoder, output_side, pdn, receptive_field

from autovi_core.errors import CombinationError, ConfigError
from autovi_core.testing import ConformanceData, DetectorConformance


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Teachers are cached in a fresh folder: the pool is exactly the fit images, runs are reproducible."""
    folder = tmp_path_factory.mktemp("autovi-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOVI_CACHE_DIR", str(folder))
        yield folder


class TestEfficientADConformance(DetectorConformance):
    detector = "efficientad"
    category = "clip_assembly"
    min_auroc = 0.85  # the fast profile reaches 0.98 here (0.73 with 300 training steps)
    gpu_paths_on_cpu = True
    min_pixel_auroc = 0.75  # reaches 0.858

    readme = Path(__file__).parents[1] / "README.md"
    short_overrides = {"steps": 50}  # for the refit-determinism and CUDA-path checks: bfloat16 is slow on the CPU

    def test_gpu_code_paths_run_on_cpu(self, fitted: object, data: ConformanceData, monkeypatch: pytest.MonkeyPatch) -> None:
        """``fitted`` first, in any test order: the teacher is distilled once, by the plain fit, and read
        from the module's cache here (run first, this test distilled it itself, 7 min in all)."""
        super().test_gpu_code_paths_run_on_cpu(data, monkeypatch)


# --- hyperparameter domains and combinations ----------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "domain"),
    [
        ("image_size", 100, "a multiple of 32"),  # the autoencoder's encoder cannot reach a 1 x 1 code
        ("image_size", 32, "an integer >= 64"),  # the unpadded PDN's output grid would be empty
        ("steps", 0, "an integer >= 1"),  # an untrained student still gives plausible-looking maps
        ("lr_drop_at", 0.3, "a number in (0.5, 1"),  # StepLR would drop the rate at 30, 60 and 90 %
        ("ae_dropout", 1.0, "a number in [0"),  # the decoder would see zeros only
        ("q_b", 1.5, "a number in [0"),
        ("hard_quantile", -0.1, "a number in [0"),
        ("validation_fraction", 0.0, "a number in (0"),  # silently became one image
        ("teacher_views", 0, "an integer >= 1, or none"),  # 0 silently meant none
        ("checkpoint_every", 0, "an integer >= 1, or none"),  # 0 silently meant no checkpoints
        ("model_size", "large", "one of 'small', 'medium'"),
        ("map_normalisation", "val", "one of 'validation', 'train'"),  # was refused in __init__, now before any work
        ("teacher_pool", "", "a folder of images, or none"),
    ],
)
def test_out_of_domain_values_are_refused_by_name(key: str, value: object, domain: str) -> None:
    with pytest.raises(ConfigError) as info:
        EfficientAD.resolve_hparams("fast", {key: value})
    message = str(info.value)
    assert "'efficientad'" in message and f"{key}={value!r}" in message and "\n" not in message, message
    assert domain in message and EfficientAD.domains()[key].describe() in message, message
    with pytest.raises(ConfigError, match=key):
        EfficientAD("fast", **{key: value})


def test_set_strings_are_parsed_or_refused_by_name() -> None:
    assert EfficientAD.parse_overrides({"image_size": "128", "teacher_views": "none", "lr": "1e-3"}) == {
        "image_size": 128,
        "teacher_views": None,
        "lr": 1e-3,
    }
    with pytest.raises(ConfigError, match=r"'efficientad': --set image_size=abc refused: expects an integer >= 64"):
        EfficientAD.parse_overrides({"image_size": "abc"})
    with pytest.raises(ConfigError, match=r"--set model_size=large refused: expects one of 'small', 'medium'"):
        EfficientAD.parse_overrides({"model_size": "large"})


@pytest.mark.parametrize(("q_a", "q_b"), [(0.995, 0.9), (0.9, 0.9)])
def test_check_hparams_refuses_q_a_not_below_q_b(q_a: float, q_b: float) -> None:
    """q_b - q_a scales the maps: zero would blow them up, negative would flip them."""
    with pytest.raises(CombinationError, match=rf"'efficientad': q_a={q_a} q_b={q_b} refused: q_a must be below q_b"):
        EfficientAD.resolve_hparams("fast", {"q_a": q_a, "q_b": q_b})
    assert EfficientAD.resolve_hparams("fast", {"q_a": 0.5, "q_b": 0.6})["q_b"] == 0.6


def test_check_hparams_refuses_checkpoints_without_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CombinationError, match=r"'efficientad': checkpoint_every=5 refused: checkpoint_dir is none"):
        EfficientAD.resolve_hparams("fast", {"checkpoint_every": 5})
    with_folder = EfficientAD.resolve_hparams("fast", {"checkpoint_every": 5, "checkpoint_dir": str(tmp_path)})
    assert with_folder["checkpoint_every"] == 5
    assert EfficientAD.resolve_hparams("fast", {"checkpoint_dir": str(tmp_path)})["checkpoint_every"] is None  # resume only


# --- networks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["small", "medium"])
def test_pdn_output_grid_and_receptive_field(size: str) -> None:
    torch.manual_seed(0)
    network = pdn(size, 384, width=0.25)
    assert receptive_field(network) == (33, 4)
    assert network(torch.zeros(1, 3, 256, 256)).shape == (1, 384, 56, 56)
    assert output_side(256) == 56 and output_side(64) == 8


def test_pdn_output_depends_only_on_a_33_pixel_patch() -> None:
    torch.manual_seed(0)
    network = pdn("small", 8, width=0.1)
    image = torch.randn(1, 3, 64, 64)
    changed = image.clone()
    changed[0, :, 33:, :] += 5.0  # rows 33.. are outside the patch of output row 0 (input rows 0..32)
    assert torch.allclose(network(image)[0, :, 0], network(changed)[0, :, 0])
    changed[0, :, 32, :] += 5.0
    assert not torch.allclose(network(image)[0, :, 0], network(changed)[0, :, 0])


def test_autoencoder_matches_the_pdn_grid() -> None:
    torch.manual_seed(0)
    for size in (64, 256):
        assert Autoencoder(16, size, width=0.25)(torch.zeros(1, 3, size, size)).shape == (1, 16, output_side(size), output_side(size))


# --- losses and normalisation ------------------------------------------------------------------------
def test_hard_feature_loss_averages_only_the_hardest_errors() -> None:
    torch.manual_seed(0)
    errors = torch.randperm(1000).double() + 1.0  # squared errors 1..1000 in random order
    student = errors.sqrt().reshape(1, 10, 10, 10).requires_grad_(True)
    loss = hard_feature_loss(torch.zeros(1, 10, 10, 10, dtype=torch.float64), student, q=0.99)
    # the 0.99 quantile lies between the 990th and 991st value: only 991..1000 count
    assert loss.item() == pytest.approx(np.mean(np.arange(991, 1001)))
    loss.backward()
    assert int((student.grad != 0).sum()) == 10


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.995, 0.999, 1.0])
def test_quantile_matches_numpy(q: float) -> None:
    torch.manual_seed(0)
    values = torch.randn(3, 17, 19, dtype=torch.float64)
    assert quantile(values, q).item() == pytest.approx(np.quantile(values.numpy(), q), rel=1e-12, abs=1e-12)


def test_map_normalisation_maps_the_quantiles_to_0_and_0_1() -> None:
    torch.manual_seed(0)
    maps = torch.rand(4, 30, 30, dtype=torch.float64) ** 3
    q_a, q_b = map_quantiles(maps, 0.9, 0.995)
    assert q_a == pytest.approx(np.quantile(maps.numpy(), 0.9)) and q_b == pytest.approx(np.quantile(maps.numpy(), 0.995))
    normalised = normalise_map(maps, q_a, q_b)
    expected = 0.1 * (maps.numpy() - q_a) / (q_b - q_a)
    np.testing.assert_allclose(normalised.numpy(), expected, rtol=1e-12)


# --- teacher -------------------------------------------------------------------------------------------
def tiny_hparams(**changes: object) -> dict:
    hp = EfficientAD.resolve_hparams("fast", {"teacher_steps": 3, "teacher_views": 8, "image_size": 64, "out_channels": 16})
    return hp | changes


def test_teacher_is_distilled_once_then_read_from_the_cache(private_cache: Path) -> None:
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    before = teacher_module.DISTILLATIONS
    first, source = teacher_module.obtain_teacher(tiny_hparams(), images, "cpu")
    assert teacher_module.DISTILLATIONS == before + 1
    assert "tf_efficientnet_lite0" in source and "3 pool images" in source
    cached = list((private_cache / "efficientad").glob("teacher-*.pt"))
    assert cached, "no teacher written to the cache"
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    second, source_again = teacher_module.obtain_teacher(tiny_hparams(), images, "cpu")
    assert teacher_module.DISTILLATIONS == before + 1, "the cached teacher was distilled again"
    assert source_again == source and {p: p.stat().st_mtime_ns for p in cached} == mtimes
    assert all(torch.equal(first[k], second[k]) for k in first)
    teacher_module.obtain_teacher(tiny_hparams(teacher_steps=4), images, "cpu")  # other settings: a new teacher
    assert teacher_module.DISTILLATIONS == before + 2


def test_user_teacher_checkpoint_is_used(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = pdn("small", 16, width=0.25)
    torch.save(network.state_dict(), tmp_path / "teacher.pth")
    before = teacher_module.DISTILLATIONS
    state, source = teacher_module.obtain_teacher(tiny_hparams(teacher_weights=str(tmp_path / "teacher.pth")), [], "cpu")
    assert source.startswith("file ") and teacher_module.DISTILLATIONS == before
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())


# --- training: normalisation modes, checkpoints and resuming ----------------------------------------
@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> ConformanceData:
    """The conformance class's category, size and seed: the same train images, so the module's cache
    serves these fits the teacher distilled for the conformance fits (or the other way round)."""
    return ConformanceData(tmp_path_factory.mktemp("ead-data"), TestEfficientADConformance.category, TestEfficientADConformance.image_size)


def test_validation_split_is_held_out_and_train_mode_uses_everything() -> None:
    generator = torch.Generator().manual_seed(0)
    train, held_out = EfficientAD("fast")._split(20, generator)
    assert len(held_out) == 2 and not set(train.tolist()) & set(held_out.tolist())
    train, norm = EfficientAD("fast", map_normalisation="train")._split(20, generator)
    assert train.tolist() == norm.tolist() == list(range(20))


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_result(small_data: ConformanceData, tmp_path: Path) -> None:
    def run(**changes: object) -> np.ndarray:
        detector = EfficientAD("fast", seed=1, steps=12, **changes)
        detector.fit(small_data.train)
        return detector.predict(small_data.test[:4], (32, 32)).maps

    straight = run()
    folder = tmp_path / "ckpt"
    run(checkpoint_every=6, checkpoint_dir=str(folder))
    assert sorted(p.name for p in folder.glob("step-*.pt")) == ["step-000000006.pt", "step-000000012.pt"]
    (folder / "step-000000012.pt").unlink()  # as if training stopped after step 6
    np.testing.assert_allclose(run(checkpoint_every=6, checkpoint_dir=str(folder)), straight, rtol=1e-5, atol=1e-6)


def test_fused_path_matches_the_predicted_scores(small_data: ConformanceData) -> None:
    detector = EfficientAD("fast", steps=10)
    detector.fit(small_data.train)
    images = detector._unit_images(small_data.test[:3])
    grids = torch.cat([detector.latency_forward(image[None]) for image in images])
    assert grids.shape == (3, output_side(64), output_side(64))
    prediction = detector.predict(small_data.test[:3], (64, 64))
    np.testing.assert_allclose(grids.flatten(1).max(1).values.numpy(), prediction.scores, rtol=1e-5)
    assert detector.provenance["teacher_source"].startswith("distilled from")
