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
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.checkpoint_params import check_checkpoint_params, checkpoint_params
from autovi_core.domains import Float, Int, ListOf, Optional, Param, Text
from autovi_core.errors import ConfigError
from autovi_core.progress import track

if TYPE_CHECKING:  # torch is imported where it is used, so that registering the plugin stays light
    import torch

_NOT_TRAINING = ("checkpoint_every", "checkpoint_dir", "num_workers", "score_pool", "predict_batch_size")
MODULES = ("vq", "restrict_hi", "restrict_lo", "object_decoder", "adm", "upsampler")


class DSR(Detector):
    name = "dsr"
    description = "DSR: discrete VQ feature space, feature-space anomaly generation, subspace restriction, upsampling."
    params: ClassVar[Mapping[str, Param]] = {
        # input
        "image_size": Param(
            Int(16, multiple_of=8),
            paper=256,
            fast=64,
            source="official code",
            meaning="side of the square input (pixels); the VQ model's strides are 4 (hi codes) and 8 (lo codes)",
        ),
        # stage 1: the general discrete model (VQ-VAE)
        "stage1_weights": Param(
            Optional(
                Text("a path to a VQ state dict (.safetensors or torch.save)"), none_means="train stage 1 on the training images, cached"
            ),
            paper=None,
            fast=None,
            source="autovi (the paper's model is trained on ImageNet; nothing is downloaded)",
            meaning="file with the general VQ model's weights (see 'Stage-1 weights format')",
        ),
        "vq_hidden": Param(Int(2), paper=128, fast=32, meaning="channels of the VQ encoders and decoders", source="official code"),
        "vq_dim": Param(Int(1), paper=128, fast=16, meaning="dimension of a codebook vector (both levels)", source="official code"),
        "vq_codes": Param(Int(2), paper=4096, fast=256, meaning="codes per codebook (K_hi and K_lo each)", source="official code"),
        "vq_res_hidden": Param(
            Int(1), paper=64, fast=16, meaning="hidden channels of the VQ model's residual blocks", source="official code"
        ),
        "vq_res_layers": Param(Int(0), paper=2, fast=1, meaning="residual blocks per VQ encoder and decoder stack", source="official code"),
        "vq_commitment": Param(Float(0.0), paper=0.25, fast=0.25, meaning="weight of the VQ commitment loss", source="official code"),
        "vq_decay": Param(
            Float(0.0, 1.0, high_open=True),
            paper=0.99,
            fast=0.9,
            source="official code",
            meaning="EMA decay of the codebook updates (1 would freeze the codebooks)",
        ),
        "stage1_epochs": Param(
            Int(1), paper=100, fast=40, meaning="epochs of the local stage-1 training", source="autovi (offline fallback)"
        ),
        "stage1_samples_per_epoch": Param(
            Optional(Int(1), none_means="one pass over the training images"),
            paper=None,
            fast=64,
            meaning="samples per stage-1 epoch",
            source="autovi (offline fallback)",
        ),
        "stage1_lr": Param(
            Float(0.0, low_open=True), paper=2e-4, fast=2e-3, meaning="Adam learning rate of stage 1", source="autovi (offline fallback)"
        ),
        "stage1_texture_prob": Param(
            Float(0.0, 1.0),
            paper=0.5,
            fast=0.5,
            source="autovi (methods.md §5 offline fallback: heavy augmentation)",
            meaning="probability that a stage-1 sample gets a procedural texture in a Perlin mask",
        ),
        # stage 2: object-specific modules, feature-space anomalies
        "anomaly_prob": Param(
            Float(0.0, 1.0, low_open=True),
            paper=0.5,
            fast=0.5,
            source="official code",
            meaning="probability that a stage-2/3 training sample gets an anomaly (0 would teach 'never anomalous')",
        ),
        "anomaly_levels": Param(
            ListOf(Float(0.0), 3, 3),
            paper=[1 / 3, 1 / 3, 1 / 3],
            fast=[1.0, 0.0, 0.0],
            source="autovi: uniform (official code: hi 1/4, lo 1/4, both 1/2)",
            meaning="relative weights of corrupting the hi codes, the lo codes or both (normalised)",
        ),
        "min_code_rank": Param(
            Float(0.0, 1.0, high_open=True),
            paper=0.05,
            fast=0.05,
            source="official code",
            meaning="smallest distance rank of a replacement code, as a fraction of K",
        ),
        "restrict_width": Param(
            Int(1), paper=128, fast=16, meaning="base channels of the subspace-restriction U-Nets", source="official code"
        ),
        "restrict_depth": Param(Int(1), paper=3, fast=2, meaning="levels of the subspace-restriction U-Nets", source="official code"),
        "object_hidden": Param(Int(2), paper=128, fast=32, meaning="channels of the object-specific image decoder", source="official code"),
        "object_res_hidden": Param(Int(1), paper=64, fast=16, meaning="hidden channels of its residual blocks", source="official code"),
        "object_res_layers": Param(
            Int(0), paper=2, fast=1, meaning="residual blocks of the object-specific decoder", source="official code"
        ),
        "adm_width": Param(Int(1), paper=64, fast=8, meaning="base channels of the anomaly-detection U-Net", source="official code"),
        "adm_depth": Param(
            Int(1), paper=5, fast=3, meaning="levels of the anomaly-detection U-Net", source="autovi (official code: 4 levels)"
        ),
        "stage2_epochs": Param(Int(1), paper=100, fast=30, meaning="epochs of stage 2", source="official code"),
        "stage2_samples_per_epoch": Param(
            Optional(Int(1), none_means="one pass over the training images"),
            paper=None,
            fast=64,
            meaning="samples per stage-2 epoch",
            source="autovi (official code: 8000)",
        ),
        "stage2_lr": Param(
            Float(0.0, low_open=True), paper=2e-4, fast=2e-3, meaning="Adam learning rate of stage 2", source="official code"
        ),
        "stage2_milestones": Param(
            ListOf(Float(0.0, 1.0, low_open=True, high_open=True), min_len=0),
            paper=[0.8],
            fast=[0.8],
            source="official code",
            meaning="fractions of stage2_epochs at which the lr is multiplied by stage2_gamma (empty: constant lr)",
        ),
        "stage2_gamma": Param(
            Float(0.0, 1.0, low_open=True), paper=0.1, fast=0.1, meaning="lr factor at each stage-2 milestone", source="official code"
        ),
        "focal_gamma": Param(
            Float(0.0), paper=2.0, fast=2.0, meaning="focal-loss exponent (0: cross-entropy), stages 2 and 3", source="official code"
        ),
        "image_loss_weight": Param(
            Float(0.0, low_open=True),
            paper=10.0,
            fast=10.0,
            source="official code",
            meaning="weight of the object decoder's image MSE (its only training signal)",
        ),
        # stage 3: upsampling module
        "up_width": Param(Int(1), paper=64, fast=8, meaning="base channels of the upsampling U-Net", source="official code"),
        "up_depth": Param(Int(1), paper=4, fast=2, meaning="levels of the upsampling U-Net", source="official code"),
        "stage3_epochs": Param(Int(1), paper=50, fast=20, meaning="epochs of stage 3 (constant lr)", source="official code"),
        "stage3_samples_per_epoch": Param(
            Optional(Int(1), none_means="one pass over the training images"),
            paper=8000,
            fast=64,
            meaning="samples per stage-3 epoch",
            source="official code",
        ),
        "stage3_lr": Param(
            Float(0.0, low_open=True), paper=2e-4, fast=2e-3, meaning="Adam learning rate of stage 3", source="official code"
        ),
        # all stages
        "batch_size": Param(Int(1), paper=8, fast=8, meaning="training batch size (all stages)", source="official code"),
        # inference
        "score_pool": Param(
            Int(1, odd=True),
            paper=21,
            fast=5,
            source="official code",
            meaning="side of the average pooling of the coarse mask before its max (the image score; pixels)",
        ),
        "predict_batch_size": Param(Int(1), paper=16, fast=32, meaning="images per inference batch", source="autovi"),
        # running
        **checkpoint_params("epoch", "the stage checkpoints dsr_stage2.pt and dsr_stage3.pt"),
        "num_workers": Param(
            Int(0), paper=4, fast=4, meaning="DataLoader worker processes (CUDA only; the CPU loads inline)", source="autovi"
        ),
    }
    capabilities = Capabilities(needs_gpu=True, supervised=False, pretrained_assets=())

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self.resumed_from_epoch: dict[str, int] = {}
        self._build()

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse what the networks cannot run or the training would silently ignore (torch-free)."""
        levels = hparams["anomaly_levels"]
        if not 0 < sum(levels) < float("inf"):
            raise ConfigError(
                f"detector {cls.name!r}: anomaly_levels={levels!r} refused: the weights (hi, lo, both) must have a positive, finite sum"
            )
        size = hparams["image_size"]
        # every U-Net halves its input depth - 1 times; its coarsest level needs 2 x 2 cells (batch norm
        # cannot train on one value per channel, and max pooling a 1 x 1 map fails)
        for key, grid, what in (
            ("restrict_depth", size // 8, "lo code grid"),
            ("adm_depth", size, "image"),
            ("up_depth", size, "image"),
        ):
            depth = hparams[key]
            if grid >> (depth - 1) < 2:
                raise ConfigError(
                    f"detector {cls.name!r}: {key}={depth} refused with image_size={size}: the {what} ({grid} x {grid}) "
                    f"would be {grid >> (depth - 1)} x {grid >> (depth - 1)} at the U-Net's deepest level; needs 2 x 2"
                )
        if hparams["score_pool"] > size:
            raise ConfigError(
                f"detector {cls.name!r}: score_pool={hparams['score_pool']} refused: larger than the coarse mask (image_size={size})"
            )
        check_checkpoint_params(cls.name, hparams)

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
        self._train_stage("stage2", ("restrict_hi", "restrict_lo", "object_decoder", "adm"), data, key, images)
        self._train_stage("stage3", ("upsampler",), data, key, images)
        self._set_mode()

    def _train_stage(self, stage: str, trainable: Sequence[str], data: np.ndarray, key: str, images: Sequence[np.ndarray]) -> None:
        """Train ``trainable`` on ``data`` (``images`` prepared); with ``--augment``, each epoch on fresh draws of ``images``."""
        import torch

        from autovi_core.training import (
            Checkpointer,
            deterministic,
            make_loader,
            refresh_for_epoch,
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
                refresh_for_epoch(dataset, images, epoch, hp["image_size"])
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
            pool = hp["score_pool"]  # odd (its domain): the window is centred on each cell
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

    def export_module(self) -> Any:
        """The whole of :meth:`infer` as one graph for ``autovi export`` (:mod:`.export`)."""
        from autovi_core.export import ExportPlan

        from .export import DSRGraph

        self.check_fitted("export")
        hp = self.hparams
        size, pool = int(hp["image_size"]), int(hp["score_pool"])
        steps = [
            f"bilinear resize to {size} px, values in [0, 1]",
            "VQ encoder and nearest codes (codebooks as constants), subspace restriction, object and general decoders",
            f"anomaly detection module softmax; image score: the maximum of its {pool}x{pool} mean",
            "upsampling module softmax on the image and the coarse mask; map resized bilinearly to the image's size",
        ]
        substitutions = [
            f"resize to {size} px: Pillow's 8-bit bilinear filter replaced by the antialiased bilinear filter rounded to 8 bits "
            "(one grey level apart at some pixels; images already at that size are not resampled)"
        ]
        return ExportPlan(DSRGraph({name: getattr(self, name) for name in MODULES}, size, pool), steps=steps, substitutions=substitutions)

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
