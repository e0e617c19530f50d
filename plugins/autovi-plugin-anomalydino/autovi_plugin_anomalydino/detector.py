"""AnomalyDINO (Damm, Laszkiewicz, Lederer and Fischer, "AnomalyDINO: Boosting Patch-based Few-shot
Anomaly Detection with DINOv2", WACV 2025).

Training-free. Fit: the patch features of every reference (good) image, optionally of its rotated
copies too (few-shot augmentation), form the memory bank: all of them, no coreset. With ``masking``
only the patches of the object (a PCA mask per image, :mod:`.masking`) enter the bank.

Predict: every test patch (of the object, with ``masking``) is scored by its cosine distance to the
nearest bank patch (:mod:`.scoring`); background patches score 0. The image score is the mean of the
highest 1 % of the patch scores. The map is the patch-score grid upsampled bilinearly to the network
input, blurred with a Gaussian (sigma 4 px at a 448-px shorter side, scaled with the input) and
resized to the requested size.

The paper's backbone is DINOv2 ViT-S/14 (timm ``vit_small_patch14_dinov2.lvd142m``) at a shorter side
of 448; the ``fast`` profile runs the same algorithm on EfficientNet-Lite0 features, available offline.
Heavy libraries are imported inside the methods so that listing plugins stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import weights_param
from autovi_core.domains import Bool, Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.layer_preset import MID_LEVEL_FEATURES, LayerPreset, check_backbone_layers, check_input_stride

_PAPER_BACKBONE = "vit_small_patch14_dinov2.lvd142m"


def _vit_patch_size(backbone: str) -> int | None:
    """The patch side of a timm ViT name (``vit_small_patch14_dinov2.lvd142m`` -> 14); None for other names."""
    match = re.match(r"^vit_\w*?patch(\d+)", backbone)
    return int(match.group(1)) if match else None


class AnomalyDINO(Detector):
    name = "anomalydino"
    description = "AnomalyDINO: cosine distance of each patch to its nearest reference patch (DINOv2; training-free, few-shot)."
    params: ClassVar[dict[str, Param]] = {
        "backbone": Param(
            Text("a timm model name"),
            paper=_PAPER_BACKBONE,
            fast="tf_efficientnet_lite0",
            meaning="frozen backbone: a timm ViT (`vit_...patchN...`: last-block patch tokens) or a CNN (preset layers)",
            source="paper, experiments (DINOv2 ViT-S/14); fast: autovi (EfficientNet-Lite0, available offline)",
        ),
        "weights": weights_param(),
        "layers": Param(
            Optional(ListOf(Text("a timm feature-layer name"), min_len=1), none_means="CNN: its stride-8 and stride-16 layers"),
            paper=None,
            fast=None,
            meaning="CNN feature layers, shallow to deep, concatenated on the first one's grid (none for a ViT: its patch tokens)",
            source="autovi (the paper uses ViT tokens only; Lite0 blocks.2 + blocks.4 as PatchCore's fast profile)",
        ),
        "resize": Param(
            Int(8),
            paper=448,
            fast=128,
            meaning=(
                "shorter side of the network input (pixels; the aspect ratio is kept, the longer side rounded to the grid); "
                "a multiple of the ViT patch side or of the deepest CNN layer's stride"
            ),
            source="paper, experiments (448 for ViT-S/14); fast: autovi",
        ),
        "masking": Param(
            Bool(),
            paper=True,
            fast=False,
            meaning=(
                "zero-shot masking: only the object's patches (first-PCA-component mask per image) enter the bank and are scored; "
                "the paper uses it for objects and not for textures"
            ),
            source="paper, method (per category there); fast: autovi (off: the PCA split is DINOv2's property, not Lite0's)",
        ),
        "mask_threshold": Param(
            Optional(Float(), none_means="Otsu's threshold on each image's first-component values"),
            paper=None,
            fast=None,
            meaning="fixed threshold on the first principal component's raw values (both signs tried; its scale depends on the backbone)",
            source="autovi (the paper thresholds the first component without giving the value in its text)",
        ),
        "mask_dilation": Param(
            Int(0),
            paper=2,
            fast=1,
            meaning="iterations (patches) of the mask's dilation and then of its closing (0: the raw threshold mask)",
            source="paper, method (dilation and closing); the counts: autovi",
        ),
        "rotations": Param(
            ListOf(Float(0.0, 360.0, low_open=True, high_open=True), min_len=0),
            paper=[45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0],
            fast=[45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0],
            meaning="angles (degrees, counter-clockwise) of the rotated copies of each reference image added to the bank; [] for none",
            source="paper, method (rotation augmentation of the references in the few-shot setting)",
        ),
        "rotation_max_shots": Param(
            Int(0),
            paper=16,
            fast=16,
            meaning="rotated copies are added only when there are at most this many reference images (0: never)",
            source="autovi (the paper augments in its few-shot settings, up to 16 shots)",
        ),
        "top_fraction": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.01,
            fast=0.01,
            meaning="image score: mean of this highest share of the (object) patch scores, at least one patch",
            source="paper, method (mean of the 1 % highest patch distances)",
        ),
        "blur_sigma": Param(
            Float(0.0),
            paper=4.0,
            fast=4.0,
            meaning="Gaussian blur of the maps (pixels at a 448-px shorter side, scaled with `resize`; 0: none)",
            source="paper, method",
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
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=(_PAPER_BACKBONE, "tf_efficientnet_lite0"))

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse, before any work and without torch: layers for a ViT, CNN layers the backbone does not
        have, a shorter side the ViT patch (or the deepest CNN stride) does not divide, repeated angles."""
        name, backbone, layers, resize = cls.name, hparams["backbone"], hparams["layers"], hparams["resize"]
        patch = _vit_patch_size(backbone)
        if patch is not None:
            if layers:
                raise ConfigError(f"detector {name!r}: layers={list(layers)!r} refused: the ViT {backbone!r} gives its patch tokens")
            if resize % patch:
                raise ConfigError(f"detector {name!r}: resize={resize} refused: not a multiple of {patch}, the patch side of {backbone!r}")
        else:
            check_backbone_layers(name, backbone, layers)
            check_input_stride(name, "resize", resize, backbone, layers, max(cls.layer_preset.strides))
        angles = list(hparams["rotations"])
        repeated = sorted({a for a in angles if angles.count(a) > 1})
        if repeated:
            raise ConfigError(f"detector {name!r}: rotations={angles!r} refused: {repeated} named more than once")

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._features: Any = None
        self._knn: Any = None
        self.bank: np.ndarray | None = None
        self.reference_coverage: np.ndarray | None = None
        self.reference_fallback: np.ndarray | None = None

    # --- building blocks ------------------------------------------------------------------------
    def _torch_device(self) -> Any:
        import torch

        from autovi_core.device import resolve_device

        return torch.device(resolve_device(self.device))

    def _feature_source(self) -> Any:
        """The backbone's patch features (built once; its weights resolved by the core, never random)."""
        if self._features is None:
            from .features import CnnPatchFeatures, VitPatchTokens

            hp, device = self.hparams, self._torch_device()
            if _vit_patch_size(hp["backbone"]) is not None:
                self._features = VitPatchTokens(hp["backbone"], hp["weights"], device)
            else:
                self._features = CnnPatchFeatures(hp, self.layer_preset, device)
        return self._features

    def _views(self, images: Sequence[np.ndarray], angles: Sequence[float], description: str) -> Any:
        """Yield (image index, angle, (h, w, D) float32 features, (h, w) usable cells, network size) for
        every image and angle, batch by batch within groups of images of one network size."""
        from autovi_core.progress import track

        from .features import group_by_size, rotate, to_tensor, usable_cells

        source, size = self._feature_source(), int(self.hparams["batch_size"])
        batches = [
            (shape, indices[start : start + size])
            for shape, indices in group_by_size(images, int(self.hparams["resize"]), source.multiple).items()
            for start in range(0, len(indices), size)
        ]
        for shape, indices in track(batches, description, total=len(batches)):
            batch = to_tensor([images[i] for i in indices], shape)
            for angle in angles:
                turned, coverage = rotate(batch, float(angle)) if angle else (batch, None)
                features = source(turned).cpu()
                grid = tuple(features.shape[-2:])
                usable = np.ones(grid, dtype=bool) if coverage is None else usable_cells(coverage, grid)
                array = features.permute(0, 2, 3, 1).numpy()
                for offset, index in enumerate(indices):
                    yield index, float(angle), array[offset], usable, shape

    def _mask(self, features: np.ndarray, usable: np.ndarray) -> Any:
        from .masking import ForegroundMask, foreground_mask

        if not self.hparams["masking"]:
            return ForegroundMask(usable, float("nan"), False)
        hp = self.hparams
        return foreground_mask(features, threshold=hp["mask_threshold"], dilation=int(hp["mask_dilation"]), usable=usable)

    def _nearest(self) -> Any:
        if self._knn is None:
            import torch

            from .scoring import CosineNearestNeighbour

            self._knn = CosineNearestNeighbour(torch.from_numpy(self.bank), self._torch_device())
        return self._knn

    # --- the method ---------------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        source = self._feature_source()
        hp = self.hparams
        rotations = [float(a) for a in hp["rotations"]]
        augment = bool(rotations) and len(images) <= int(hp["rotation_max_shots"])
        angles = [0.0, *rotations] if augment else [0.0]
        parts, coverage, fallback = [], [], []
        description = f"{self.name}: features of {len(images)} reference images x {len(angles)} rotation(s)"
        for _, _, features, usable, _ in self._views(images, angles, description):
            mask = self._mask(features, usable)
            parts.append(features[mask.mask])
            coverage.append(mask.coverage)
            fallback.append(mask.fallback)
        bank = np.concatenate(parts, axis=0)
        norms = np.linalg.norm(bank, axis=1, keepdims=True)
        self.bank = np.ascontiguousarray(bank / np.maximum(norms, 1e-12), dtype=np.float32)
        self.reference_coverage = np.asarray(coverage, dtype=np.float32)
        self.reference_fallback = np.asarray(fallback, dtype=np.uint8)
        self._knn = None
        self.provenance.update(
            weights_source=source.weights_source.description,
            features=source.kind,
            reference_images=len(images),
            reference_views=len(parts),
            rotations_applied=angles[1:],
            bank_patches=int(self.bank.shape[0]),
        )
        if hp["masking"]:
            self.provenance["mask_fallback_reference_views"] = int(self.reference_fallback.sum())

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch
        import torch.nn.functional as F

        from autovi_core.backbones import gaussian_blur

        from .scoring import top_fraction_mean

        hp, knn = self.hparams, self._nearest()
        fraction = float(hp["top_fraction"])
        scores = np.zeros(len(images), dtype=np.float64)
        grids: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for index, _, features, usable, shape in self._views(images, [0.0], f"{self.name}: scoring {len(images)} images"):
            mask = self._mask(features, usable)
            h, w, d = features.shape
            distances = knn.distances(torch.from_numpy(features.reshape(h * w, d))).numpy().reshape(h, w)
            distances = np.where(mask.mask, distances, 0.0).astype(np.float32)
            scores[index] = top_fraction_mean(distances[mask.mask], fraction)
            grids.setdefault(shape, []).append((index, distances))
        maps = np.empty((len(images), *output_size), dtype=np.float32)
        sigma = float(hp["blur_sigma"]) * int(hp["resize"]) / 448.0
        for shape, items in grids.items():
            stack = torch.from_numpy(np.stack([grid for _, grid in items]))
            upsampled = F.interpolate(stack.unsqueeze(1), size=shape, mode="bilinear", align_corners=False).squeeze(1)
            blurred = gaussian_blur(upsampled, sigma)
            if tuple(blurred.shape[-2:]) != tuple(output_size):
                blurred = F.interpolate(blurred.unsqueeze(1), size=tuple(output_size), mode="bilinear", align_corners=False).squeeze(1)
            for (index, _), frame in zip(items, blurred.numpy()):
                maps[index] = frame
        return Prediction(scores=scores, maps=maps)

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        return {"bank": self.bank, "reference_coverage": self.reference_coverage, "reference_fallback": self.reference_fallback}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.bank = np.ascontiguousarray(state["bank"], dtype=np.float32)
        self.reference_coverage = np.asarray(state["reference_coverage"], dtype=np.float32)
        self.reference_fallback = np.asarray(state["reference_fallback"], dtype=np.uint8)
        self._knn = None
