"""GLASS (Chen, Luo, Lv and Zhang, "A Unified Anomaly Synthesis Strategy with Gradient Ascent for
Industrial Anomaly Detection and Localization", ECCV 2024).

Fit: a frozen ImageNet CNN gives the features of two layers, each averaged over 3x3 neighbourhoods,
upsampled to the first layer's grid and concatenated (:mod:`.features`); those of the training
images are extracted once (again every epoch only for ``autovi run --augment``). A linear feature
adaptor maps them to adapted features and a discriminator MLP scores every position
(:mod:`.networks`). Every batch it learns three kinds of features (:mod:`.synthesis`):

- normal: the adapted features of the training images, label 0 (BCE);
- global anomalies (GAS): the normal adapted features plus Gaussian noise, moved by a few steps of
  normalised gradient ascent on the discriminator's loss and kept at a distance in ``[r, 2r]`` of
  their normal feature by the truncated projection, label 1 (BCE);
- local anomalies (LAS): the adapted features of the same images with a texture blended into a
  Perlin mask, label 1 at the feature positions at least half masked and 0 elsewhere (focal loss).

Predict: the map is the discriminator's anomaly probability at every position, upsampled bilinearly
to the network input and blurred with a Gaussian (sigma 4 px at the paper's 288-px input, scaled with
``resize``), then resized to the requested size; the image score is the blurred map's maximum.

Heavy libraries are imported inside the methods so that listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import weights_param
from autovi_core.domains import Choice, Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import MID_LEVEL_FEATURES, LayerPreset, check_backbone_layers, check_input_stride

_PAPER = "paper (implementation details)"
_SCRIPT = "authors' MVTec AD run script"
_RECALLED = "as recalled from the paper; not re-verified"
_SOURCE_KINDS = ("auto", "folder", "procedural", "train_crops")
"""autovi_core.synthesis.SOURCE_KINDS (a test checks), written out so that registering imports no scipy."""
_SIGMA_AT = 288.0
"""Input side at which ``blur_sigma`` is given (the paper's MVTec AD input)."""


class GLASS(Detector):
    name = "glass"
    description = (
        "GLASS: a patch-feature discriminator trained on gradient-ascent feature-space anomalies (GAS) "
        "and Perlin/texture image-space anomalies (LAS)."
    )
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
            paper=288,
            fast=128,
            meaning="side of the square every image is resized to (pixels; the aspect ratio is not kept)",
            source=f"{_SCRIPT} (resize = image size = 288 on MVTec AD); fast: autovi",
        ),
        "patch_size": Param(
            Int(1, odd=True),
            paper=3,
            fast=3,
            meaning="side of the neighbourhood averaged at each position of each layer (1: none)",
            source=f"{_SCRIPT} (patch size 3, as SimpleNet/PatchCore)",
        ),
        "disc_hidden": Param(
            Int(1),
            paper=1024,
            fast=256,
            meaning="width of the discriminator's hidden layers",
            source=f"{_SCRIPT} (1024); fast: autovi",
        ),
        "disc_layers": Param(
            Int(1),
            paper=2,
            fast=2,
            meaning="linear layers of the discriminator (each but the last followed by batch norm and LeakyReLU 0.2)",
            source=f"{_SCRIPT} (2 layers; LeakyReLU slope 0.2 {_RECALLED})",
        ),
        "noise_std": Param(
            Float(0.0, low_open=True),
            paper=0.015,
            fast=3.0,
            meaning="sigma of the Gaussian noise N(0, sigma^2) that GAS starts from, per adapted-feature channel",
            source=(
                f"{_SCRIPT} (0.015, as SimpleNet); fast: autovi (Lite0's features are unnormalised: on the synthetic data a "
                "patch feature's norm is about 50 and its nearest training neighbour about 16 away; at the paper's scale the "
                "short training separated nothing)"
            ),
        ),
        "radius": Param(
            Float(0.0, low_open=True),
            paper=0.75,
            fast=30.0,
            meaning="GAS truncated projection: the perturbation's norm is clipped into [radius, 2 radius]",
            source=f"{_SCRIPT} (radius 0.75; r1 = r, r2 = 2r in the paper's GAS projection); fast: autovi (see noise_std)",
        ),
        "ascent_steps": Param(
            Int(0),
            paper=20,
            fast=5,
            meaning="gradient-ascent steps of GAS, each followed by the projection (0: Gaussian noise only)",
            source=f"{_SCRIPT} (20 steps); fast: autovi",
        ),
        "ascent_step_size": Param(
            Float(0.0),
            paper=0.001,
            fast=3.0,
            meaning="eta: length of each normalised gradient-ascent step in adapted-feature space",
            source=f"paper, GAS (0.001, {_RECALLED}); fast: autovi (scaled with radius)",
        ),
        "distribution": Param(
            Choice("manifold", "hypersphere"),
            paper="manifold",
            fast="manifold",
            meaning=(
                "constraint of the GAS perturbation: manifold (norm in [r, 2r] only) or hypersphere "
                "(also pointing away from the batch's mean normal feature)"
            ),
            source=(
                "paper, GAS (chosen per category from the normal features' spread; autovi takes it as a "
                "setting, and its hypersphere constraint is autovi's reading)"
            ),
        ),
        "anomaly_source": Param(
            Choice(*_SOURCE_KINDS),
            paper="auto",
            fast="auto",
            meaning="where the LAS textures come from: texture_folder, procedural textures, training-image crops",
            source="autovi (offline stand-in for the DTD textures of the paper)",
        ),
        "texture_folder": Param(
            Optional(Text("a folder of texture images"), none_means="no folder: procedural textures and training crops"),
            paper=None,
            fast=None,
            meaning="folder of LAS texture images searched recursively (e.g. DTD), for anomaly_source auto or folder",
            source="autovi (the paper uses DTD, which is not bundled)",
        ),
        "perlin_threshold": Param(
            Float(-1.0, 1.0, low_open=True, high_open=True),
            paper=0.5,
            fast=0.5,
            meaning="the Perlin noise (in [-1, 1]) is binarised above this value into the LAS mask",
            source="paper, LAS (DRAEM's Perlin masks, threshold 0.5)",
        ),
        "perlin_max_scale": Param(
            Int(1),
            paper=6,
            fast=4,
            meaning="LAS Perlin lattice frequency per axis is 2**k, k drawn from [0, this), at the network input",
            source="paper, LAS (DRAEM's 0..5); fast: autovi (coarser blobs at 128 px)",
        ),
        "beta_mean": Param(
            Float(0.0, 1.0),
            paper=0.5,
            fast=0.5,
            meaning="mean of the image's share beta inside the LAS mask (the texture's is 1 - beta)",
            source=f"{_SCRIPT} (mean 0.5)",
        ),
        "beta_std": Param(
            Float(0.0),
            paper=0.1,
            fast=0.1,
            meaning="standard deviation of beta ~ N(beta_mean, beta_std^2)",
            source=f"{_SCRIPT} (std 0.1)",
        ),
        "beta_range": Param(
            ListOf(Float(0.0, 1.0), min_len=2, max_len=2),
            paper=[0.2, 0.8],
            fast=[0.2, 0.8],
            meaning="beta is clipped to [low, high]",
            source=f"autovi ({_RECALLED})",
        ),
        "focal_gamma": Param(
            Float(0.0),
            paper=2.0,
            fast=2.0,
            meaning="gamma of the LAS focal loss",
            source=f"paper, training objective (focal loss on the LAS features; gamma {_RECALLED})",
        ),
        "epochs": Param(
            Int(1),
            paper=640,
            fast=10,
            meaning="training epochs over the training images",
            source=f"{_SCRIPT} (640 meta-epochs, the best one chosen on the test set there; here the last); fast: autovi",
        ),
        "batch_size": Param(
            Int(1),
            paper=8,
            fast=2,
            meaning="training images per optimiser step (each with its GAS and LAS features)",
            source=f"{_SCRIPT} (8); fast: autovi (more optimiser steps in the short training)",
        ),
        "lr_adaptor": Param(
            Float(0.0, low_open=True),
            paper=1e-4,
            fast=1e-3,
            meaning="Adam learning rate of the feature adaptor",
            source=f"{_PAPER} (1e-4, {_RECALLED}); fast: autovi",
        ),
        "lr_disc": Param(
            Float(0.0, low_open=True),
            paper=2e-4,
            fast=2e-3,
            meaning="Adam learning rate of the discriminator",
            source=f"{_PAPER} (2e-4, {_RECALLED}); fast: autovi",
        ),
        "weight_decay": Param(
            Float(0.0),
            paper=1e-5,
            fast=1e-5,
            meaning="Adam weight decay of the adaptor (the discriminator has none)",
            source=f"autovi (SimpleNet's adaptor; {_RECALLED})",
        ),
        "blur_sigma": Param(
            Float(0.0),
            paper=4.0,
            fast=4.0,
            meaning="Gaussian blur of the maps (pixels at a 288-px input, scaled with `resize`; 0: none)",
            source="paper (implementation details: sigma 4)",
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
        out of order), an input side the deepest layer's stride does not divide, a reversed beta range
        and texture settings that would be ignored."""
        name, backbone, layers = cls.name, hparams["backbone"], hparams["layers"]
        check_backbone_layers(name, backbone, layers)
        check_input_stride(name, "resize", hparams["resize"], backbone, layers, max(cls.layer_preset.strides))
        low, high = hparams["beta_range"]
        if low > high:
            raise ConfigError(f"detector {name!r}: beta_range={list(hparams['beta_range'])!r} refused: low above high")
        source, folder = hparams["anomaly_source"], hparams["texture_folder"]
        if source == "folder" and folder is None:
            raise ConfigError(f"detector {name!r}: anomaly_source='folder' refused: texture_folder is none; set texture_folder")
        if source in ("procedural", "train_crops") and folder is not None:
            raise ConfigError(
                f"detector {name!r}: texture_folder={folder!r} refused: anomaly_source={source!r} does not use it (use 'auto' or 'folder')"
            )

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._extractor: Any = None
        self.model: Any = None
        self.dim: int | None = None

    # --- building blocks ------------------------------------------------------------------------
    def _geometry(self) -> Any:
        from autovi_core.backbones import InputGeometry

        return InputGeometry(int(self.hparams["resize"]))

    def _sigma(self) -> float:
        """The map blur in input pixels."""
        return float(self.hparams["blur_sigma"]) * self._geometry().size / _SIGMA_AT

    def _feature_extractor(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import FeatureExtractor

            self._extractor = FeatureExtractor.from_hparams(self.hparams, self.layer_preset, self.device)
        return self._extractor

    def _backbone(self, batch: Any) -> Any:
        """(N, D, h, w) features (on the CPU) of a normalised (N, 3, S, S) batch."""
        from .features import combine_layers

        extractor = self._feature_extractor()
        return combine_layers(extractor(batch), extractor.layers, int(self.hparams["patch_size"])).cpu()

    def _features(self, inputs: Any, description: str) -> Any:
        """(N, D, h, w) features of a normalised (N, 3, S, S) tensor, batch by batch."""
        import torch

        from autovi_core.progress import track

        size = int(self.hparams["extract_batch_size"])
        starts = range(0, inputs.shape[0], size)
        return torch.cat([self._backbone(inputs[s : s + size]) for s in track(starts, description, total=len(starts))])

    def _build(self, dim: int) -> None:
        import torch

        from .networks import GlassModel

        torch.manual_seed(self.seed)
        self.dim = dim
        self.model = GlassModel(dim, int(self.hparams["disc_hidden"]), int(self.hparams["disc_layers"])).to(self.device)

    # --- training -----------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from autovi_core.augmentation import epoch_images, is_augmented
        from autovi_core.progress import track
        from autovi_core.synthesis import make_source
        from autovi_core.training import deterministic, single_thread_on_cpu

        hp, geometry = self.hparams, self._geometry()
        self.provenance["weights_source"] = self._feature_extractor().weights_source.description
        source = make_source(hp["anomaly_source"], hp["texture_folder"], list(images), np.random.default_rng(self.seed))
        self.provenance["anomaly_source"] = source.describe()
        inputs = geometry.to_tensor(images)
        features = self._features(inputs, f"{self.name}: features of {len(images)} training images")
        self._build(int(features.shape[1]))
        model = self.model
        optimizer = torch.optim.Adam(
            [
                {"params": model.adaptor.parameters(), "lr": float(hp["lr_adaptor"]), "weight_decay": float(hp["weight_decay"])},
                {"params": model.discriminator.parameters(), "lr": float(hp["lr_disc"]), "weight_decay": 0.0},
            ]
        )
        epochs = int(hp["epochs"])
        augmented = is_augmented(images)
        with deterministic(self.device), single_thread_on_cpu(self.device):
            for epoch in track(range(epochs), f"{self.name}: training", total=epochs):
                if augmented and epoch > 0:  # --augment: this epoch's draws, features extracted again
                    inputs = geometry.to_tensor(epoch_images(images, epoch))
                    features = self._features(inputs, f"{self.name}: features, epoch {epoch}")
                self._train_epoch(inputs, features, source, optimizer, epoch)
        model.eval()

    def _las_batch(self, inputs: Any, index: Any, source: Any, grid: tuple[int, int], epoch: int) -> tuple[Any, Any]:
        """LAS images (normalised, (B, 3, S, S)) and their grid labels ((B, h, w) bool) of ``inputs[index]``;
        sample ``i`` of epoch ``e`` draws from a generator seeded by (seed, e, i)."""
        import torch

        from autovi_core.backbones import IMAGENET_MEAN, IMAGENET_STD, normalize_imagenet

        from .synthesis import las_sample

        hp = self.hparams
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        pictures, labels = [], []
        for i in index.tolist():
            rng = np.random.default_rng([self.seed, epoch, int(i)])
            image = (inputs[i] * std + mean).clamp(0.0, 1.0).permute(1, 2, 0).numpy()
            picture, _, label = las_sample(
                image,
                source,
                rng,
                grid,
                threshold=float(hp["perlin_threshold"]),
                max_scale=int(hp["perlin_max_scale"]),
                beta_mean=float(hp["beta_mean"]),
                beta_std=float(hp["beta_std"]),
                beta_range=(float(hp["beta_range"][0]), float(hp["beta_range"][1])),
            )
            pictures.append(torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1))))
            labels.append(torch.from_numpy(label))
        return normalize_imagenet(torch.stack(pictures)), torch.stack(labels)

    def _train_epoch(self, inputs: Any, features: Any, source: Any, optimizer: Any, epoch: int) -> None:
        """One pass over the training images in shuffled batches; the order, the LAS samples and the GAS
        noise depend only on (seed, epoch)."""
        import torch

        from .networks import bce, binary_focal
        from .synthesis import gas_perturbation

        hp, model = self.hparams, self.model
        model.train()
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n, _, h, w = features.shape
        order = torch.randperm(n, generator=generator)
        size, radius = int(hp["batch_size"]), float(hp["radius"])
        for start in range(0, n, size):
            index = order[start : start + size]
            las_inputs, labels = self._las_batch(inputs, index, source, (h, w), epoch)
            las_features = self._backbone(las_inputs)
            normal = model.adapt(features[index].to(self.device))
            local = model.adapt(las_features.to(self.device))
            noise = torch.randn(normal.shape, generator=generator).to(self.device) * float(hp["noise_std"])
            center = normal.detach().mean(dim=0) if hp["distribution"] == "hypersphere" else None
            eps = gas_perturbation(
                model.discriminator,
                normal,
                noise,
                eta=float(hp["ascent_step_size"]),
                steps=int(hp["ascent_steps"]),
                r1=radius,
                r2=2.0 * radius,
                center=center,
            )
            logits = model.discriminator(torch.cat([normal, normal + eps, local]))
            p = normal.shape[0]
            loss = (
                bce(logits[:p], 0.0)
                + bce(logits[p : 2 * p], 1.0)
                + binary_focal(logits[2 * p :], labels.reshape(-1).to(self.device), float(hp["focal_gamma"]))
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    # --- inference ----------------------------------------------------------------------------
    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch

        geometry = self._geometry()
        features = self._features(geometry.to_tensor(images), f"{self.name}: scoring {len(images)} images")
        size = int(self.hparams["extract_batch_size"])
        grids = []
        with torch.inference_mode():
            for start in range(0, features.shape[0], size):
                grids.append(torch.sigmoid(self.model(features[start : start + size].to(self.device))).float().cpu())
        smooth = geometry.upsample_and_blur(torch.cat(grids), self._sigma())
        scores = smooth.flatten(1).amax(dim=1).double().numpy()
        return Prediction(scores=scores, maps=geometry.to_frame(smooth, output_size))

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.backbones.graph import FeatureTaps
        from autovi_core.export import ExportPlan

        from .export import GlassGraph

        self.check_fitted("export")
        hp, geometry, sigma = self.hparams, self._geometry(), self._sigma()
        taps = FeatureTaps(self._feature_extractor())
        module = GlassGraph(taps, geometry, self.model, int(hp["patch_size"]), sigma)
        steps = [
            f"resize to {geometry.resize} px, ImageNet normalisation",
            f"backbone {hp['backbone']} layers {', '.join(taps.layers)} (weights as constants), "
            f"{hp['patch_size']}x{hp['patch_size']} local mean, upsampled to the first layer's grid and concatenated",
            "feature adaptor and discriminator (weights as constants), sigmoid: anomaly probability per position",
            f"bilinear upsampling to {geometry.size} px, Gaussian blur sigma {sigma:g} px, image score = the map's maximum",
            "map resized to the image's size",
        ]
        return ExportPlan(module, steps=steps, substitutions=[])

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
