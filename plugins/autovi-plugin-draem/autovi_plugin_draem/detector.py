"""DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021): a discriminatively trained reconstruction embedding.

Training. Synthetic anomalies are pasted into defect-free images: a thresholded Perlin mask M
selects where an augmented texture A replaces the image, ``I_a = (1-M) I + (1-beta) M A + beta M I``.
The reconstructive sub-network learns to map ``I_a`` back to ``I`` (L2 + SSIM loss); the
discriminative sub-network sees ``cat(I_a, reconstruction)`` and segments M (focal loss). Half the
samples carry no anomaly. Inputs are in [0, 1] without ImageNet normalisation.

Inference. The anomaly map is the softmax's anomalous channel; the image score is the maximum of the
map average-pooled over a 21x21 window (at 256 px; the window scales with the input size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.errors import ConfigError
from autovi_core.progress import track

if TYPE_CHECKING:  # torch is imported where it is used, so that registering the plugin stays light
    import torch

_COMMON: dict[str, Any] = {
    "anomaly_source": "auto",
    "texture_folder": None,
    "anomaly_prob": 0.5,
    "beta_range": [0.0, 0.8],
    "optimizer": "adam",
    "lr_milestones": [0.8, 0.9],
    "lr_gamma": 0.2,
    "ssim_window": 11,
    "focal_gamma": 2.0,
    "checkpoint_every": None,
    "checkpoint_dir": None,
    "num_workers": 4,
}

CHECKPOINT_NAME = "draem_checkpoint.pt"
"""The single, rolling checkpoint file in ``checkpoint_dir`` (``epoch`` = finished epochs)."""

# Which hyperparameters do not change the trained weights (left out of the checkpoint fingerprint).
_NOT_TRAINING = ("checkpoint_every", "checkpoint_dir", "num_workers", "score_pool", "predict_batch_size")


class DRAEM(Detector):
    name = "draem"
    description = "DRAEM: reconstructive + discriminative sub-networks trained on synthetic Perlin-mask anomalies."
    profiles = {
        "paper": {
            **_COMMON,
            "image_size": 256,
            "recon_width": 128,
            "recon_depth": 5,
            "disc_width": 64,
            "disc_depth": 6,
            "epochs": 700,
            "samples_per_epoch": None,  # one pass over the training images
            "batch_size": 8,
            "lr": 1e-4,
            "rotate_prob": 0.3,
            "score_pool": 21,
            "predict_batch_size": 16,
        },
        "fast": {
            **_COMMON,
            "image_size": 64,
            "recon_width": 8,
            "recon_depth": 3,
            "disc_width": 8,
            "disc_depth": 4,
            "epochs": 25,
            "samples_per_epoch": 64,
            "batch_size": 8,
            "lr": 2e-3,
            "rotate_prob": 0.0,
            "score_pool": 5,
            "predict_batch_size": 32,
        },
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=())

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        from autovi_core.synthesis import SOURCE_KINDS

        super().__init__(profile, seed=seed, device=device, **overrides)
        if self.hparams["anomaly_source"] not in SOURCE_KINDS:
            raise ConfigError(f"draem: anomaly_source must be one of {', '.join(SOURCE_KINDS)}, got {self.hparams['anomaly_source']!r}")
        self._stop_after_epoch: int | None = None  # test hook: simulate an interrupted run
        self._build()

    # --- model --------------------------------------------------------------------------------
    def _build(self) -> None:
        import torch

        from .networks import DiscriminativeSubNetwork, ReconstructiveSubNetwork

        hp = self.hparams
        torch.manual_seed(self.seed)
        self.recon = ReconstructiveSubNetwork(hp["recon_width"], hp["recon_depth"]).to(self.device)
        self.disc = DiscriminativeSubNetwork(hp["disc_width"], hp["disc_depth"]).to(self.device)

    def _check_size(self) -> None:
        size, depth = self.hparams["image_size"], max(self.hparams["recon_depth"], self.hparams["disc_depth"])
        if size % 2 ** (depth - 1):
            raise ConfigError(f"draem: image_size {size} must be divisible by 2**(depth-1) = {2 ** (depth - 1)}")

    # --- training -----------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        import torch

        from autovi_core.synthesis import make_source
        from autovi_core.training import (
            Checkpointer,
            deterministic,
            make_loader,
            prepare_images,
            run_fingerprint,
            step_lr,
        )

        from .training import DraemTrainingSet

        hp = self.hparams
        self._check_size()
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
            pool = max(1, int(hp["score_pool"])) | 1  # odd window, stride 1, same size
            scores, maps = [], []
            step = hp["predict_batch_size"]
            for start in range(0, len(images), step):
                x = to_chw(prepare_images(images[start : start + step], hp["image_size"]), self.device)
                with autocast(self.device):
                    logits = self.disc(torch.cat([x, self.recon(x)], dim=1))
                amap = torch.softmax(logits.float(), dim=1)[:, 1:]
                pooled = F.avg_pool2d(amap, pool, stride=1, padding=pool // 2)
                scores.append(pooled.flatten(1).max(dim=1).values.cpu())
                maps.append(F.interpolate(amap, size=tuple(output_size), mode="bilinear", align_corners=False)[:, 0].cpu())
            return Prediction(scores=torch.cat(scores).double().numpy(), maps=torch.cat(maps).numpy())

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
