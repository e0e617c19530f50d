"""Backbone features: named intermediate feature maps of a pretrained timm CNN (:class:`FeatureExtractor`),
in inference mode, BatchNorms folded into their convolutions (:mod:`.folding`), channels-last on the CPU
and autocast on CUDA, always returned as float32."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..layer_preset import LayerPreset
from .folding import fold_batchnorm_checked
from .weights import load_backbone


def _drop_blocks_after(model: torch.nn.Module, layers: Sequence[str]) -> None:
    """Remove the stages of a timm EfficientNet feature model deeper than its deepest requested
    ``blocks.N`` (its forward runs every stage whatever the requested outputs: Lite0's ``blocks.5`` and
    ``blocks.6`` cost 8 % of a 256-px pass that reads ``blocks.4``). Other models are left as they are."""
    blocks = getattr(model, "blocks", None)
    indices = [int(name.split(".")[1]) for name in layers if name.startswith("blocks.") and name.split(".")[1].isdigit()]
    if isinstance(blocks, torch.nn.Sequential) and indices and len(indices) == len(layers) and max(indices) + 1 < len(blocks):
        model.blocks = blocks[: max(indices) + 1]


class FeatureExtractor:
    """Named intermediate feature maps of a pretrained timm CNN.

    ``layers`` are timm ``feature_info`` module names (e.g. ``layer2`` or ``blocks.2``); see
    :class:`LayerPreset`. Calling the extractor on a normalised NCHW batch returns
    ``{layer name: float32 tensor (N, C, H/stride, W/stride)}``.
    """

    def __init__(self, backbone: str, layers: Sequence[str], *, weights: str | os.PathLike[str] | None = None, device: str = "cpu") -> None:
        import timm

        full, self.weights_source = load_backbone(backbone, weights)
        probe = timm.create_model(backbone, pretrained=False, features_only=True)
        names = list(probe.feature_info.module_name())
        missing = [name for name in layers if name not in names]
        if missing:
            raise ConfigError(f"backbone {backbone!r} has no feature layer(s) {missing}; valid: {', '.join(names)}")
        indices = tuple(names.index(name) for name in layers)
        if list(indices) != sorted(set(indices)):  # timm returns the layers shallow to deep, once each
            order = ", ".join(names)
            raise ConfigError(f"backbone {backbone!r}: layers {list(layers)} must be distinct, shallowest to deepest ({order})")
        model = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=indices)
        wanted = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in full.state_dict().items() if k in wanted}, strict=True)
        _drop_blocks_after(model, layers)
        self.backbone = backbone
        self.layers = tuple(layers)
        self.channels = dict(zip(self.layers, model.feature_info.channels()))
        self.strides = dict(zip(self.layers, model.feature_info.reduction()))
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu"
        model = model.eval().requires_grad_(False).to(self.device)
        sample = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(self.device)
        model, self.folded_batchnorms = fold_batchnorm_checked(model, sample)  # frozen: BatchNorms into the convolutions
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    @classmethod
    def for_preset(
        cls, preset: LayerPreset, backbone: str, *, weights: str | os.PathLike[str] | None = None, device: str = "cpu"
    ) -> FeatureExtractor:
        """The extractor with the preset's layers for ``backbone`` (or its layers at the preset's strides)."""
        layers = preset.layers.get(backbone)
        if layers is None:
            import timm

            try:
                info = timm.create_model(backbone, pretrained=False, features_only=True).feature_info
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"unknown backbone {backbone!r} ({exc})".splitlines()[0]) from None
            by_stride = dict(zip(info.reduction(), info.module_name()))  # last layer per stride wins
            if not all(s in by_stride for s in preset.strides):
                raise ConfigError(f"backbone {backbone!r} has no layers at strides {preset.strides}")
            layers = tuple(by_stride[s] for s in preset.strides)
        return cls(backbone, layers, weights=weights, device=device)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], preset: LayerPreset, device: str = "cpu") -> FeatureExtractor:
        """The extractor a detector's ``backbone`` / ``layers`` / ``weights`` hyperparameters ask for
        (the preset's layers when ``layers`` is empty). Where the weights came from is
        ``extractor.weights_source``: record it in the detector's provenance."""
        if hparams.get("layers"):
            return cls(hparams["backbone"], list(hparams["layers"]), weights=hparams["weights"], device=device)
        return cls.for_preset(preset, hparams["backbone"], weights=hparams["weights"], device=device)

    @property
    def total_channels(self) -> int:
        return sum(self.channels.values())

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            outputs = self.model(batch)
        return {name: out.float().contiguous() for name, out in zip(self.layers, outputs)}
