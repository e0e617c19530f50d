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
