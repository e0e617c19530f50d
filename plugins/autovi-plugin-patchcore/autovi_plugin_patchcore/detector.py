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
from autovi_core.layer_preset import LayerPreset

_COMMON: dict[str, Any] = {
    "weights": None,  # a state-dict file for the backbone (else hub cache, else the Lite0 package)
    "layers": None,  # feature layers; None = the preset for the backbone (stride 8 and 16)
    "patch_size": 3,
    "target_dim": 1024,
    "coreset_projection": 128,
    "coreset_start_points": 10,
    "k": 1,
    "reweight": True,
    "reweight_neighbours": 9,
    "blur_sigma": 4.0,  # Gaussian sigma in pixels at a 224-px input; scaled with the input size
}


class PatchCore(Detector):
    name = "patchcore"
    description = "PatchCore: nearest-neighbour distance to a coreset memory bank of locally aware patch features."
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {
            **_COMMON,
            "backbone": "wide_resnet50_2",
            "resize": 256,
            "crop": 224,
            "coreset_ratio": 0.1,
            "batch_size": 8,
        },
        "fast": {
            **_COMMON,
            "backbone": "tf_efficientnet_lite0",
            "resize": 128,
            "crop": None,
            "coreset_ratio": 0.1,
            "batch_size": 16,
        },
    }
    # The paper's stride-8 and stride-16 stages (WideResNet-50 layer2 + layer3).
    layer_preset: ClassVar[LayerPreset] = LayerPreset(
        layers={
            "wide_resnet50_2": ("layer2", "layer3"),
            "resnet18": ("layer2", "layer3"),
            "tf_efficientnet_lite0": ("blocks.2", "blocks.4"),  # 40 + 112 = 152 channels
        },
        strides=(8, 16),
    )
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=("wide_resnet50_2", "tf_efficientnet_lite0"))

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
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        from autovi_core.device import resolve_device
        from autovi_core.progress import track

        from .coreset import coreset_indices

        self.provenance["weights_source"] = self._feature_extractor().weights_source.description
        features = self._patch_features(images, f"{self.name}: features of {len(images)} training images")
        n, d, h, w = features.shape
        bank = features.permute(0, 2, 3, 1).reshape(n * h * w, d)
        ratio = float(self.hparams["coreset_ratio"])
        keep = coreset_indices(
            bank.to(resolve_device(self.device)),
            ratio,
            projection_dim=int(self.hparams["coreset_projection"]),
            start_points=int(self.hparams["coreset_start_points"]),
            seed=self.seed,
            steps=lambda r: track(r, f"{self.name}: coreset of {len(r)} / {bank.shape[0]} patches", total=len(r)),
        )
        self.memory_bank = bank[keep.cpu()].numpy().astype(np.float32)
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

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        return {"memory_bank": self.memory_bank, "grid": np.asarray(self.grid, dtype=np.int64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.memory_bank = np.ascontiguousarray(state["memory_bank"], dtype=np.float32)
        self.grid = tuple(int(v) for v in state["grid"])
        self._knn = None
