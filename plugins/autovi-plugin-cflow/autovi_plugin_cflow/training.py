"""Training the per-layer flows on feature fibres, and evaluating their log-likelihoods.

The encoder is frozen and CFlow-AD uses no augmentation, so the features of the training images are
extracted once. Each (meta-epoch, sub-epoch) visits every layer; the layer's fibres (one per image
and position) are shuffled with a seeded generator and the flow is stepped once per ``fibre_batch``
fibres. One Adam optimiser over all flows; the learning rate warms up linearly for
``warmup_epochs`` meta-epochs from lr / 10 and then follows a cosine decay down to lr * 1e-3.
Loss: mean -log p / C (``nll``), or the official code's mean -logsigmoid(log p / C) (``logsigmoid``).
Every ``checkpoint_every`` meta-epochs a step-numbered checkpoint (``step`` = meta-epochs done) goes
to ``checkpoint_dir``; training resumes from the newest one of the same run there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from autovi_core.progress import track
from autovi_core.training import Checkpointer, autocast, run_fingerprint

from .flow import positional_encoding_2d

NOT_TRAINING = ("checkpoint_every", "checkpoint_dir")
"""Hyperparameters that do not change the trained flows (left out of the checkpoint fingerprint)."""


def fibres(features: torch.Tensor, condition_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N*h*w, C) feature vectors and their (N*h*w, P) positional conditions, image-major order."""
    n, c, h, w = features.shape
    pe = positional_encoding_2d(condition_dims, h, w).reshape(condition_dims, h * w).T
    return features.permute(0, 2, 3, 1).reshape(n * h * w, c), pe.repeat(n, 1)


def learning_rate(hp: dict[str, Any], epoch: float) -> float:
    """Warm-up then cosine decay, as a function of the (fractional) meta-epoch."""
    lr, total, warm = float(hp["lr"]), int(hp["meta_epochs"]), int(hp["warmup_epochs"])
    floor = lr * 1e-3
    cosine = floor + (lr - floor) * (1 + math.cos(math.pi * epoch / total)) / 2
    if epoch < warm:
        return lr / 10 + (cosine - lr / 10) * epoch / warm
    return cosine


def flow_loss(log_p: torch.Tensor, channels: int, kind: str) -> torch.Tensor:
    per_dim = log_p / channels
    if kind == "logsigmoid":
        return -F.logsigmoid(per_dim).mean()
    if kind == "nll":
        return -per_dim.mean()
    raise ValueError(f"cflow: loss must be 'nll' or 'logsigmoid', got {kind!r}")


def train_flows(
    flows: torch.nn.ModuleList,
    features: Sequence[torch.Tensor],
    hp: dict[str, Any],
    seed: int,
    images: Sequence[np.ndarray],
    device: str,
    features_for_epoch: Callable[[int], Sequence[torch.Tensor]] | None = None,
) -> None:
    """Maximise the likelihood of every layer's training fibres under its flow.

    ``features_for_epoch(epoch)``, when given (``--augment``), gives each meta-epoch's features of
    freshly augmented images instead of ``features``.
    """
    data = [fibres(f, int(hp["condition_dims"])) for f in features]
    optimiser = torch.optim.Adam(flows.parameters(), lr=float(hp["lr"]))
    generator = torch.Generator().manual_seed(seed)
    checkpoints = Checkpointer(hp["checkpoint_dir"], run_fingerprint(hp, seed, images, NOT_TRAINING), every=hp["checkpoint_every"])
    stateful = {"flows": flows, "optimiser": optimiser, "generator": generator}
    start = checkpoints.restore(stateful)
    flows.train()
    meta, sub, batch = int(hp["meta_epochs"]), int(hp["sub_epochs"]), int(hp["fibre_batch"])
    for epoch in track(range(start, meta), "cflow: training the flows", total=meta - start):
        if features_for_epoch is not None and epoch > 0:
            data = [fibres(f, int(hp["condition_dims"])) for f in features_for_epoch(epoch)]
        for sub_epoch in range(sub):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(hp, epoch + sub_epoch / sub)
            for flow, (x, c) in zip(flows, data):
                for index in torch.randperm(len(x), generator=generator).split(batch):
                    with autocast(device):
                        log_p = flow.log_likelihood(x[index].to(device), c[index].to(device))
                    loss = flow_loss(log_p.float(), flow.channels, hp["loss"])
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
        if checkpoints.due(epoch + 1):
            checkpoints.save(epoch + 1, checkpoints.capture(stateful))


@torch.inference_mode()
def layer_log_likelihoods(
    flows: torch.nn.ModuleList, features: Sequence[torch.Tensor], condition_dims: int, device: str, chunk: int = 8192
) -> list[torch.Tensor]:
    """Per layer, (N, h, w) float64 log p / C of every fibre (CPU)."""
    out = []
    for flow, f in zip(flows, features):
        n, c, h, w = f.shape
        x, cond = fibres(f, condition_dims)
        values = [flow.log_likelihood(xs.to(device), cs.to(device)).double().cpu() for xs, cs in zip(x.split(chunk), cond.split(chunk))]
        out.append((torch.cat(values) / c).reshape(n, h, w))
    return out
