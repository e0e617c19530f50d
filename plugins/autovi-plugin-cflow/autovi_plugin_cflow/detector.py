"""CFlow-AD (Gudovskiy et al., "CFLOW-AD: Real-Time Unsupervised Anomaly Detection with Localization
via Conditional Normalizing Flows", WACV 2022).

Encoder: a frozen ImageNet CNN; three feature layers at strides 8, 16, 32 (WideResNet-50 layer2-4;
EfficientNet-Lite0 blocks.2/4/6 offline). Decoders: one conditional normalising flow per layer
(:mod:`.flow`), conditioned on a 2-D sinusoidal encoding of the position. Every feature vector
("fibre") of every training image is a sample; each flow maximises its fibres' log-likelihood
(:mod:`.training`).

Maps: per layer, the log-likelihood per dimension log p / C is turned into a probability
exp(log p / C - m_l), where the normaliser m_l is the largest log p / C over the *training* fibres,
fixed at the end of ``fit`` and saved (the original code takes the maximum over the test set, which
leaks test data). The probability is clipped to at most 1, upsampled to the input size and summed
over the L layers; the anomaly map is L minus that sum, so every map value lies in [0, L] and the
training fibres' most likely positions give 0. Image score = maximum of the map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import weights_param
from autovi_core.checkpoint_params import check_checkpoint_params, checkpoint_params
from autovi_core.domains import Bool, Choice, Float, Int, ListOf, Optional, Param, Text
from autovi_core.layer_preset import check_backbone_layers, check_input_stride

LITE0_LAYERS = ("blocks.2", "blocks.4", "blocks.6")  # 40 / 112 / 320 channels at strides 8 / 16 / 32
WRN_LAYERS = ("layer2", "layer3", "layer4")
DEFAULT_DEEPEST_STRIDE = 32
"""The deepest stride of the default layers (layer4 / blocks.6) of every backbone."""

_SOURCE = "official code"
_FAST_OURS = "official code; fast: autovi"


class CFlow(Detector):
    name = "cflow"
    description = "CFlow-AD: per-layer conditional normalising flows on frozen CNN features, positional conditioning."
    params: ClassVar[Mapping[str, Param]] = {
        "backbone": Param(
            Text("a timm model name"),
            paper="wide_resnet50_2",
            fast="tf_efficientnet_lite0",
            meaning="frozen ImageNet encoder (`--backbone`); fast: Lite0, whose weights install offline",
            source=_FAST_OURS,
        ),
        "weights": weights_param(),
        "layers": Param(
            Optional(
                ListOf(Text("a timm feature-layer name"), min_len=1),
                none_means="layer2-4 (ResNets) / blocks.2, 4, 6 (EfficientNets)",
            ),
            paper=None,
            fast=None,
            meaning="encoder feature layers (timm `feature_info` names), one flow each",
            source="official code (pool_layers=3)",
        ),
        "image_size": Param(
            Int(8, multiple_of=8),
            paper=256,
            fast=128,
            meaning="square network input (pixels); a multiple of the deepest layer's stride (32 for the default layers)",
            source=_FAST_OURS,
        ),
        "coupling_blocks": Param(Int(1), paper=8, fast=4, meaning="coupling blocks per flow", source=_FAST_OURS),
        "condition_dims": Param(
            Int(4, multiple_of=4),
            paper=128,
            fast=32,
            meaning="channels of the 2-D sinusoidal positional encoding that conditions the flows (half columns, half rows)",
            source=_FAST_OURS,
        ),
        "clamp": Param(
            Float(0.0, low_open=True),
            paper=1.9,
            fast=1.9,
            meaning="soft clamp alpha of each coupling's log-scale: s = alpha * tanh(raw / alpha)",
            source=_SOURCE,
        ),
        "permute_soft": Param(
            Bool(),
            paper=True,
            fast=True,
            meaning="after each coupling, mix the channels with a fixed random orthogonal matrix (false: a random permutation)",
            source=_SOURCE,
        ),
        "lr": Param(Float(0.0, low_open=True), paper=2e-4, fast=2e-3, meaning="peak Adam learning rate", source=_FAST_OURS),
        "meta_epochs": Param(
            Int(1), paper=25, fast=4, meaning="meta-epochs of training (the learning-rate schedule's unit)", source=_FAST_OURS
        ),
        "sub_epochs": Param(Int(1), paper=8, fast=2, meaning="passes over all training fibres per meta-epoch", source=_FAST_OURS),
        "warmup_epochs": Param(
            Int(0),
            paper=2,
            fast=1,
            meaning="meta-epochs of linear warm-up from lr / 10 (0: none), then cosine decay to lr * 1e-3",
            source=_FAST_OURS,
        ),
        "fibre_batch": Param(Int(1), paper=256, fast=256, meaning="fibres (feature vectors) per optimiser step", source=_SOURCE),
        "loss": Param(
            Choice("logsigmoid", "nll"),
            paper="logsigmoid",
            fast="nll",
            meaning="training loss: mean -logsigmoid(log p / C) (the official code's) or mean -log p / C",
            source=_FAST_OURS,
        ),
        **checkpoint_params("meta-epoch", "training checkpoints"),
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=("wide_resnet50_2", "tf_efficientnet_lite0"))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._extractor: Any = None
        self.flows: Any = None
        self.normaliser: np.ndarray | None = None  # (L,) max training log p / C per layer

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse layers the backbone lacks or names twice, an input size the deepest layer's stride
        does not divide (its feature grid would not cover the input exactly, and the upsampled maps
        would be shifted), and checkpoints asked for without a folder to write them to."""
        backbone, layers = hparams["backbone"], hparams["layers"]
        check_backbone_layers(cls.name, backbone, layers)
        check_input_stride(cls.name, "image_size", hparams["image_size"], backbone, layers, DEFAULT_DEEPEST_STRIDE)
        check_checkpoint_params(cls.name, hparams)

    # --- encoder ------------------------------------------------------------------------------------
    def layers(self) -> tuple[str, ...]:
        hp = self.hparams
        if hp["layers"]:
            return tuple(hp["layers"])
        return LITE0_LAYERS if "efficientnet" in hp["backbone"] else WRN_LAYERS

    def _encoder(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import FeatureExtractor

            self._extractor = FeatureExtractor(self.hparams["backbone"], self.layers(), weights=self.hparams["weights"], device=self.device)
        return self._extractor

    def _features(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Per layer, (N, C, h, w) float32 CPU features of ``images``."""
        import torch

        from autovi_core.backbones import InputGeometry

        encoder, geometry = self._encoder(), InputGeometry(int(self.hparams["image_size"]))
        outputs = [encoder(batch) for batch in geometry.batches(images, 16)]
        return [torch.cat([o[name] for o in outputs]).cpu() for name in encoder.layers]

    def _build_flows(self, channels: Sequence[int]) -> Any:
        import torch

        from .flow import ConditionalFlow

        hp = self.hparams
        torch.manual_seed(self.seed)
        flows = torch.nn.ModuleList(
            ConditionalFlow(c, int(hp["condition_dims"]), int(hp["coupling_blocks"]), clamp=float(hp["clamp"]),
                            permute_soft=bool(hp["permute_soft"]), seed=self.seed * 1000 + i)
            for i, c in enumerate(channels)
        )  # fmt: skip
        return flows.to(self.device)

    # --- the method ---------------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        from autovi_core.augmentation import epoch_images, is_augmented

        from .training import layer_log_likelihoods, train_flows

        self.provenance["weights_source"] = self._encoder().weights_source.description
        features = self._features(images)
        self.flows = self._build_flows([f.shape[1] for f in features])
        features_for_epoch = None
        if is_augmented(images):  # --augment: every meta-epoch on fresh draws

            def features_for_epoch(epoch: int) -> list[Any]:
                return self._features(epoch_images(images, epoch))

        train_flows(self.flows, features, self.hparams, self.seed, images, self.device, features_for_epoch)
        self.flows.eval()
        # The likelihood normaliser: the most likely training fibre per layer (never test data).
        per_layer = layer_log_likelihoods(self.flows, features, int(self.hparams["condition_dims"]), self.device)
        self.normaliser = np.array([float(ll.max()) for ll in per_layer], dtype=np.float64)

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch
        from torch.nn import functional as F

        from autovi_core.backbones import InputGeometry

        from .training import layer_log_likelihoods

        size = int(self.hparams["image_size"])
        per_layer = layer_log_likelihoods(self.flows, self._features(images), int(self.hparams["condition_dims"]), self.device)
        probability = torch.zeros(len(images), size, size)
        for ll, offset in zip(per_layer, self.normaliser):
            p = torch.exp(ll.double() - offset).clamp(max=1.0).float()
            probability += F.interpolate(p.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
        grids = len(per_layer) - probability
        scores = grids.flatten(1).max(dim=1).values.double()
        maps = InputGeometry(size).maps_to_frame(grids, output_size, sigma=0.0)
        return Prediction(scores=scores.numpy(), maps=maps)

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.backbones.graph import FeatureTaps
        from autovi_core.export import ExportPlan

        from .export import CFlowGraph

        self.check_fitted("export")
        hp, encoder = self.hparams, self._encoder()
        size = int(hp["image_size"])
        grids = [(size // encoder.strides[name], size // encoder.strides[name]) for name in encoder.layers]
        module = CFlowGraph(FeatureTaps(encoder), self.flows, self.normaliser, size, int(hp["condition_dims"]), grids)
        steps = [
            f"resize to {size} px, ImageNet normalisation; encoder {hp['backbone']} layers {', '.join(encoder.layers)}",
            f"per layer: log-likelihood of every fibre under its {hp['coupling_blocks']}-block conditional flow (weights as constants)",
            "exp(log p / C - normaliser) clamped at 1, upsampled and summed; map = layers - sum, image score = its maximum",
        ]
        return ExportPlan(module, steps=steps, substitutions=[])

    # --- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        state = {f"flows.{k}": v.detach().cpu().numpy() for k, v in self.flows.state_dict().items()}
        state["normaliser"] = np.asarray(self.normaliser, dtype=np.float64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        import torch

        encoder = self._encoder()
        self.flows = self._build_flows([encoder.channels[name] for name in encoder.layers])
        flows = {k.removeprefix("flows."): torch.from_numpy(np.asarray(v)) for k, v in state.items() if k.startswith("flows.")}
        self.flows.load_state_dict(flows, strict=True)
        self.flows.eval()
        self.normaliser = np.asarray(state["normaliser"], dtype=np.float64)
