"""EfficientAD (Batzner et al., WACV 2024).

A frozen *teacher* PDN describes every 33 x 33 patch (:mod:`.teacher`). A *student* PDN with twice
the channels learns, on defect-free images only, to predict the teacher with its first half (loss:
hard-feature mining, only the squared errors above their 0.999 quantile count) and to predict an
*autoencoder* with its second half. The autoencoder reconstructs the teacher's features through a
64-d bottleneck, so it captures the global (logical) layout but not fine local detail.

- map_ST = channel mean of (T - S_st)^2 flags local anomalies the student never learnt to copy;
- map_AE = channel mean of (A - S_ae)^2 flags logical anomalies the autoencoder reconstructs wrongly.

Each map is normalised by its 0.9 and 0.995 quantiles on held-out defect-free images (``validation``:
10 % of the training images, excluded from training, as in the paper; ``train``: the whole training
set, the AutoVI paper's variant), the two are averaged, padded back to the input's stride-4 grid and
resized. The image score is the maximum of the map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.errors import ConfigError

_COMMON: dict[str, Any] = {
    "weights": None,  # backbone weights file used for teacher distillation (--weights)
    "teacher_weights": None,  # a state-dict file of a ready teacher PDN (skips distillation)
    "teacher_pool": None,  # folder of images to distil the teacher on (default: cached datasets + fit images)
    "teacher_batch": 16,
    "teacher_lr": 1e-4,
    "hard_quantile": 0.999,
    "penalty_folder": None,  # folder of out-of-distribution images for the penalty loss (None = off)
    "map_normalisation": "validation",  # "validation" (paper) or "train" (AutoVI paper)
    "validation_fraction": 0.1,
    "q_a": 0.9,
    "q_b": 0.995,
    "weight_decay": 1e-5,
    "lr_drop_at": 0.95,
    "batch_size": 1,
    "ae_dropout": 0.2,
    "checkpoint_every": None,  # steps between training checkpoints (None = none)
    "checkpoint_dir": None,  # where checkpoints go; training resumes from the latest one there
}


class EfficientAD(Detector):
    name = "efficientad"
    description = "EfficientAD: student-teacher PDNs with hard-feature loss plus an autoencoder for logical anomalies."
    profiles = {
        "paper": {
            **_COMMON,
            "backbone": "wide_resnet101_2",  # falls back to tf_efficientnet_lite0 when its weights are absent
            "model_size": "medium",  # the paper's EfficientAD-M; the AutoVI paper used "small"
            "out_channels": 384,
            "width": 1.0,
            "image_size": 256,
            "steps": 70000,
            "lr": 1e-4,
            "teacher_steps": 60000,
            "teacher_views": None,  # fresh augmented views every step
            "teacher_pool_max": 20000,
        },
        "fast": {
            **_COMMON,
            "backbone": "tf_efficientnet_lite0",
            "model_size": "small",
            "out_channels": 64,
            "width": 0.25,
            "image_size": 64,
            "steps": 1000,
            "lr": 2e-3,
            "teacher_steps": 200,
            "teacher_views": 192,  # a fixed set of augmented views, backbone features extracted once
            "teacher_pool_max": 400,
            "teacher_batch": 8,
            "teacher_lr": 2e-3,
        },
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=("wide_resnet101_2", "tf_efficientnet_lite0"))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        if self.hparams["map_normalisation"] not in ("validation", "train"):
            raise ConfigError(f"efficientad: map_normalisation must be 'validation' or 'train', got {self.hparams['map_normalisation']!r}")
        self.model: Any = None  # the fused inference module (:class:`.inference.FusedEfficientAD`)

    # --- inputs -------------------------------------------------------------------------------------
    def _unit_images(self, images: Sequence[np.ndarray]) -> Any:
        """(N, 3, S, S) float images in [0, 1]."""
        from .teacher import arrays_to_tensor

        return arrays_to_tensor(images, int(self.hparams["image_size"])).float() / 255.0

    def _penalty_images(self) -> Any:
        from .teacher import discover_pool, load_images

        if not self.hparams["penalty_folder"]:
            return None
        return load_images(discover_pool(self.hparams["penalty_folder"]), int(self.hparams["image_size"])).float() / 255.0

    # --- the method ---------------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from .inference import FusedEfficientAD
        from .networks import Autoencoder, pdn
        from .teacher import obtain_teacher
        from .training import train_student_autoencoder

        hp = self.hparams
        if len(images) < 2:
            raise ValueError(f"{self.name} needs at least 2 training images, got {len(images)}")
        teacher_state, self.provenance["teacher_source"] = obtain_teacher(hp, images, self.device)
        torch.manual_seed(self.seed)
        c, size, width = int(hp["out_channels"]), int(hp["image_size"]), float(hp["width"])
        teacher = pdn(hp["model_size"], c, width=width)
        teacher.load_state_dict(teacher_state)
        student = pdn(hp["model_size"], 2 * c, width=width)
        autoencoder = Autoencoder(c, size, width=width, dropout=float(hp["ae_dropout"]))
        model = FusedEfficientAD(teacher, student, autoencoder).to(self.device)

        data = self._unit_images(images)
        generator = torch.Generator().manual_seed(self.seed)
        train_idx, norm_idx = self._split(len(images), generator)
        model.set_teacher_statistics(data[train_idx])
        train_student_autoencoder(model, data[train_idx], self._penalty_images(), hp, self.seed, generator, images, self.device)
        model.eval()
        model.set_map_quantiles(data[norm_idx], float(hp["q_a"]), float(hp["q_b"]))
        self.model = model

    def _split(self, n: int, generator: Any) -> tuple[Any, Any]:
        """(training indices, normalisation indices): a random validation share, or everything twice."""
        import torch

        if self.hparams["map_normalisation"] == "train":
            everything = torch.arange(n)
            return everything, everything
        n_val = min(n - 1, max(1, round(float(self.hparams["validation_fraction"]) * n)))
        order = torch.randperm(n, generator=generator)
        return order[n_val:].sort().values, order[:n_val].sort().values

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch

        from autovi_core.backbones import InputGeometry

        size = int(self.hparams["image_size"])
        grids = torch.cat([self.model.anomaly_grid(batch) for batch in self._unit_images(images).split(16)])
        scores = grids.flatten(1).max(dim=1).values.double()
        padded = self.model.pad_to_input_grid(grids)
        maps = InputGeometry(size).maps_to_frame(padded, output_size, sigma=0.0)
        return Prediction(scores=scores.numpy(), maps=maps)

    def latency_forward(self, image: Any) -> Any:
        """The fused batch-1 path: an ImageNet-unnormalised (1, 3, S, S) tensor in [0, 1] -> (1, h, w) map grid."""
        return self.model.anomaly_grid(image)

    # --- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        return {k: v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        import torch

        from .inference import FusedEfficientAD
        from .networks import Autoencoder, pdn

        hp = self.hparams
        c, width = int(hp["out_channels"]), float(hp["width"])
        model = FusedEfficientAD(
            pdn(hp["model_size"], c, width=width),
            pdn(hp["model_size"], 2 * c, width=width),
            Autoencoder(c, int(hp["image_size"]), width=width, dropout=float(hp["ae_dropout"])),
        )
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
        self.model = model.to(self.device).prepare_inference()
