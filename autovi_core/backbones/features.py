"""Backbone features: named intermediate feature maps of a pretrained timm CNN (:class:`FeatureExtractor`),
in inference mode, BatchNorms folded into their convolutions (:mod:`.folding`), channels-last on the CPU,
in the arithmetic the ``precision`` hyperparameter asks for (:func:`autocast_dtype`), always returned as
float32."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..backbone_params import PRECISIONS
from ..errors import ConfigError
from ..layer_preset import LayerPreset
from .folding import fold_batchnorm_checked
from .weights import load_backbone, module_from_state


def _drop_blocks_after(model: torch.nn.Module, layers: Sequence[str]) -> None:
    """Remove the stages of a timm EfficientNet feature model deeper than its deepest requested
    ``blocks.N`` (its forward runs every stage whatever the requested outputs: Lite0's ``blocks.5`` and
    ``blocks.6`` cost 8 % of a 256-px pass that reads ``blocks.4``). Other models are left as they are."""
    blocks = getattr(model, "blocks", None)
    indices = [int(name.split(".")[1]) for name in layers if name.startswith("blocks.") and name.split(".")[1].isdigit()]
    if isinstance(blocks, torch.nn.Sequential) and indices and len(indices) == len(layers) and max(indices) + 1 < len(blocks):
        model.blocks = blocks[: max(indices) + 1]


CPU_SLICE_BYTES = 1 << 19
"""Input bytes (images x height x width x element size) per backbone pass on the CPU: bigger batches
are run in slices of this size, whose activations stay in the caches. Lite0 at 256 px in float32 took
11.6 ms an image in batches of 16 and 4.0 in slices of 2; ResNet-18 11.5 and 8.9; WideResNet-50 at
224 px 51.8 and 43.6 (2-core EPYC, 32 MB L3, docs/performance.md)."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the backbone's forward for ``precision`` on ``device`` (None: float32).

    ``auto``: float16 on CUDA, float32 on the CPU; ``float32``: float32 everywhere; ``bfloat16``:
    bfloat16 on both (on a CPU without native bfloat16 arithmetic it is emulated: a warning says so).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} refused: one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16":
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            warnings.warn(
                "precision=bfloat16: this CPU has no native bfloat16 arithmetic, the backbone runs slower than in float32", stacklevel=3
            )
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return None


class FeatureExtractor:
    """Named intermediate feature maps of a pretrained timm CNN.

    ``layers`` are timm ``feature_info`` module names (e.g. ``layer2`` or ``blocks.2``); see
    :class:`LayerPreset`. Calling the extractor on a normalised NCHW batch returns
    ``{layer name: float32 tensor (N, C, H/stride, W/stride)}``. ``precision`` is one of
    :data:`~autovi_core.backbone_params.PRECISIONS` (:func:`autocast_dtype`).
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        precision: str = "auto",
    ) -> None:
        import timm

        full, self.weights_source = load_backbone(backbone, weights)
        with torch.device("meta"):  # the layer names only: no memory, no initialisation
            names = list(timm.create_model(backbone, pretrained=False, features_only=True).feature_info.module_name())
        missing = [name for name in layers if name not in names]
        if missing:
            raise ConfigError(f"backbone {backbone!r} has no feature layer(s) {missing}; valid: {', '.join(names)}")
        indices = tuple(names.index(name) for name in layers)
        if list(indices) != sorted(set(indices)):  # timm returns the layers shallow to deep, once each
            order = ", ".join(names)
            raise ConfigError(f"backbone {backbone!r}: layers {list(layers)} must be distinct, shallowest to deepest ({order})")
        create = functools.partial(timm.create_model, backbone, pretrained=False, features_only=True, out_indices=indices)
        model = module_from_state(create, full.state_dict(), ignore_extra=True)
        del full  # the feature model holds the tensors it needs; the classifier's others go
        _drop_blocks_after(model, layers)
        self.backbone = backbone
        self.layers = tuple(layers)
        self.channels = dict(zip(self.layers, model.feature_info.channels()))
        self.strides = dict(zip(self.layers, model.feature_info.reduction()))
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype(precision, self.device)
        self.channels_last = self.device.type == "cpu"
        model = model.eval().requires_grad_(False).to(self.device)
        sample = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(self.device)
        model, self.folded_batchnorms = fold_batchnorm_checked(model, sample)  # frozen: BatchNorms into the convolutions
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model

    @classmethod
    def for_preset(
        cls,
        preset: LayerPreset,
        backbone: str,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        precision: str = "auto",
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
        return cls(backbone, layers, weights=weights, device=device, precision=precision)

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], preset: LayerPreset, device: str = "cpu") -> FeatureExtractor:
        """The extractor a detector's ``backbone`` / ``layers`` / ``weights`` / ``precision``
        hyperparameters ask for (the preset's layers when ``layers`` is empty; ``auto`` precision when
        the detector has no such hyperparameter). Where the weights came from is
        ``extractor.weights_source``: record it in the detector's provenance."""
        precision = str(hparams.get("precision", "auto"))
        if hparams.get("layers"):
            return cls(hparams["backbone"], list(hparams["layers"]), weights=hparams["weights"], device=device, precision=precision)
        return cls.for_preset(preset, hparams["backbone"], weights=hparams["weights"], device=device, precision=precision)

    @property
    def total_channels(self) -> int:
        return sum(self.channels.values())

    def slice_size(self, batch: torch.Tensor) -> int:
        """Images per backbone pass: the whole batch on a GPU, :data:`CPU_SLICE_BYTES` of input on the CPU."""
        if self.device.type != "cpu":
            return len(batch)
        itemsize = torch.finfo(self.autocast_dtype or torch.float32).bits // 8
        return max(1, CPU_SLICE_BYTES // (batch[0, 0].numel() * itemsize))

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        size = self.slice_size(batch)
        slices = [self._forward(batch[start : start + size]) for start in range(0, len(batch), size)]
        if len(slices) == 1:
            return dict(zip(self.layers, slices[0]))
        return {name: torch.cat(outs) for name, outs in zip(self.layers, zip(*slices))}

    def _forward(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """The layers' float32 feature maps of one slice."""
        if self.autocast_dtype is None:
            outputs = self.model(batch)
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                outputs = self.model(batch)
        return [out.float().contiguous() for out in outputs]
