"""Training plumbing of DSR's three stages: image preparation, the DataLoader, the step LR schedule
and the focal loss (checkpoints, mixed precision and determinism come from ``autovi_core.training``)."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset





def prepare_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(N, size, size, 3)`` float32 in [0, 1] (bilinear resize, no ImageNet normalisation)."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(pil, dtype=np.float32) / 255.0
    return out


def to_chw(batch: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """``(N, H, W, 3)`` numpy -> ``(N, 3, H, W)`` float tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)


def _seed_worker(worker_id: int, base_seed: int) -> None:
    seed = (base_seed * 1000 + worker_id) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, device: str, workers: int) -> DataLoader:
    """A shuffling loader for one epoch; its order depends only on ``(seed, epoch)``.

    On CUDA, ``workers`` processes synthesise the batches (pinned memory); on the CPU they run inline.
    """
    if hasattr(dataset, "epoch"):
        dataset.epoch = epoch
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n_workers = workers if str(device).startswith("cuda") else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        generator=generator,
        num_workers=n_workers,
        pin_memory=n_workers > 0,
        worker_init_fn=functools.partial(_seed_worker, base_seed=seed) if n_workers else None,
    )


def step_lr(optimizer: torch.optim.Optimizer, base_lr: float, epoch: int, epochs: int,
            milestones: Sequence[float] = (0.8, 0.9), gamma: float = 0.2) -> float:
    """Multiply the lr by ``gamma`` at each milestone (a fraction of ``epochs``)."""
    passed = sum(epoch >= int(m * epochs) for m in milestones)
    lr = base_lr * gamma**passed
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """Mean focal loss ``-(1 - p_t)^gamma log p_t`` of two-class logits ``(N, 2, H, W)`` against a
    mask in {0, 1} of shape ``(N, 1, H, W)`` or ``(N, H, W)``."""
    target = target.reshape(logits.shape[0], *logits.shape[2:]).to(torch.float32)
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = target * log_p[:, 1] + (1 - target) * log_p[:, 0]
    pt = log_pt.exp().clamp(eps, 1.0)
    return (-((1 - pt) ** gamma) * log_pt).mean()
