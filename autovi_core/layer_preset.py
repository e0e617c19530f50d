"""Which feature layers of a pretrained backbone a method reads (torch-free, so detector classes
can declare theirs at import time without importing torch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerPreset:
    """A method's feature layers: named per backbone (timm ``feature_info`` module names), and for
    other backbones the last layer at each of ``strides``. Plugins define their own presets
    (e.g. the stride-8 and stride-16 stages); the core knows none by method name."""

    layers: Mapping[str, tuple[str, ...]]
    strides: tuple[int, ...]


_RESNET_LAYERS = ("act1", "layer1", "layer2", "layer3", "layer4")
_EFFICIENTNET_LAYERS = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
FEATURE_LAYERS: Mapping[str, tuple[str, ...]] = {
    **dict.fromkeys(("resnet18", "resnet50", "wide_resnet50_2", "wide_resnet101_2"), _RESNET_LAYERS),
    **dict.fromkeys(("tf_efficientnet_lite0", "efficientnet_b5", "tf_efficientnet_b6"), _EFFICIENTNET_LAYERS),
}
"""timm ``feature_info`` module names of the backbones the plugins use (tests/test_domains.py checks
them against timm), so that ``check_hparams`` can refuse a missing layer before torch is imported.
Other backbones are checked when their feature extractor is built."""


def check_backbone_layers(detector: str, backbone: str, layers: object) -> None:
    """Raise ``ConfigError`` when ``layers`` (a list of names; empty or None: the preset's) names a
    feature layer the known ``backbone`` does not have."""
    from .errors import ConfigError

    known = FEATURE_LAYERS.get(backbone)
    if not layers or known is None or not isinstance(layers, (list, tuple)):
        return
    missing = [name for name in layers if name not in known]
    if missing:
        valid = ", ".join(known)
        raise ConfigError(f"detector {detector!r}: layers={list(layers)!r} refused: backbone {backbone!r} has no {missing}; valid: {valid}")
