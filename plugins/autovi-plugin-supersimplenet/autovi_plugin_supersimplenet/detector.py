"""SuperSimpleNet (Rolih, Fučka and Skočaj, "SuperSimpleNet: Unifying Unsupervised and Supervised
Learning for Fast and Reliable Surface Defect Detection", ICPR 2024), unsupervised mode (the
supervised mode, :mod:`.supervised`, subclasses it and adds labelled defects to the batches).

Fit: a frozen ImageNet CNN gives the features of two layers, upsampled to a common grid,
concatenated and locally averaged (:mod:`.features`); they are extracted once (again every epoch
only for ``autovi run --augment``). A 1x1-convolution adaptor maps them to adapted features; for
half of the training samples Gaussian noise N(0, sigma^2) is added to the adapted features inside a
binarised Perlin mask drawn at the feature grid (:mod:`autovi_core.synthesis`). A segmentation head
learns the mask (focal + truncated L1 loss) and a classification head learns whether the sample was
perturbed (focal loss) (:mod:`.networks`).

Predict: the image score is the classification head's logit; the map is the segmentation logit grid
upsampled bilinearly to the network input, blurred with a Gaussian (sigma 4 px at a 256-px input,
scaled with the input) and resized to the requested size.

Heavy libraries are imported inside the methods so that listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import weights_param
from autovi_core.domains import Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import MID_LEVEL_FEATURES, LayerPreset, check_backbone_layers, check_input_stride

_PAPER = "paper, Sec. 4 (implementation details)"


class SuperSimpleNet(Detector):
    name = "supersimplenet"
    description = "SuperSimpleNet: Gaussian noise in Perlin-masked adapted CNN features, learned by segmentation and classification heads."
    params: ClassVar[dict[str, Param]] = {
        "backbone": Param(
            Text("a timm model name"),
            paper="wide_resnet50_2",
            fast="tf_efficientnet_lite0",
            meaning="frozen ImageNet CNN giving the features (`--backbone`)",
            source=f"{_PAPER} (WideResNet-50); fast: autovi (EfficientNet-Lite0, available offline)",
        ),
        "weights": weights_param(),
        "layers": Param(
            Optional(ListOf(Text("a timm feature-layer name"), min_len=1), none_means="the backbone's stride-8 and stride-16 layers"),
            paper=None,
            fast=None,
            meaning="feature layers, shallow to deep (none: layer2+layer3 / Lite0 blocks.2+blocks.4)",
            source=f"{_PAPER} (layer2 + layer3); fast: autovi (Lite0 blocks.2 + blocks.4, as PatchCore's fast profile)",
        ),
        "resize": Param(
            Int(16),
            paper=256,
            fast=128,
            meaning="side of the square every image is resized to (pixels; the aspect ratio is not kept)",
            source=f"{_PAPER} (256 x 256 for MVTec AD); fast: autovi",
        ),
        "upscale": Param(
            Int(1),
            paper=2,
            fast=1,
            meaning="feature grid = the shallowest layer's grid times this (bilinear upsampling of every layer)",
            source="paper, Sec. 3.1 (features upscaled 2x relative to SimpleNet's); fast: autovi (4x fewer positions)",
        ),
        "patch_size": Param(
            Int(1, odd=True),
            paper=3,
            fast=3,
            meaning="side of the neighbourhood averaged at each feature position (1: none)",
            source="paper, Sec. 3.1 (3x3 local average, as SimpleNet/PatchCore)",
        ),
        "seg_width": Param(
            Int(1),
            paper=1024,
            fast=128,
            meaning="channels of the segmentation head's hidden 1x1 convolution",
            source="autovi (not verified against the paper's code); fast: autovi",
        ),
        "cls_width": Param(
            Int(1),
            paper=128,
            fast=32,
            meaning="channels of the classification head's 5x5 convolution",
            source="autovi (not verified against the paper's code); fast: autovi",
        ),
        "noise_std": Param(
            Float(0.0, low_open=True),
            paper=0.015,
            fast=6.0,
            meaning="sigma of the Gaussian noise N(0, sigma^2) added to the adapted features inside the anomaly mask",
            source=(
                "paper, Sec. 3.2 (sigma = 0.015, SimpleNet's value); fast: autovi (Lite0's unnormalised features have a per-channel "
                "std of about 5; at 0.015 the short fast training separated nothing)"
            ),
        ),
        "anomaly_prob": Param(
            Float(0.0, 1.0),
            paper=0.5,
            fast=0.5,
            meaning="probability that a training sample is perturbed (the rest stay normal, empty mask)",
            source="autovi (half the samples, as DRAEM; the paper's exact share not verified)",
        ),
        "perlin_threshold": Param(
            Float(-1.0, 1.0, low_open=True, high_open=True),
            paper=0.5,
            fast=0.5,
            meaning="the Perlin noise (in [-1, 1]) is binarised above this value into the anomaly mask",
            source="paper, Sec. 3.2 (binarised Perlin noise, DRAEM's threshold 0.5)",
        ),
        "perlin_max_scale": Param(
            Int(1),
            paper=4,
            fast=4,
            meaning="Perlin lattice frequency per axis is 2**k, k drawn from [0, this), at the feature grid",
            source="autovi (DRAEM's 0..5 at image resolution, scaled down to the feature grid)",
        ),
        "focal_gamma": Param(
            Float(0.0),
            paper=2.0,
            fast=2.0,
            meaning="gamma of the focal losses of both heads",
            source="paper, Sec. 3.4 (focal loss)",
        ),
        "trunc_threshold": Param(
            Float(0.0),
            paper=0.5,
            fast=0.5,
            meaning="margin of the segmentation head's truncated L1 loss (max(0, t - z) anomalous, max(0, t + z) normal)",
            source="paper, Sec. 3.4 (truncated L1, SimpleNet's margin 0.5)",
        ),
        "epochs": Param(
            Int(1),
            paper=300,
            fast=30,
            meaning="training epochs over the training images",
            source=f"{_PAPER} (300 on MVTec AD, as recalled; not re-verified); fast: autovi",
        ),
        "batch_size": Param(
            Int(1),
            paper=32,
            fast=8,
            meaning="training samples per optimiser step",
            source=f"{_PAPER} (32, as recalled); fast: autovi",
        ),
        "lr_adaptor": Param(
            Float(0.0, low_open=True),
            paper=1e-4,
            fast=1e-3,
            meaning="Adam learning rate of the feature adaptor",
            source=f"{_PAPER} (1e-4, as recalled; not re-verified); fast: autovi",
        ),
        "lr_heads": Param(
            Float(0.0, low_open=True),
            paper=2e-4,
            fast=2e-3,
            meaning="Adam learning rate of the segmentation and classification heads",
            source=f"{_PAPER} (2e-4, as recalled; not re-verified); fast: autovi",
        ),
        "weight_decay": Param(
            Float(0.0),
            paper=1e-5,
            fast=1e-5,
            meaning="Adam weight decay (all trained parts)",
            source=f"{_PAPER} (as recalled; not re-verified)",
        ),
        "lr_milestones": Param(
            ListOf(Float(0.0, 1.0), min_len=0),
            paper=[0.8, 0.9],
            fast=[0.8, 0.9],
            meaning="fractions of the epochs at which the learning rates are multiplied by `lr_gamma`",
            source=f"{_PAPER} (step decay, as recalled; not re-verified)",
        ),
        "lr_gamma": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.4,
            fast=0.4,
            meaning="factor of the learning-rate step decay",
            source=f"{_PAPER} (as recalled; not re-verified)",
        ),
        "blur_sigma": Param(
            Float(0.0),
            paper=4.0,
            fast=4.0,
            meaning="Gaussian blur of the maps (pixels at a 256-px input, scaled with `resize`; 0: none)",
            source="paper, Sec. 3.5 (sigma 4)",
        ),
        "extract_batch_size": Param(
            Int(1),
            paper=8,
            fast=16,
            meaning="images per backbone / inference pass (memory only, not the result)",
            source="autovi",
        ),
    }
    layer_preset: ClassVar[LayerPreset] = MID_LEVEL_FEATURES  # the stride-8 and stride-16 stages
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=("wide_resnet50_2", "tf_efficientnet_lite0"))

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse, before any work and without torch: layers the backbone does not have (or repeated, or
        out of order) and an input side the deepest layer's stride does not divide."""
        name, backbone, layers = cls.name, hparams["backbone"], hparams["layers"]
        check_backbone_layers(name, backbone, layers)
        check_input_stride(name, "resize", hparams["resize"], backbone, layers, max(cls.layer_preset.strides))
        milestones = list(hparams["lr_milestones"])
        if milestones != sorted(milestones):
            raise ConfigError(f"detector {name!r}: lr_milestones={milestones!r} refused: not in increasing order")

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._extractor: Any = None
        self.model: Any = None
        self.dim: int | None = None

    # --- building blocks ------------------------------------------------------------------------
    def _geometry(self) -> Any:
        from autovi_core.backbones import InputGeometry

        return InputGeometry(int(self.hparams["resize"]))

    def _feature_extractor(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import FeatureExtractor

            self._extractor = FeatureExtractor.from_hparams(self.hparams, self.layer_preset, self.device)
        return self._extractor

    def _features(self, images: Sequence[np.ndarray], description: str) -> Any:
        """(N, D, h, w) float32 backbone features of ``images`` (on the CPU), batch by batch."""
        import torch

        from autovi_core.progress import track

        from .features import combine_layers

        extractor, geometry, hp = self._feature_extractor(), self._geometry(), self.hparams
        size = int(hp["extract_batch_size"])
        starts = range(0, len(images), size)
        out = []
        for start in track(starts, description, total=len(starts)):
            raw = extractor(geometry.to_tensor(images[start : start + size]))
            out.append(combine_layers(raw, extractor.layers, int(hp["upscale"]), int(hp["patch_size"])).cpu())
        return torch.cat(out)

    def _build(self, dim: int) -> None:
        import torch

        from .networks import SuperSimpleNetModel

        torch.manual_seed(self.seed)
        self.dim = dim
        self.model = SuperSimpleNetModel(dim, int(self.hparams["seg_width"]), int(self.hparams["cls_width"])).to(self.device)

    # --- training -----------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from autovi_core.augmentation import epoch_images, is_augmented
        from autovi_core.progress import track
        from autovi_core.training import deterministic

        hp = self.hparams
        self.provenance["weights_source"] = self._feature_extractor().weights_source.description
        features = self._features(images, f"{self.name}: features of {len(images)} training images")
        self._build(int(features.shape[1]))
        model = self.model
        optimizer = torch.optim.Adam(
            [
                {"params": model.adaptor.parameters(), "lr": float(hp["lr_adaptor"])},
                {
                    "params": [*model.seg.parameters(), *model.cls_conv.parameters(), *model.cls_fc.parameters()],
                    "lr": float(hp["lr_heads"]),
                },
            ],
            weight_decay=float(hp["weight_decay"]),
        )
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        epochs = int(hp["epochs"])
        augmented = is_augmented(images)
        with deterministic(self.device):
            for epoch in track(range(epochs), f"{self.name}: training", total=epochs):
                factor = float(hp["lr_gamma"]) ** sum(epoch >= int(m * epochs) for m in hp["lr_milestones"])
                for group, lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = lr * factor
                if augmented and epoch > 0:  # --augment: this epoch's draws, features extracted again
                    features = self._features(epoch_images(images, epoch), f"{self.name}: features, epoch {epoch}")
                self._train_epoch(features, optimizer, epoch)
        model.eval()

    def _train_epoch(self, features: Any, optimizer: Any, epoch: int) -> None:
        """One pass over ``features`` in shuffled batches; the order, masks and noise depend only on (seed, epoch)."""
        import torch

        self.model.train()
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        rng = np.random.default_rng([self.seed, epoch])
        for batch, real, defective in self._epoch_batches(features, generator):
            self._train_step(batch, real, defective, optimizer, generator, rng)

    def _epoch_batches(self, features: Any, generator: Any) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """The epoch's batches of (features (B, D, h, w), real defect masks (B, h, w) bool at the feature
        grid, defective flags (B,) bool). Unsupervised: the shuffled training images, no real defects."""
        import torch

        n, _, h, w = features.shape
        order = torch.randperm(n, generator=generator)
        for start, end in batch_bounds(n, int(self.hparams["batch_size"])):
            index = order[start:end]
            yield features[index], np.zeros((len(index), h, w), dtype=bool), np.zeros(len(index), dtype=bool)

    def _train_step(
        self, batch: Any, real: np.ndarray, defective: np.ndarray, optimizer: Any, generator: Any, rng: np.random.Generator
    ) -> None:
        """One optimiser step on a batch: a Perlin mask is drawn for a share ``anomaly_prob`` of the samples
        and Gaussian noise added to their adapted features inside it, outside any real defect (``real``).
        Segmentation target: real defect or synthetic anomaly; image label: ``defective`` or perturbed."""
        import torch

        from autovi_core.synthesis import perlin_mask

        from .networks import binary_focal, feature_anomalies, truncated_l1

        hp, model = self.hparams, self.model
        synthetic = np.zeros(real.shape, dtype=bool)
        for j in range(len(synthetic)):
            if rng.random() < float(hp["anomaly_prob"]):
                synthetic[j] = perlin_mask(
                    real.shape[1:], rng, threshold=float(hp["perlin_threshold"]), max_scale=int(hp["perlin_max_scale"]), nonempty=True
                )
        synthetic &= ~real
        mask = torch.from_numpy(synthetic).to(self.device)
        adapted = feature_anomalies(model.adaptor(batch.to(self.device)), mask, float(hp["noise_std"]), generator=generator)
        seg, cls = model.heads(adapted)
        target = torch.from_numpy(synthetic | real).to(self.device).float()
        label = torch.from_numpy(defective | synthetic.any(axis=(1, 2))).to(self.device).float()
        gamma = float(hp["focal_gamma"])
        loss = (
            binary_focal(seg, target, gamma)
            + truncated_l1(seg, target, float(hp["trunc_threshold"]))
            + binary_focal(cls.unsqueeze(1), label.unsqueeze(1), gamma)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # --- inference ----------------------------------------------------------------------------
    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch

        hp, geometry = self.hparams, self._geometry()
        features = self._features(images, f"{self.name}: scoring {len(images)} images")
        size = int(hp["extract_batch_size"])
        segs, scores = [], []
        with torch.inference_mode():
            for start in range(0, features.shape[0], size):
                seg, cls = self.model(features[start : start + size].to(self.device))
                segs.append(seg.float().cpu())
                scores.append(cls.double().cpu())
        sigma = float(hp["blur_sigma"]) * geometry.size / 256.0
        maps = geometry.maps_to_frame(torch.cat(segs), output_size, sigma)
        return Prediction(scores=torch.cat(scores).numpy(), maps=maps)

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        from autovi_core.training import module_state_to_numpy

        self.check_fitted()
        return {"dim": np.asarray(self.dim, dtype=np.int64), **module_state_to_numpy("model", self.model)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        from autovi_core.training import module_state_from_numpy

        self._build(int(state["dim"]))
        module_state_from_numpy("model", self.model, state)
        self.model.eval()


def batch_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive batches of ``size`` over ``n`` samples; batches of one would break
    batch norm, so a last batch of one joins the previous one."""
    starts = list(range(0, n, size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    return [(start, starts[i + 1] if i + 1 < len(starts) else n) for i, start in enumerate(starts)]
