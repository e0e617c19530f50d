"""DSR (Zavrtanik, Kristan, Skočaj, ECCV 2022): a dual subspace re-projection network.

Stage 1, the general discrete model: a two-level VQ-VAE (hi = stride 4, lo = stride 8) quantises an
image into codebook vectors (:mod:`.stage1`).

Stage 2, object-specific training on the frozen general model. Anomalies are generated *in the
quantised feature space*: inside a Perlin mask, codes are swapped for distant codebook entries (at
the hi level, the lo level or both). Two subspace-restriction networks project the anomalous
features back to normal ones (MSE to the clean quantised features), the object-specific decoder
turns the restored features into the anomaly-free image (10 x MSE), the frozen general decoder turns
the anomalous features into an image that keeps the anomaly, and the anomaly detection module, a
U-Net over both images, segments the anomaly (focal loss; target = the mask pooled to the grid).

Stage 3, the upsampling module: a U-Net over the image and the coarse mask, trained with image-space
anomalies (solid-colour Perlin patches), refines the mask to full resolution.

Inference: the pixel map is the upsampling module's output; the image score is the maximum of the
average-pooled *coarse* mask.
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
    "stage1_weights": None,
    "vq_commitment": 0.25,
    "stage1_texture_prob": 0.5,
    "anomaly_prob": 0.5,
    "min_code_rank": 0.05,
    "focal_gamma": 2.0,
    "image_loss_weight": 10.0,
    "stage2_milestones": [0.8],
    "stage2_gamma": 0.1,
    "batch_size": 8,
    "checkpoint_every": None,
    "checkpoint_dir": None,
    "num_workers": 4,
}
_NOT_TRAINING = ("checkpoint_every", "checkpoint_dir", "num_workers", "score_pool", "predict_batch_size")
MODULES = ("vq", "restrict_hi", "restrict_lo", "object_decoder", "adm", "upsampler")


class DSR(Detector):
    name = "dsr"
    description = "DSR: discrete VQ feature space, feature-space anomaly generation, subspace restriction, upsampling."
    profiles = {
        "paper": {
            **_COMMON,
            "image_size": 256,
            "vq_hidden": 128, "vq_dim": 128, "vq_codes": 4096, "vq_res_hidden": 64, "vq_res_layers": 2,
            "vq_decay": 0.99, "anomaly_levels": [1 / 3, 1 / 3, 1 / 3],
            "stage1_epochs": 100, "stage1_samples_per_epoch": None, "stage1_lr": 2e-4,
            "restrict_width": 128, "restrict_depth": 3,
            "object_hidden": 128, "object_res_hidden": 64, "object_res_layers": 2,
            "adm_width": 64, "adm_depth": 5, "up_width": 64, "up_depth": 4,
            "stage2_epochs": 100, "stage2_samples_per_epoch": None, "stage2_lr": 2e-4,
            "stage3_epochs": 50, "stage3_samples_per_epoch": 8000, "stage3_lr": 2e-4,
            "score_pool": 21, "predict_batch_size": 16,
        },
        "fast": {
            **_COMMON,
            "image_size": 64,
            "vq_hidden": 32, "vq_dim": 16, "vq_codes": 256, "vq_res_hidden": 16, "vq_res_layers": 1,
            "vq_decay": 0.9, "anomaly_levels": [1.0, 0.0, 0.0],
            "stage1_epochs": 40, "stage1_samples_per_epoch": 64, "stage1_lr": 2e-3,
            "restrict_width": 16, "restrict_depth": 2,
            "object_hidden": 32, "object_res_hidden": 16, "object_res_layers": 1,
            "adm_width": 8, "adm_depth": 3, "up_width": 8, "up_depth": 2,
            "stage2_epochs": 30, "stage2_samples_per_epoch": 64, "stage2_lr": 2e-3,
            "stage3_epochs": 20, "stage3_samples_per_epoch": 64, "stage3_lr": 2e-3,
            "score_pool": 5, "predict_batch_size": 32,
        },
    }  # fmt: skip
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=())

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        if self.hparams["image_size"] % 8:
            raise ConfigError(f"dsr: image_size must be a multiple of 8, got {self.hparams['image_size']}")
        levels = self.hparams["anomaly_levels"]
        if len(levels) != 3 or min(levels) < 0 or sum(levels) <= 0:
            raise ConfigError(f"dsr: anomaly_levels must be 3 non-negative weights (hi, lo, both), got {levels!r}")
        self.resumed_from_epoch: dict[str, int] = {}
        self._build()

    def _build(self) -> None:
        import torch

        from .networks import SubspaceRestriction, UNet
        from .stage1 import build_vq
        from .vq import ImageDecoder

        hp = self.hparams
        torch.manual_seed(self.seed)
        self.vq = build_vq(hp)
        self.restrict_hi = SubspaceRestriction(hp["vq_dim"], hp["restrict_width"], hp["restrict_depth"])
        self.restrict_lo = SubspaceRestriction(hp["vq_dim"], hp["restrict_width"], hp["restrict_depth"])
        self.object_decoder = ImageDecoder(hp["vq_dim"], hp["object_hidden"], hp["object_res_hidden"], hp["object_res_layers"])
        self.adm = UNet(6, 2, hp["adm_width"], hp["adm_depth"])
        self.upsampler = UNet(5, 2, hp["up_width"], hp["up_depth"])
        for name in MODULES:
            getattr(self, name).to(self.device)

    def _set_mode(self, train: Sequence[str] = ()) -> None:
        for name in MODULES:
            getattr(self, name).train(name in train)

    # --- training -----------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        from autovi_core.training import prepare_images, run_fingerprint

        from .stage1 import stage1_model

        hp = self.hparams
        if len(images) == 0:
            raise ConfigError("dsr: fit needs at least one training image")
        data = prepare_images(images, hp["image_size"])
        self._build()
        self.vq, self.provenance["stage1_source"] = stage1_model(hp, data, self.seed, self.device)
        key = run_fingerprint(hp, self.seed, data, _NOT_TRAINING)
        self._train_stage("stage2", ("restrict_hi", "restrict_lo", "object_decoder", "adm"), data, key)
        self._train_stage("stage3", ("upsampler",), data, key)
        self._set_mode()

    def _train_stage(self, stage: str, trainable: Sequence[str], data: np.ndarray, key: str) -> None:
        import torch

        from autovi_core.training import (
            Checkpointer,
            deterministic,
            make_loader,
            step_lr,
        )

        from .data import Stage2Set, Stage3Set
        from .networks import sorted_neighbours

        hp = self.hparams
        torch.manual_seed(self.seed + (2 if stage == "stage2" else 3))
        length = hp[f"{stage}_samples_per_epoch"] or len(data)
        if stage == "stage2":
            dataset = Stage2Set(data, length, self.seed, hp["anomaly_prob"], hp["anomaly_levels"])
        else:
            dataset = Stage3Set(data, length, self.seed, hp["anomaly_prob"])
        params = [p for name in trainable for p in getattr(self, name).parameters()]
        optimizer = torch.optim.Adam(params, lr=hp[f"{stage}_lr"])
        checkpoints = Checkpointer(
            hp["checkpoint_dir"], key, every=hp["checkpoint_every"], name=f"dsr_{stage}.pt", on_mismatch="raise", step_field="epoch"
        )
        stateful = {**{name: getattr(self, name) for name in trainable}, "optimizer": optimizer}
        start = checkpoints.restore(stateful)
        self.resumed_from_epoch[stage] = start
        epochs = hp[f"{stage}_epochs"]
        if stage == "stage2":
            self._neighbours = (sorted_neighbours(self.vq.vq_hi.embedding), sorted_neighbours(self.vq.vq_lo.embedding))
        with deterministic(self.device):
            for epoch in track(range(start, epochs), f"dsr: {stage}", total=epochs - start):
                if stage == "stage2":  # stage 3 keeps a constant lr, as in the official code
                    step_lr(optimizer, hp["stage2_lr"], epoch, epochs, hp["stage2_milestones"], hp["stage2_gamma"])
                self._set_mode(trainable)
                generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
                for batch in make_loader(dataset, hp["batch_size"], self.seed, epoch, self.device, hp["num_workers"]):
                    loss = self._stage2_loss(batch, generator) if stage == "stage2" else self._stage3_loss(batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                checkpoints.maybe_save(epoch + 1, checkpoints.capture(stateful), last=epoch + 1 == epochs)

    def _stage2_loss(self, batch: Sequence[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        from autovi_core.training import autocast, focal_loss

        from .networks import replace_codes, standardise

        hp = self.hparams
        x, mask, level, strength = (t.to(self.device) for t in batch)
        vq = self.vq
        with torch.no_grad():
            q_hi, q_lo, idx_hi, idx_lo, _ = vq.encode(x)
            use_hi, use_lo = (level != 1)[:, None, None], (level != 0)[:, None, None]
            m_hi = (F.max_pool2d(mask, 4)[:, 0] > 0) & use_hi
            m_lo = (F.max_pool2d(mask, 8)[:, 0] > 0) & use_lo
            a_hi = vq.vq_hi.lookup(replace_codes(idx_hi, m_hi, self._neighbours[0], strength, generator, hp["min_code_rank"]))
            a_lo = vq.vq_lo.lookup(replace_codes(idx_lo, m_lo, self._neighbours[1], strength, generator, hp["min_code_rank"]))
            target = torch.maximum(
                F.interpolate(m_hi[:, None].float(), scale_factor=4, mode="nearest"),
                F.interpolate(m_lo[:, None].float(), scale_factor=8, mode="nearest"),
            )
        with autocast(self.device):
            f_hi, r_hi = self.restrict_hi(a_hi, vq.vq_hi)
            f_lo, r_lo = self.restrict_lo(a_lo, vq.vq_lo)
            recon_object = self.object_decoder(r_hi, r_lo)
            with torch.no_grad():
                recon_general = vq.decode(a_hi, a_lo)
            logits = self.adm(torch.cat([recon_object.detach(), recon_general], dim=1))
        return (  # feature MSE in units of each codebook's spread (see SubspaceRestriction)
            F.mse_loss(standardise(f_hi, vq.vq_hi), standardise(q_hi, vq.vq_hi))
            + F.mse_loss(standardise(f_lo, vq.vq_lo), standardise(q_lo, vq.vq_lo))
            + hp["image_loss_weight"] * F.mse_loss(recon_object.float(), x)
            + focal_loss(logits, target, hp["focal_gamma"])
        )

    def _stage3_loss(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        from autovi_core.training import autocast, focal_loss

        x, mask = (t.to(self.device) for t in batch)
        with torch.no_grad():
            coarse = self._coarse(x)
        with autocast(self.device):
            logits = self.upsampler(torch.cat([x, coarse], dim=1))
        return focal_loss(logits, mask, self.hparams["focal_gamma"])

    def _coarse(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the anomaly detection module, ``(N, 2, S, S)``: the coarse mask."""
        import torch

        from autovi_core.training import autocast

        with autocast(self.device):
            q_hi, q_lo, _, _, _ = self.vq.encode(x)
            _, r_hi = self.restrict_hi(q_hi, self.vq.vq_hi)
            _, r_lo = self.restrict_lo(q_lo, self.vq.vq_lo)
            logits = self.adm(torch.cat([self.object_decoder(r_hi, r_lo), self.vq.decode(q_hi, q_lo)], dim=1))
        return torch.softmax(logits.float(), dim=1)

    # --- inference ----------------------------------------------------------------------------
    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        import torch
        import torch.nn.functional as F

        from autovi_core.training import autocast, prepare_images, to_chw

        with torch.inference_mode():
            hp = self.hparams
            self._set_mode()
            pool = max(1, int(hp["score_pool"])) | 1
            scores, maps = [], []
            for start in range(0, len(images), hp["predict_batch_size"]):
                x = to_chw(prepare_images(images[start : start + hp["predict_batch_size"]], hp["image_size"]), self.device)
                coarse = self._coarse(x)
                pooled = F.avg_pool2d(coarse[:, 1:], pool, stride=1, padding=pool // 2)
                scores.append(pooled.flatten(1).max(dim=1).values.cpu())
                with autocast(self.device):
                    fine = torch.softmax(self.upsampler(torch.cat([x, coarse], dim=1)).float(), dim=1)[:, 1:]
                maps.append(F.interpolate(fine, size=tuple(output_size), mode="bilinear", align_corners=False)[:, 0].cpu())
            return Prediction(scores=torch.cat(scores).double().numpy(), maps=torch.cat(maps).numpy())

    # --- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        from autovi_core.training import module_state_to_numpy

        return {k: v for name in MODULES for k, v in module_state_to_numpy(name, getattr(self, name)).items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        from autovi_core.training import module_state_from_numpy

        for name in MODULES:
            module_state_from_numpy(name, getattr(self, name), state)
            getattr(self, name).to(self.device)
        self._set_mode()
