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
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.backbone_params import weights_param
from autovi_core.checkpoint_params import check_checkpoint_params, checkpoint_params
from autovi_core.domains import Choice, Float, Int, Optional, Param, Text
from autovi_core.errors import ConfigError

_POSITIVE = Float(0.0, low_open=True)
_FRACTION = Float(0.0, 1.0)


class EfficientAD(Detector):
    name = "efficientad"
    description = "EfficientAD: student-teacher PDNs with hard-feature loss plus an autoencoder for logical anomalies."
    params: ClassVar[Mapping[str, Param]] = {
        # --- networks ---
        "model_size": Param(
            Choice("small", "medium"),
            paper="medium",
            fast="small",
            meaning="PDN of teacher and student: 'medium' (EfficientAD-M) or 'small' (EfficientAD-S, what the AutoVI paper ran)",
            source="paper (EfficientAD-M); fast: autovi",
        ),
        "out_channels": Param(
            Int(1),
            paper=384,
            fast=64,
            meaning="teacher feature channels C (the student has 2C)",
            source="paper §3.1; fast: autovi",
        ),
        "width": Param(
            _POSITIVE,
            paper=1.0,
            fast=0.25,
            meaning="scale of the PDNs' and the autoencoder's hidden channels (1.0: the paper's; at least 8 channels per layer)",
            source="autovi (1.0 = the paper's widths)",
        ),
        "image_size": Param(
            Int(64, multiple_of=32),
            paper=256,
            fast=64,
            meaning="square network input (pixels); the autoencoder needs a multiple of 32, the unpadded PDN at least 64",
            source="paper (256 x 256 input); fast: autovi",
        ),
        "ae_dropout": Param(
            Float(0.0, 1.0, high_open=True),
            paper=0.2,
            fast=0.2,
            meaning="dropout probability after each decoder convolution of the autoencoder",
            source="paper (autoencoder architecture)",
        ),
        # --- student and autoencoder training ---
        "steps": Param(
            Int(1),
            paper=70000,
            fast=1000,
            meaning="training steps of the student and the autoencoder",
            source="paper Algorithm 1; fast: autovi",
        ),
        "batch_size": Param(
            Int(1),
            paper=1,
            fast=1,
            meaning="training images per step (the paper trains with 1)",
            source="paper Algorithm 1",
        ),
        "lr": Param(_POSITIVE, paper=1e-4, fast=2e-3, meaning="Adam learning rate", source="paper Algorithm 1; fast: autovi"),
        "weight_decay": Param(Float(0.0), paper=1e-5, fast=1e-5, meaning="Adam weight decay", source="paper Algorithm 1"),
        "lr_drop_at": Param(
            Float(0.5, 1.0, low_open=True),
            paper=0.95,
            fast=0.95,
            meaning="share of the steps after which the learning rate drops 10x (1: never; the drop repeats at every "
            "multiple of it, hence above 0.5 for a single drop)",
            source="paper Algorithm 1",
        ),
        "hard_quantile": Param(
            _FRACTION,
            paper=0.999,
            fast=0.999,
            meaning="quantile of the squared teacher-student errors above which they count in the hard-feature loss (0: all)",
            source="paper §3.2",
        ),
        "penalty_folder": Param(
            Optional(Text("a folder of images"), none_means="no penalty loss"),
            paper=None,
            fast=None,
            meaning="folder of out-of-distribution images for the student's penalty loss",
            source="autovi (the paper uses ImageNet images, §3.2; offline: off)",
        ),
        **checkpoint_params("training step", "training checkpoints"),
        # --- anomaly map normalisation ---
        "map_normalisation": Param(
            Choice("validation", "train"),
            paper="validation",
            fast="validation",
            meaning="images whose map quantiles normalise the maps: a held-out validation share of the training "
            "images ('validation') or the whole training set ('train')",
            source="paper Algorithm 1; 'train': AutoVI paper Tab. 13",
        ),
        "validation_fraction": Param(
            Float(0.0, 1.0, low_open=True, high_open=True),
            paper=0.1,
            fast=0.1,
            meaning="share of the training images held out for the map quantiles with map_normalisation='validation' "
            "(at least 1 image, at most all but 1)",
            source="paper (MVTec AD: a random 10 % of the training images)",
        ),
        "q_a": Param(
            _FRACTION,
            paper=0.9,
            fast=0.9,
            meaning="quantile of the defect-free maps that is mapped to 0",
            source="paper Algorithm 1",
        ),
        "q_b": Param(
            _FRACTION,
            paper=0.995,
            fast=0.995,
            meaning="quantile of the defect-free maps that is mapped to 0.1 (above q_a)",
            source="paper Algorithm 1",
        ),
        # --- the teacher ---
        "backbone": Param(
            Text("a timm CNN name with stride-8 and stride-16 feature layers"),
            paper="wide_resnet101_2",
            fast="tf_efficientnet_lite0",
            meaning="pretrained CNN the teacher is distilled from (stride-8 + stride-16 layers); wide_resnet101_2 "
            "falls back to tf_efficientnet_lite0 when its weights are absent",
            source="paper §3.1 (WideResNet-101 features); fast: autovi (offline Lite0)",
        ),
        "weights": weights_param(),
        "teacher_weights": Param(
            Optional(Text("a state-dict file"), none_means="distil the teacher, or read it from the cache"),
            paper=None,
            fast=None,
            meaning="state-dict file of a ready teacher PDN of this model_size and out_channels (skips distillation)",
            source="autovi",
        ),
        "teacher_pool": Param(
            Optional(Text("a folder of images"), none_means="the cached datasets' train/good images plus the fit images"),
            paper=None,
            fast=None,
            meaning="folder of images (recursive) the teacher is distilled on",
            source="autovi (the paper distils on ImageNet, §3.1)",
        ),
        "teacher_pool_max": Param(
            Int(1),
            paper=20000,
            fast=400,
            meaning="most pool images read from disk (the fit images always count)",
            source="autovi",
        ),
        "teacher_steps": Param(
            Int(1),
            paper=60000,
            fast=200,
            meaning="distillation steps of the teacher",
            source="paper §3.1; fast: autovi",
        ),
        "teacher_batch": Param(Int(1), paper=16, fast=8, meaning="distillation batch size", source="paper §3.1; fast: autovi"),
        "teacher_lr": Param(_POSITIVE, paper=1e-4, fast=2e-3, meaning="distillation Adam learning rate", source="paper §3.1; fast: autovi"),
        "teacher_views": Param(
            Optional(Int(1), none_means="fresh augmented views every step"),
            paper=None,
            fast=192,
            meaning="size of a fixed set of augmented views whose backbone features are extracted once (cheap CPU distillation)",
            source="paper: fresh views; fast: autovi",
        ),
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=("wide_resnet101_2", "tf_efficientnet_lite0"))

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse q_a >= q_b (the normalisation would divide by zero or flip the maps) and
        checkpoint_every without checkpoint_dir (nothing would be written). File and folder paths are
        checked when they are read: a saved model must load where they no longer exist."""
        q_a, q_b = hparams["q_a"], hparams["q_b"]
        if q_a >= q_b:
            raise ConfigError(f"detector {cls.name!r}: q_a={q_a} q_b={q_b} refused: q_a must be below q_b (maps are scaled by q_b - q_a)")
        check_checkpoint_params(cls.name, hparams)

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
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

        from autovi_core.augmentation import epoch_images, is_augmented

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
        refresh = None
        if is_augmented(images):  # --augment: each epoch (a pass's worth of steps) on fresh draws

            def refresh(epoch: int) -> torch.Tensor:
                return self._unit_images(epoch_images(images, epoch))[train_idx]

        train_student_autoencoder(model, data[train_idx], self._penalty_images(), hp, self.seed, generator, images, self.device, refresh)
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

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.export import ExportPlan

        from .export import EfficientADGraph

        self.check_fitted("export")
        hp, size = self.hparams, int(self.hparams["image_size"])
        steps = [
            f"antialiased resize to {size} px rounded to 8 bits, ImageNet normalisation",
            f"teacher, student ({hp['model_size']} PDNs, {hp['out_channels']} channels) and autoencoder (weights as constants)",
            "map_ST and map_AE normalised by the saved quantiles and averaged; image score = the grid's maximum",
            "unseen border cells replicated, bilinear upsampling to the input and to the image's size",
        ]
        return ExportPlan(EfficientADGraph(self.model, size), steps=steps, substitutions=[])

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
