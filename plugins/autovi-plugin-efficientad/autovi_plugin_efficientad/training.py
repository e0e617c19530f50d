"""Training the student and the autoencoder (paper Sec. 3.2-3.3, Algorithm 1).

Per step (batch 1 in the paper), on a random training image I:

- L_hard: hard-feature loss between the normalised teacher T(I) and the student's first half;
- penalty (optional): mean squared student output on a random image of ``penalty_folder``;
- on I' = I with one random brightness, contrast or saturation change of up to 20 %:
  L_AE = mean (T(I') - A(I'))^2 and L_STAE = mean (A(I') - S_ae(I'))^2.

The sum is minimised with Adam (lr 1e-4, weight decay 1e-5), the learning rate drops 10x at 95 %
of the steps. Checkpoints are written every ``checkpoint_every`` steps to ``checkpoint_dir`` and
training resumes from the latest matching one there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from autovi_core.progress import track
from autovi_core.training import Checkpointer, GlobalTorchRNG, autocast, mixed_precision_dtype, run_fingerprint

from .inference import FusedEfficientAD
from .losses import autoencoder_losses, hard_feature_loss, penalty_loss
from .teacher import colour_jitter, grey

NOT_TRAINING = ("checkpoint_every", "checkpoint_dir")
"""Hyperparameters that do not change the trained networks (left out of the checkpoint fingerprint)."""


def jitter_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply one random colour change per image (the autoencoder's augmentation)."""
    return torch.stack([colour_jitter(image, generator, 0.2) for image in images])


def train_student_autoencoder(
    model: FusedEfficientAD,
    images: torch.Tensor,
    penalty: torch.Tensor | None,
    hp: dict[str, Any],
    seed: int,
    generator: torch.Generator,
    raw_images: Sequence[np.ndarray],
    device: str,
    refresh: Callable[[int], torch.Tensor] | None = None,
) -> None:
    """Optimise the student and the autoencoder of ``model`` on ``images`` ((N, 3, S, S) in [0, 1]).

    ``refresh(epoch)``, when given (``--augment``), returns the images of an epoch: one epoch is
    ``ceil(N / batch_size)`` steps, and the images are swapped at each epoch's first step.
    """
    steps, batch = int(hp["steps"]), int(hp["batch_size"])
    epoch_steps, current_epoch = -(-len(images) // batch), 0
    parameters = [*model.student.parameters(), *model.autoencoder.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, int(float(hp["lr_drop_at"]) * steps)), gamma=0.1)
    checkpoints = Checkpointer(hp["checkpoint_dir"], run_fingerprint(hp, seed, raw_images, NOT_TRAINING), every=hp["checkpoint_every"])
    stateful = {
        "student": model.student,
        "autoencoder": model.autoencoder,
        "optimiser": optimiser,
        "scheduler": scheduler,
        "generator": generator,
        "torch_rng": GlobalTorchRNG,
    }
    start = checkpoints.restore(stateful)
    dtype = mixed_precision_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    model.train()
    for step in track(range(start, steps), "efficientad: training student and autoencoder", total=steps - start):
        if refresh is not None and step // epoch_steps != current_epoch:
            current_epoch = step // epoch_steps
            images = refresh(current_epoch)
        index = torch.randint(0, len(images), (batch,), generator=generator)
        image = images[index]
        augmented = jitter_batch(image, generator)
        if penalty is not None:
            extra = penalty[torch.randint(0, len(penalty), (1,), generator=generator)]
            if torch.rand((), generator=generator) < 0.3:
                extra = grey(extra[0]).expand(3, -1, -1)[None]
        with autocast(device, dtype):
            x = model.normalise_input(image)
            teacher = model.teacher_features(x)
            student = model.student(x).float()
            loss = hard_feature_loss(teacher, student[:, : model.channels], float(hp["hard_quantile"]))
            if penalty is not None:
                loss = loss + penalty_loss(model.student(model.normalise_input(extra)).float()[:, : model.channels])
            x_aug = model.normalise_input(augmented)
            l_ae, l_stae = autoencoder_losses(
                model.teacher_features(x_aug), model.autoencoder(x_aug).float(), model.student(x_aug).float()[:, model.channels :]
            )
            loss = loss + l_ae + l_stae
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        scheduler.step()
        if checkpoints.due(step + 1):
            checkpoints.save(step + 1, checkpoints.capture(stateful))
