"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR workshops 2020).

Embedding: the feature maps of three layers of a frozen ImageNet CNN (strides 4, 8, 16) are upsampled
(nearest neighbour) to the first layer's grid and concatenated; when that is wider than ``d``, a
random subset of ``d`` channels, fixed by the seed and saved with the model, is kept.

Fit: at every grid position a Gaussian is fitted to the training embeddings, streamed batch by batch
(:mod:`.gaussian`); the covariance gets ``eps * I`` and is inverted per position.

Predict: the Mahalanobis distance at every position gives the map, upsampled bilinearly to the network
input, blurred with a Gaussian (sigma = 4 px at a 224-px input, scaled with the input size) and mapped
back to the full frame (a centre crop's unseen border gets the map's minimum, see
:meth:`autovi_core.backbones.InputGeometry.to_frame`). The image score is the maximum of the blurred
map at the network's input resolution (independent of the requested output size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import precision_param, weights_param
from autovi_core.domains import Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import LayerPreset, check_backbone_layers, check_input_stride


class PaDiM(Detector):
    name = "padim"
    description = "PaDiM: Mahalanobis distance to per-position Gaussians of pretrained CNN features."
    params: ClassVar[dict[str, Param]] = {
        "backbone": Param(
            Text("a timm model name"),
            paper="resnet18",
            fast="tf_efficientnet_lite0",
            meaning="frozen ImageNet CNN whose feature maps make the embeddings",
            source="paper (ResNet-18 variant, R18-Rd100); fast: autovi (Lite0, offline)",
        ),
        "weights": weights_param(),
        "precision": precision_param(),
        "layers": Param(
            Optional(
                ListOf(Text("a feature-layer name (timm feature_info module name)"), min_len=1),
                none_means="the preset: the backbone's stride-4, -8 and -16 layers",
            ),
            paper=None,
            fast=None,
            meaning="feature layers concatenated on the first one's grid, finest first",
            source="paper (ResNet layers 1-3); fast: autovi (Lite0 blocks 1, 2, 4)",
        ),
        "resize": Param(
            Int(16),
            paper=256,
            fast=128,
            meaning="side the images are resized to (pixels, square)",
            source="paper (resize 256, centre crop 224); fast: autovi",
        ),
        "crop": Param(
            Optional(Int(16), none_means="no crop: the network sees the whole resized image"),
            paper=224,
            fast=None,
            meaning="side of the centre crop fed to the network (pixels); its map is placed back in the full frame",
            source="paper (resize 256, centre crop 224); fast: autovi",
        ),
        "d": Param(
            Int(1),
            paper=100,
            fast=176,
            meaning="embedding channels kept: a random subset fixed by the seed when the layers have more, else all",
            source="paper (R18-Rd100); fast: autovi (Lite0 blocks 1, 2, 4 have 176 channels)",
        ),
        "eps": Param(
            Float(0.0, low_open=True),
            paper=0.01,
            fast=0.01,
            meaning="regulariser added to each covariance's diagonal (eps * I), which keeps it invertible",
            source="paper §3.2",
        ),
        "blur_sigma": Param(
            Float(0.0),
            paper=4.0,
            fast=4.0,
            meaning="Gaussian blur of the map (pixels at a 224-px input, scaled with the input size; 0: none)",
            source="paper (sigma = 4)",
        ),
        "batch_size": Param(Int(1), paper=16, fast=16, meaning="images per backbone pass", source="autovi"),
    }
    # The paper's stride-4, -8 and -16 stages (ResNet-18 / WideResNet-50 layer1-3).
    layer_preset: ClassVar[LayerPreset] = LayerPreset(
        layers={
            "wide_resnet50_2": ("layer1", "layer2", "layer3"),
            "resnet18": ("layer1", "layer2", "layer3"),
            "tf_efficientnet_lite0": ("blocks.1", "blocks.2", "blocks.4"),  # 24 + 40 + 112 = 176 channels
        },
        strides=(4, 8, 16),
    )
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=("resnet18", "tf_efficientnet_lite0"))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._extractor: Any = None
        self.channels: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.inv_cov: np.ndarray | None = None
        self.grid: tuple[int, int] | None = None

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse a crop larger than the resize, layers the backbone lacks, named twice or not from the
        finest to the coarsest (the others are resampled to the first one's grid), and a network input
        side that the largest stride of the layers does not divide (misaligned feature grids)."""
        backbone, layers, resize, crop = hparams["backbone"], hparams["layers"], hparams["resize"], hparams["crop"]
        if crop is not None and crop > resize:
            raise ConfigError(f"detector {cls.name!r}: crop={crop} refused: larger than resize={resize}")
        check_backbone_layers(cls.name, backbone, layers)
        size, key = (resize, "resize") if crop is None else (crop, "crop")
        check_input_stride(cls.name, key, size, backbone, layers, max(cls.layer_preset.strides))

    # --- building blocks ------------------------------------------------------------------------
    def _geometry(self) -> Any:
        from autovi_core.backbones import InputGeometry

        return InputGeometry.from_hparams(self.hparams)

    def _feature_extractor(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import FeatureExtractor

            self._extractor = FeatureExtractor.from_hparams(self.hparams, self.layer_preset, self.device)
        return self._extractor

    def _choose_channels(self, total: int) -> np.ndarray:
        """All channels if ``total <= d``, else ``d`` random ones fixed by the seed (sorted)."""
        d = int(self.hparams["d"])
        if total <= d:
            return np.arange(total, dtype=np.int64)
        return np.sort(np.random.default_rng(self.seed).choice(total, size=d, replace=False)).astype(np.int64)

    def _embeddings(self, images: Sequence[np.ndarray], description: str) -> Any:
        """Yield (B, d, P) embeddings batch by batch (P = positions of the first layer's grid)."""
        import torch
        import torch.nn.functional as F

        from autovi_core.progress import track

        extractor, geometry = self._feature_extractor(), self._geometry()
        if self.channels is None:
            self.channels = self._choose_channels(extractor.total_channels)
        channels = torch.from_numpy(self.channels)
        size = int(self.hparams["batch_size"])
        starts = range(0, len(images), size)
        for start in track(starts, description, total=len(starts)):
            features = extractor(geometry.to_tensor(images[start : start + size]))
            maps = [features[name] for name in extractor.layers]
            grid = maps[0].shape[-2:]
            maps = [m if m.shape[-2:] == grid else F.interpolate(m, size=grid, mode="nearest") for m in maps]
            embedding = torch.cat(maps, dim=1)[:, channels.to(maps[0].device)]
            self.grid = (int(grid[0]), int(grid[1]))
            yield embedding.flatten(2)

    # --- the method ---------------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from autovi_core.device import resolve_device

        from .gaussian import StreamingGaussian, batched_inverse

        self.provenance["weights_source"] = self._feature_extractor().weights_source.description
        if len(images) < 2:
            raise ValueError(f"{self.name} needs at least 2 training images, got {len(images)}")
        self.channels = None
        stats: StreamingGaussian | None = None
        for embedding in self._embeddings(images, f"{self.name}: Gaussians over {len(images)} training images"):
            if stats is None:
                stats = StreamingGaussian(embedding.shape[1], embedding.shape[2], resolve_device(self.device))
            stats.update(embedding)
        mean, cov = stats.finalize(float(self.hparams["eps"]))
        self.mean = mean.float().cpu().numpy()
        inverse = batched_inverse(cov, dtype=torch.float32)
        del cov, stats  # release the float64 covariances before the copy to numpy
        self.inv_cov = inverse.cpu().numpy()

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch

        from autovi_core.device import resolve_device

        from .gaussian import mahalanobis

        device = resolve_device(self.device)
        mean, inv_cov = torch.from_numpy(self.mean).to(device), torch.from_numpy(self.inv_cov).to(device)
        geometry = self._geometry()
        sigma = float(self.hparams["blur_sigma"]) * geometry.size / 224.0
        maps, scores = [], []
        for embedding in self._embeddings(images, f"{self.name}: scoring {len(images)} images"):
            distances = mahalanobis(embedding, mean, inv_cov).reshape(-1, *self.grid)
            smooth = geometry.upsample_and_blur(distances, sigma)  # on the network input
            scores.append(smooth.flatten(1).max(dim=1).values.double().cpu().numpy())
            maps.append(geometry.to_frame(smooth, output_size))
        return Prediction(scores=np.concatenate(scores), maps=np.concatenate(maps))

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.backbones.graph import FeatureTaps
        from autovi_core.export import ExportPlan

        from .export import PaDiMGraph

        self.check_fitted("export")
        geometry = self._geometry()
        sigma = float(self.hparams["blur_sigma"]) * geometry.size / 224.0
        taps = FeatureTaps(self._feature_extractor())
        module = PaDiMGraph(taps, geometry, self.channels, self.mean, self.inv_cov, self.grid, sigma)
        steps = [
            f"resize to {geometry.resize}" + (f", centre crop {geometry.crop}" if geometry.crop else "") + ", ImageNet normalisation",
            f"backbone {self.hparams['backbone']} layers {', '.join(taps.layers)} (weights as constants), {len(self.channels)} channels",
            f"Mahalanobis distance to {self.mean.shape[0]} per-position Gaussians (means, inverse covariances as constants)",
            f"bilinear upsampling to {geometry.size} px, Gaussian blur sigma {sigma:g} px, image score = the map's maximum",
            "map placed in the full frame and resized to the image's size",
        ]
        return ExportPlan(module, steps=steps, substitutions=taps.substitutions)

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        return {
            "channels": self.channels,
            "mean": self.mean,
            "inv_cov": self.inv_cov,
            "grid": np.asarray(self.grid, dtype=np.int64),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.channels = np.asarray(state["channels"], dtype=np.int64)
        self.mean = np.ascontiguousarray(state["mean"], dtype=np.float32)
        self.inv_cov = np.ascontiguousarray(state["inv_cov"], dtype=np.float32)
        self.grid = tuple(int(v) for v in state["grid"])
