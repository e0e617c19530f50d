"""DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021): a discriminatively trained reconstruction embedding.

Training. Synthetic anomalies are pasted into defect-free images: a thresholded Perlin mask M
selects where an augmented texture A replaces the image, ``I_a = (1-M) I + (1-beta) M A + beta M I``.
The reconstructive sub-network learns to map ``I_a`` back to ``I`` (L2 + SSIM loss); the
discriminative sub-network sees ``cat(I_a, reconstruction)`` and segments M (focal loss). Half the
samples carry no anomaly. Inputs are in [0, 1] without ImageNet normalisation.

Inference. The anomaly map is the softmax's anomalous channel; the image score is the maximum of the
map average-pooled over a ``score_pool`` window (21x21 at 256 px in the paper profile, 5x5 at 64 px
in the fast one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.checkpoint_params import check_checkpoint_params, checkpoint_params
from autovi_core.domains import Choice, Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.progress import track

if TYPE_CHECKING:  # torch is imported where it is used, so that registering the plugin stays light
    import torch

CHECKPOINT_NAME = "draem_checkpoint.pt"
"""The single, rolling checkpoint file in ``checkpoint_dir`` (``epoch`` = finished epochs)."""

_SOURCE_KINDS = ("auto", "folder", "procedural", "train_crops")
"""autovi_core.synthesis.SOURCE_KINDS (a test checks), written out so that registering imports no scipy."""

# Which hyperparameters do not change the trained weights (left out of the checkpoint fingerprint).
_NOT_TRAINING = ("checkpoint_every", "checkpoint_dir", "num_workers", "score_pool", "predict_batch_size")


class DRAEM(Detector):
    name = "draem"
    description = "DRAEM: reconstructive + discriminative sub-networks trained on synthetic Perlin-mask anomalies."
    params: ClassVar[dict[str, Param]] = {
        "image_size": Param(
            Int(1),
            paper=256,
            fast=64,
            meaning="side the images are resized to (pixels, square): the input of both sub-networks",
            source="official code (256x256 inputs); fast: autovi",
        ),
        "recon_width": Param(
            Int(1),
            paper=128,
            fast=8,
            meaning="channels of the reconstructive sub-network's first block (block i has width * min(2**i, 8))",
            source="official code (base width 128); fast: autovi",
        ),
        "recon_depth": Param(
            Int(1),
            paper=5,
            fast=3,
            meaning="blocks of the reconstructive encoder, each after the first halving the resolution",
            source="official code (5 encoder blocks); fast: autovi",
        ),
        "disc_width": Param(
            Int(1),
            paper=64,
            fast=8,
            meaning="channels of the discriminative U-Net's first block (block i has width * min(2**i, 8))",
            source="official code (base width 64); fast: autovi",
        ),
        "disc_depth": Param(
            Int(1),
            paper=6,
            fast=4,
            meaning="blocks of the discriminative U-Net's encoder, each after the first halving the resolution",
            source="official code (6 encoder blocks); fast: autovi",
        ),
        "epochs": Param(
            Int(1),
            paper=700,
            fast=25,
            meaning="training epochs",
            source="paper §4.1; fast: autovi",
        ),
        "samples_per_epoch": Param(
            Optional(Int(1), none_means="one pass over the training images"),
            paper=None,
            fast=64,
            meaning="synthetic training samples per epoch (image i mod N, a fresh anomaly each time)",
            source="official code (one pass per epoch); fast: autovi",
        ),
        "batch_size": Param(
            Int(1),
            paper=8,
            fast=8,
            meaning="training samples per optimiser step",
            source="official code (training command of its README, --bs 8)",
        ),
        "lr": Param(
            Float(0.0, low_open=True),
            paper=1e-4,
            fast=2e-3,
            meaning="Adam learning rate of both sub-networks",
            source="paper §4.1; fast: autovi",
        ),
        "lr_milestones": Param(
            ListOf(Float(0.0, 1.0, low_open=True, high_open=True), min_len=0),
            paper=[0.8, 0.9],
            fast=[0.8, 0.9],
            meaning="fractions of the epochs after which the lr is multiplied by lr_gamma (empty: constant lr)",
            source="official code (MultiStepLR at 80 % and 90 %; paper §4.1: after epochs 400 and 600)",
        ),
        "lr_gamma": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.2,
            fast=0.2,
            meaning="factor applied to the lr at each milestone",
            source="official code (0.2; paper §4.1: 0.1)",
        ),
        "rotate_prob": Param(
            Float(0.0, 1.0),
            paper=0.3,
            fast=0.0,
            meaning="probability that a training image is rotated by a random angle in [-90, 90] degrees",
            source="official code (30 %, ±90°; paper §4.1: ±45°); fast: autovi (off)",
        ),
        "anomaly_prob": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.5,
            fast=0.5,
            meaning="probability that a training sample gets a synthetic anomaly (the others are left clean)",
            source="official code (half the samples)",
        ),
        "beta_range": Param(
            ListOf(Float(0.0, 1.0), min_len=2, max_len=2),
            paper=[0.0, 0.8],
            fast=[0.0, 0.8],
            meaning="low and high of beta ~ U(low, high); the anomaly source is blended in with opacity 1 - beta",
            source="official code (paper §3.3, Eq. 4, draws the opacity in [0.1, 1])",
        ),
        "ssim_window": Param(
            Int(1),
            paper=11,
            fast=11,
            meaning="side of the Gaussian window (sigma 1.5) of the reconstruction's SSIM loss (pixels)",
            source="official code (11; the L2 + SSIM loss is paper §3.1)",
        ),
        "focal_gamma": Param(
            Float(0.0),
            paper=2.0,
            fast=2.0,
            meaning="focusing exponent of the discriminative sub-network's focal loss (0: cross-entropy)",
            source="official code (2; the focal loss is paper §3.2)",
        ),
        "score_pool": Param(
            Int(1),
            paper=21,
            fast=5,
            meaning="side of the mean filter over the anomaly map whose maximum is the image score (pixels)",
            source="official code (21, the filter s_f of paper §3.4, Eq. 5); fast: autovi (scaled to 64 px)",
        ),
        "predict_batch_size": Param(Int(1), paper=16, fast=32, meaning="images per inference pass", source="autovi"),
        "optimizer": Param(
            Choice("adam"),
            paper="adam",
            fast="adam",
            meaning="optimiser of both sub-networks (only Adam is implemented)",
            source="official code",
        ),
        "anomaly_source": Param(
            Choice(*_SOURCE_KINDS),
            paper="auto",
            fast="auto",
            meaning="where the pasted anomaly textures come from: texture_folder, procedural textures, training-image crops",
            source="autovi (offline stand-in for the DTD textures of paper §4.1)",
        ),
        "texture_folder": Param(
            Optional(Text("a folder of texture images"), none_means="no folder: procedural textures and training crops"),
            paper=None,
            fast=None,
            meaning="folder of anomaly-source images searched recursively (e.g. DTD), for anomaly_source auto or folder",
            source="autovi (paper §4.1 uses DTD, which is not bundled)",
        ),
        **checkpoint_params("epoch", "the rolling checkpoint draem_checkpoint.pt"),
        "num_workers": Param(
            Int(0),
            paper=4,
            fast=4,
            meaning="DataLoader worker processes synthesising the anomalies on CUDA (the CPU synthesises inline)",
            source="autovi",
        ),
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=())

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._stop_after_epoch: int | None = None  # test hook: simulate an interrupted run
        self._build()

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse sizes the networks cannot process (an input the encoders' halvings do not divide, an
        SSIM window or score filter larger than the input, a 1x1 bottleneck batch-normalised over one
        sample), a beta range that is reversed or makes every anomaly invisible, and anomaly-source and
        checkpoint settings that would be ignored."""
        name, size = cls.name, hparams["image_size"]
        depth = max(hparams["recon_depth"], hparams["disc_depth"])
        step = 2 ** (depth - 1)
        if size % step:
            raise ConfigError(
                f"detector {name!r}: image_size={size} refused: not a multiple of 2**(depth-1) = {step} "
                f"(recon_depth={hparams['recon_depth']}, disc_depth={hparams['disc_depth']}: each encoder block after the first halves it)"
            )
        for key in ("ssim_window", "score_pool"):
            if hparams[key] > size:
                raise ConfigError(f"detector {name!r}: {key}={hparams[key]} refused: larger than image_size={size}")
        batch = min(hparams["batch_size"], hparams["samples_per_epoch"] or hparams["batch_size"])
        if size == step and batch == 1:
            raise ConfigError(
                f"detector {name!r}: batch_size={hparams['batch_size']}, samples_per_epoch={hparams['samples_per_epoch']} refused: "
                f"image_size={size} leaves a 1x1 bottleneck at depth {depth}, and batch norm cannot train on one value per channel"
            )
        low, high = hparams["beta_range"]
        if low > high or low == 1.0:
            why = "low above high" if low > high else "beta = 1 makes every synthetic anomaly invisible (opacity 1 - beta = 0)"
            raise ConfigError(f"detector {name!r}: beta_range={list(hparams['beta_range'])!r} refused: {why}")
        source, folder = hparams["anomaly_source"], hparams["texture_folder"]
        if source == "folder" and folder is None:
            raise ConfigError(f"detector {name!r}: anomaly_source='folder' refused: texture_folder is none; set texture_folder")
        if source in ("procedural", "train_crops") and folder is not None:
            raise ConfigError(
                f"detector {name!r}: texture_folder={folder!r} refused: anomaly_source={source!r} does not use it (use 'auto' or 'folder')"
            )
        check_checkpoint_params(name, hparams)

    # --- model --------------------------------------------------------------------------------
    def _build(self) -> None:
        import torch

        from .networks import DiscriminativeSubNetwork, ReconstructiveSubNetwork

        hp = self.hparams
        torch.manual_seed(self.seed)
        self.recon = ReconstructiveSubNetwork(hp["recon_width"], hp["recon_depth"]).to(self.device)
        self.disc = DiscriminativeSubNetwork(hp["disc_width"], hp["disc_depth"]).to(self.device)

    # --- training -----------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from autovi_core.synthesis import make_source
        from autovi_core.training import (
            Checkpointer,
            deterministic,
            make_loader,
            prepare_images,
            refresh_for_epoch,
            run_fingerprint,
            step_lr,
        )

        from .training import DraemTrainingSet

        hp = self.hparams
        data = prepare_images(images, hp["image_size"])
        rng = np.random.default_rng(self.seed)
        source = make_source(hp["anomaly_source"], hp["texture_folder"], list(data), rng)
        self.provenance["anomaly_source"] = source.describe()
        self._build()
        length = hp["samples_per_epoch"] or len(data)
        dataset = DraemTrainingSet(data, source, length, self.seed, hp["rotate_prob"], hp["anomaly_prob"], tuple(hp["beta_range"]))
        params = list(self.recon.parameters()) + list(self.disc.parameters())
        optimizer = torch.optim.Adam(params, lr=hp["lr"])
        checkpoints = Checkpointer(
            hp["checkpoint_dir"],
            run_fingerprint(hp, self.seed, data, _NOT_TRAINING),
            every=hp["checkpoint_every"],
            name=CHECKPOINT_NAME,
            on_mismatch="raise",
            step_field="epoch",
        )
        stateful = {"recon": self.recon, "disc": self.disc, "optimizer": optimizer}
        start = checkpoints.restore(stateful)
        self.resumed_from_epoch = start
        epochs = hp["epochs"]
        with deterministic(self.device):
            for epoch in track(range(start, epochs), "draem: training", total=epochs - start):
                step_lr(optimizer, hp["lr"], epoch, epochs, hp["lr_milestones"], hp["lr_gamma"])
                refresh_for_epoch(dataset, images, epoch, hp["image_size"])  # --augment: this epoch's draws
                self._train_epoch(make_loader(dataset, hp["batch_size"], self.seed, epoch, self.device, hp["num_workers"]), optimizer)
                checkpoints.maybe_save(epoch + 1, checkpoints.capture(stateful), last=epoch + 1 == epochs)
                if self._stop_after_epoch is not None and epoch + 1 >= self._stop_after_epoch:
                    break
        self.recon.eval()
        self.disc.eval()

    def _train_epoch(self, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer) -> None:
        import torch
        import torch.nn.functional as F

        from autovi_core.training import autocast, focal_loss

        from .losses import ssim

        hp = self.hparams
        self.recon.train()
        self.disc.train()
        for clean, augmented, mask in loader:
            clean, augmented, mask = clean.to(self.device), augmented.to(self.device), mask.to(self.device)
            with autocast(self.device):
                recon = self.recon(augmented)
                logits = self.disc(torch.cat([augmented, recon], dim=1))
            recon = recon.float()
            loss = (
                F.mse_loss(recon, clean)
                + (1 - ssim(recon, clean, window=hp["ssim_window"]))
                + focal_loss(logits.float(), mask, gamma=hp["focal_gamma"])
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    # --- inference ----------------------------------------------------------------------------
    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch
        import torch.nn.functional as F

        from autovi_core.training import autocast, prepare_images, to_chw

        with torch.inference_mode():
            hp = self.hparams
            self.recon.eval()
            self.disc.eval()
            pool = hp["score_pool"]
            pad = (pool // 2, (pool - 1) // 2) * 2  # zero padding keeps the size (centred for odd windows)
            scores, maps = [], []
            step = hp["predict_batch_size"]
            for start in range(0, len(images), step):
                x = to_chw(prepare_images(images[start : start + step], hp["image_size"]), self.device)
                with autocast(self.device):
                    logits = self.disc(torch.cat([x, self.recon(x)], dim=1))
                amap = torch.softmax(logits.float(), dim=1)[:, 1:]
                pooled = F.avg_pool2d(F.pad(amap, pad), pool, stride=1)
                scores.append(pooled.flatten(1).max(dim=1).values.cpu())
                maps.append(F.interpolate(amap, size=tuple(output_size), mode="bilinear", align_corners=False)[:, 0].cpu())
            return Prediction(scores=torch.cat(scores).double().numpy(), maps=torch.cat(maps).numpy())

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.export import ExportPlan

        from .export import DRAEMGraph

        self.check_fitted("export")
        hp = self.hparams
        size, pool = int(hp["image_size"]), int(hp["score_pool"])
        steps = [
            f"bilinear resize to {size} px, values in [0, 1]",
            "reconstructive and discriminative networks (weights as constants), softmax of the anomaly channel",
            f"image score: the maximum of the map's {pool}x{pool} mean; map resized bilinearly to the image's size",
        ]
        substitutions = [
            f"resize to {size} px: Pillow's 8-bit bilinear filter replaced by the antialiased bilinear filter rounded to 8 bits "
            "(one grey level apart at some pixels; images already at that size are not resampled)"
        ]
        return ExportPlan(DRAEMGraph(self.recon, self.disc, size, pool), steps=steps, substitutions=substitutions)

    # --- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        from autovi_core.training import module_state_to_numpy

        return {**module_state_to_numpy("recon", self.recon), **module_state_to_numpy("disc", self.disc)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        from autovi_core.training import module_state_from_numpy

        module_state_from_numpy("recon", self.recon, state)
        module_state_from_numpy("disc", self.disc, state)
        self.recon.to(self.device).eval()
        self.disc.to(self.device).eval()
