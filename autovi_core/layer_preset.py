"""Which feature layers of a pretrained backbone a method reads (torch-free, so detector classes
can declare theirs at import time without importing torch)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerPreset:
    """A method's feature layers: named per backbone (timm ``feature_info`` module names), and for
    other backbones the last layer at each of ``strides``. Plugins define their own presets
    (e.g. the stride-8 and stride-16 stages); the core knows none by method name."""

    layers: Mapping[str, tuple[str, ...]]
    strides: tuple[int, ...]


MID_LEVEL_FEATURES = LayerPreset(
    layers={
        "wide_resnet50_2": ("layer2", "layer3"),  # 512 + 1024 = 1536 channels
        "resnet18": ("layer2", "layer3"),  # 128 + 256 = 384 channels
        "tf_efficientnet_lite0": ("blocks.2", "blocks.4"),  # 40 + 112 = 152 channels
    },
    strides=(8, 16),
)
"""The stride-8 and stride-16 stages, PatchCore's mid-level features, which PatchCore, GLASS,
SuperSimpleNet, AnomalyDINO's CNN path and EfficientAD's distillation target read."""

_RESNET_LAYERS = ("act1", "layer1", "layer2", "layer3", "layer4")
_EFFICIENTNET_LAYERS = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
FEATURE_LAYERS: Mapping[str, tuple[str, ...]] = {
    **dict.fromkeys(("resnet18", "resnet50", "wide_resnet50_2", "wide_resnet101_2"), _RESNET_LAYERS),
    **dict.fromkeys(("tf_efficientnet_lite0", "efficientnet_b5", "tf_efficientnet_b6"), _EFFICIENTNET_LAYERS),
}
"""timm ``feature_info`` module names of the backbones the plugins use (tests/test_domains.py checks
them against timm), so that ``check_hparams`` can refuse a missing layer before torch is imported.
Other backbones are checked when their feature extractor is built."""
_STRIDES = (2, 4, 8, 16, 32)  # of each backbone's feature layers above, in order (checked against timm too)


def layer_stride(backbone: str, layer: str) -> int | None:
    """The stride of feature ``layer`` of a known ``backbone`` (None when either is unknown)."""
    layers = FEATURE_LAYERS.get(backbone, ())
    return _STRIDES[layers.index(layer)] if layer in layers else None


def check_backbone_layers(detector: str, backbone: str, layers: Sequence[str] | None, *, ordered: bool = True) -> None:
    """Raise ``ConfigError`` when ``layers`` (a list of names; empty or None: the preset's) names a
    layer twice, or a feature layer the known ``backbone`` does not have, or (``ordered``) is not from
    the shallowest to the deepest (timm returns them in that order whatever order they are named in)."""
    from .errors import ConfigError

    if not layers:
        return
    layers = list(layers)
    repeated = sorted({name for name in layers if layers.count(name) > 1})
    if repeated:
        raise ConfigError(f"detector {detector!r}: layers={layers!r} refused: {repeated} named more than once")
    known = FEATURE_LAYERS.get(backbone)
    if known is None:
        return  # checked when the feature extractor is built
    missing = [name for name in layers if name not in known]
    if missing:
        valid = ", ".join(known)
        raise ConfigError(f"detector {detector!r}: layers={layers!r} refused: backbone {backbone!r} has no {missing}; valid: {valid}")
    if ordered and layers != sorted(layers, key=known.index):
        raise ConfigError(f"detector {detector!r}: layers={layers!r} refused: not from the shallowest to the deepest ({', '.join(known)})")


def deepest_stride(backbone: str, layers: Sequence[str] | None, preset_stride: int) -> int | None:
    """The stride of the deepest of ``layers`` (``preset_stride`` when empty or None: the preset's);
    None when a layer's stride is not known without torch."""
    if not layers:
        return preset_stride
    strides = [layer_stride(backbone, name) for name in layers]
    return None if None in strides else max(s for s in strides if s is not None)


def check_input_stride(detector: str, key: str, size: int, backbone: str, layers: Sequence[str] | None, preset_stride: int) -> None:
    """Raise ``ConfigError`` when the network input side ``size`` (hyperparameter ``key``) is not a
    multiple of the deepest layer's stride: its feature grid would not cover the input exactly, and
    maps upsampled from it would be shifted."""
    from .errors import ConfigError

    stride = deepest_stride(backbone, layers, preset_stride)
    if stride is not None and size % stride:
        which = f"layers={list(layers)!r}" if layers else "the preset layers"
        raise ConfigError(
            f"detector {detector!r}: {key}={size} refused: not a multiple of {stride}, the stride of the deepest of {which} of {backbone!r}"
        )
