"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Fit: every training image goes through a frozen ImageNet CNN; the locally aware patch features of
two mid-level layers (:mod:`.features`) of all images form a memory bank of nominal patches, which a
greedy k-centre coreset (:mod:`.coreset`) subsamples to ``coreset_ratio`` of its size.

Predict: each test patch is scored by its distance to the nearest bank vector (:mod:`.scoring`);
the score grid is upsampled bilinearly to the network input, blurred with a Gaussian (sigma = 4 px
at a 224-px input, scaled with the input size) and mapped back to the full frame. The image score is
the largest patch score, reweighted by the paper's Eq. 7 when ``reweight`` is on.

Cropping: with ``crop`` set, the network sees the centre crop of the ``resize`` x ``resize`` image
(as in the paper); the map of that crop is placed at its position in the full frame and the thin
unseen border gets the map's minimum (it is never scored), see
:meth:`autovi_core.backbones.InputGeometry.maps_to_frame`.

Heavy libraries are imported inside the methods so that listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import precision_param, weights_param
from autovi_core.domains import Bool, Choice, Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import MID_LEVEL_FEATURES, LayerPreset, check_backbone_layers, check_input_stride


class PatchCore(Detector):
    name = "patchcore"
    description = "PatchCore: nearest-neighbour distance to a coreset memory bank of locally aware patch features."
    params: ClassVar[dict[str, Param]] = {
        "backbone": Param(
            Text("a timm model name"),
            paper="wide_resnet50_2",
            fast="tf_efficientnet_lite0",
            meaning="frozen ImageNet CNN giving the patch features (`--backbone`)",
            source="official code (WideResNet-50); fast: autovi (EfficientNet-Lite0, available offline)",
        ),
        "weights": weights_param(),
        "precision": precision_param(),
        "layers": Param(
            Optional(ListOf(Text("a timm feature-layer name"), min_len=1), none_means="the backbone's stride-8 and stride-16 layers"),
            paper=None,
            fast=None,
            meaning="feature layers, shallow to deep; the patch grid is the first one's (none: layer2+layer3 / blocks.2+blocks.4)",
            source="official code (layer2 + layer3); fast: autovi (Lite0 blocks.2 + blocks.4)",
        ),
        "resize": Param(
            Int(16),
            paper=256,
            fast=128,
            meaning="side of the square every image is resized to (pixels; the aspect ratio is not kept)",
            source="official code; fast: autovi",
        ),
        "crop": Param(
            Optional(Int(16), none_means="no crop: the network sees the whole resized image"),
            paper=224,
            fast=None,
            meaning="centre crop the network sees (pixels, <= resize); the unseen border is never scored",
            source="official code; fast: autovi",
        ),
        "patch_size": Param(
            Int(1, odd=True),
            paper=3,
            fast=3,
            meaning="side of the neighbourhood averaged at each feature position (1: none)",
            source="official code (paper §3.1)",
        ),
        "target_dim": Param(
            Int(1),
            paper=1024,
            fast=1024,
            meaning="largest patch-feature dimension; wider concatenations are channel-pooled to it (an equal share per layer)",
            source="official code",
        ),
        "coreset_ratio": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.1,
            fast=0.1,
            meaning="fraction of the training patches kept in the memory bank by the greedy coreset (1: all)",
            source="official code (paper §3.2)",
        ),
        "coreset_algorithm": Param(
            Choice("exact", "pruned"),
            paper="pruned",
            fast="pruned",
            meaning=(
                "farthest-point selection: `exact` reads the whole projected bank every step (float32, as before); "
                "`pruned` skips the distances the triangle inequality proves cannot change a minimum (float64; "
                "same rule, ~4-5x faster at 400 images, may break float32 near-ties differently)"
            ),
            source="autovi (#15); the greedy rule is the paper's §3.2",
        ),
        "coreset_projection": Param(
            Int(1),
            paper=128,
            fast=128,
            meaning="dimensions of the random projection the coreset distances are measured in (none if the features are narrower)",
            source="official code",
        ),
        "coreset_start_points": Param(
            Int(1),
            paper=10,
            fast=10,
            meaning="random bank points whose mean distance initialises the coreset's minimum distances",
            source="official code",
        ),
        "k": Param(
            Int(1),
            paper=1,
            fast=1,
            meaning="nearest bank vectors averaged for a patch score (at most the bank size)",
            source="official code",
        ),
        "reweight": Param(
            Bool(),
            paper=True,
            fast=True,
            meaning="reweight the image score by the rarity of its matched bank vector (false: the maximum patch score)",
            source="paper Eq. 7 (the official code does not reweight)",
        ),
        "reweight_neighbours": Param(
            Int(2),
            paper=9,
            fast=9,
            meaning="b of Eq. 7: bank neighbours of the matched vector, itself included (1 would zero every score)",
            source="paper Eq. 7",
        ),
        "blur_sigma": Param(
            Float(0.0),
            paper=4.0,
            fast=4.0,
            meaning="Gaussian blur of the maps (pixels at a 224-px input, scaled with the input size; 0: none)",
            source="official code",
        ),
        "batch_size": Param(
            Int(1),
            paper=8,
            fast=16,
            meaning="images per backbone pass (memory only, not the result)",
            source="autovi",
        ),
    }
    layer_preset: ClassVar[LayerPreset] = MID_LEVEL_FEATURES  # the stride-8 and stride-16 stages
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=("wide_resnet50_2", "tf_efficientnet_lite0"))

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse, before any work and without torch: a crop larger than the resized image, layers the
        backbone does not have (or repeated, or not shallow to deep), fewer feature dimensions than
        layers, and an input side the deepest layer's stride does not divide (its grid would not
        line up with the image: the maps would be shifted)."""
        name, backbone, layers = cls.name, hparams["backbone"], hparams["layers"]
        resize, crop = hparams["resize"], hparams["crop"]
        if crop is not None and crop > resize:
            raise ConfigError(f"detector {name!r}: crop={crop} refused: larger than resize={resize}")
        check_backbone_layers(name, backbone, layers)
        n_layers, target_dim = len(layers or ()) or len(cls.layer_preset.strides), hparams["target_dim"]
        if target_dim < n_layers:
            raise ConfigError(f"detector {name!r}: target_dim={target_dim} refused: fewer than the {n_layers} layers it is shared by")
        size, key = (crop, "crop") if crop is not None else (resize, "resize")
        check_input_stride(name, key, size, backbone, layers, max(cls.layer_preset.strides))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._extractor: Any = None
        self._knn: Any = None
        self.memory_bank: np.ndarray | None = None
        self.grid: tuple[int, int] | None = None

    # --- building blocks ------------------------------------------------------------------------
    def _geometry(self) -> Any:
        from autovi_core.backbones import InputGeometry

        return InputGeometry.from_hparams(self.hparams)

    def _feature_extractor(self) -> Any:
        if self._extractor is None:
            from autovi_core.backbones import FeatureExtractor

            self._extractor = FeatureExtractor.from_hparams(self.hparams, self.layer_preset, self.device)
        return self._extractor

    def _patch_features(self, images: Sequence[np.ndarray], description: str) -> Any:
        """(N, D, h, w) locally aware patch features of ``images``, extracted batch by batch."""
        import torch

        from autovi_core.progress import track

        from .features import patch_features

        extractor, geometry, hp = self._feature_extractor(), self._geometry(), self.hparams
        size = int(hp["batch_size"])
        starts = range(0, len(images), size)
        out = []
        for start in track(starts, description, total=len(starts)):
            features = extractor(geometry.to_tensor(images[start : start + size]))
            out.append(patch_features(features, extractor.layers, int(hp["patch_size"]), int(hp["target_dim"])).cpu())
        return torch.cat(out)

    def _nearest(self) -> Any:
        if self._knn is None:
            import torch

            from autovi_core.device import resolve_device

            from .scoring import NearestNeighbours

            self._knn = NearestNeighbours(torch.from_numpy(self.memory_bank), torch.device(resolve_device(self.device)))
        return self._knn

    # --- the method ---------------------------------------------------------------------------------
    def _training_bank(self, images: Sequence[np.ndarray]) -> tuple[Any, tuple[int, int]]:
        """The (N x h x w, D) float32 bank of all training patches and the grid (h, w).

        Written batch by batch into one tensor allocated after the first batch (whose shape gives the
        patches per image and the dims) and after :func:`.memory.check_bank_fits` has accepted its
        size: one copy of the bank, never the per-batch list plus its concatenation.
        """
        import torch

        from autovi_core.progress import track

        from .features import patch_features
        from .memory import check_bank_fits

        extractor, geometry, hp = self._feature_extractor(), self._geometry(), self.hparams
        size = int(hp["batch_size"])
        starts = range(0, len(images), size)
        bank, grid = None, (0, 0)
        for start in track(starts, f"{self.name}: features of {len(images)} training images", total=len(starts)):
            batch = images[start : start + size]
            features = extractor(geometry.to_tensor(batch))
            features = patch_features(features, extractor.layers, int(hp["patch_size"]), int(hp["target_dim"])).cpu()
            n, d, h, w = features.shape
            if bank is None:
                check_bank_fits(self.name, len(images), h * w, d, int(hp["coreset_projection"]))
                bank, grid = torch.empty((len(images) * h * w, d), dtype=torch.float32), (h, w)
            bank[start * h * w : (start + n) * h * w] = features.permute(0, 2, 3, 1).reshape(n * h * w, d)
        return bank, grid

    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        from autovi_core.device import resolve_device
        from autovi_core.progress import track

        from .coreset import coreset_indices

        self.provenance["weights_source"] = self._feature_extractor().weights_source.description
        bank, (h, w) = self._training_bank(images)
        ratio = float(self.hparams["coreset_ratio"])
        keep = coreset_indices(
            bank.to(resolve_device(self.device)),
            ratio,
            projection_dim=int(self.hparams["coreset_projection"]),
            start_points=int(self.hparams["coreset_start_points"]),
            seed=self.seed,
            algorithm=str(self.hparams["coreset_algorithm"]),
            steps=lambda r: track(r, f"{self.name}: coreset of {len(r)} / {bank.shape[0]} patches", total=len(r)),
        )
        self.memory_bank = np.ascontiguousarray(bank[keep.cpu()].numpy(), dtype=np.float32)
        self.grid = (h, w)
        self._knn = None

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:

        from .scoring import reweighted_image_scores

        hp, geometry = self.hparams, self._geometry()
        features = self._patch_features(images, f"{self.name}: scoring {len(images)} images")
        n, d, h, w = features.shape
        patches = features.permute(0, 2, 3, 1).reshape(n, h * w, d)
        knn = self._nearest()
        distances, indices = knn.search(patches.reshape(-1, d), k=int(hp["k"]))
        patch_scores = distances.mean(dim=1).reshape(n, h * w).double()
        if hp["reweight"]:
            nearest = indices[:, 0].reshape(n, h * w)
            scores = reweighted_image_scores(patches, patch_scores, nearest, knn, int(hp["reweight_neighbours"]))
        else:
            scores = patch_scores.max(dim=1).values
        sigma = float(hp["blur_sigma"]) * geometry.size / 224.0
        maps = geometry.maps_to_frame(patch_scores.float().reshape(n, h, w), output_size, sigma)
        return Prediction(scores=scores.numpy(), maps=maps)

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`): faiss
        replaced by an exact, chunked matrix-product search over the bank."""
        from autovi_core.backbones.graph import FeatureTaps
        from autovi_core.export import ExportPlan

        from .export import CHUNK, PatchCoreGraph

        self.check_fitted("export")
        hp, geometry = self.hparams, self._geometry()
        sigma = float(hp["blur_sigma"]) * geometry.size / 224.0
        taps = FeatureTaps(self._feature_extractor())
        bank = self.memory_bank
        module = PatchCoreGraph(taps, geometry, bank, self.grid, hp, sigma)
        steps = [
            f"resize to {geometry.resize}" + (f", centre crop {geometry.crop}" if geometry.crop else "") + ", ImageNet normalisation",
            f"backbone {hp['backbone']} layers {', '.join(taps.layers)} (weights as constants), {hp['patch_size']}x{hp['patch_size']} "
            f"locally aware patch features, {bank.shape[1]} dims",
            f"distance to the {hp['k']} nearest of {bank.shape[0]} memory-bank vectors (the bank as a constant)",
            f"bilinear upsampling to {geometry.size} px, Gaussian blur sigma {sigma:g} px,"
            " map placed in the full frame at the image's size",
            "image score: the largest patch score"
            + (f", reweighted by Eq. 7 over {hp['reweight_neighbours']} neighbours" if hp["reweight"] else ""),
        ]
        substitutions = [
            f"nearest-neighbour search: faiss IndexFlatL2 (CPU) replaced by an exact matrix-product kNN over the {bank.shape[0]}-vector "
            f"bank in chunks of {CHUNK} vectors, in float32 (infer scores in float64)",
            *taps.substitutions,
        ]
        return ExportPlan(module, steps=steps, substitutions=substitutions)

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        return {"memory_bank": self.memory_bank, "grid": np.asarray(self.grid, dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.memory_bank = np.ascontiguousarray(state["memory_bank"], dtype=np.float32)
        self.grid = tuple(int(v) for v in state["grid"])
        self._knn = None
