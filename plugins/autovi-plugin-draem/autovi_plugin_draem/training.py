"""Training plumbing: image preparation, the synthesising Dataset and its DataLoader, the step LR
schedule, mixed precision on CUDA, CPU determinism and resumable checkpoints (weights_only)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import rotate as nd_rotate
from torch.utils.data import DataLoader, Dataset

from autovi_core.errors import ConfigError
from autovi_core.synthesis import AnomalySource, synthesize_anomaly

CHECKPOINT_NAME = "draem_checkpoint.pt"


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


class DraemTrainingSet(Dataset):
    """Training samples with DRAEM's synthetic anomalies, generated on the fly (in workers on CUDA).

    Sample ``i`` of epoch ``e`` uses image ``i mod N`` and a generator seeded by ``(seed, e, i)``,
    so a sample is reproducible whatever worker draws it and whether training was resumed.
    """

    def __init__(
        self,
        images: np.ndarray,
        source: AnomalySource,
        length: int,
        seed: int,
        rotate_prob: float = 0.0,
        anomaly_prob: float = 0.5,
        beta_range: tuple[float, float] = (0.0, 0.8),
    ) -> None:
        self.images, self.source, self.length, self.seed = images, source, length, seed
        self.rotate_prob, self.anomaly_prob, self.beta_range = rotate_prob, anomaly_prob, tuple(beta_range)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = self.images[i % len(self.images)]
        if self.rotate_prob and rng.random() < self.rotate_prob:  # DRAEM rotates 30 % of the images by +-90 deg
            image = nd_rotate(image, rng.uniform(-90, 90), axes=(1, 0), reshape=False, order=1, mode="constant")
        augmented, mask = synthesize_anomaly(image, self.source, rng, self.anomaly_prob, self.beta_range)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
        return chw(image), chw(augmented), torch.from_numpy(mask[None])


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
    """DRAEM's code schedule: multiply the lr by ``gamma`` at 80 % and 90 % of training."""
    passed = sum(epoch >= int(m * epochs) for m in milestones)
    lr = base_lr * gamma**passed
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA, nothing on the CPU."""
    if str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Deterministic algorithms while training on the CPU (restored afterwards)."""
    if str(device).startswith("cuda"):
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def fingerprint(images: np.ndarray, hparams: Mapping[str, Any], seed: int, ignore: Sequence[str] = ()) -> str:
    """SHA-256 of the training images, the hyperparameters (minus ``ignore``) and the seed."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    relevant = {k: v for k, v in sorted(hparams.items()) if k not in ignore}
    digest.update(json.dumps([relevant, seed], sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Checkpointer:
    """Saves ``{"epoch", "fingerprint", ...tensors}`` every ``every`` epochs into ``folder``; ``load``
    returns the saved payload when its fingerprint matches (read with ``weights_only=True``)."""

    def __init__(self, folder: str | os.PathLike[str] | None, every: int | None, key: str, name: str = CHECKPOINT_NAME) -> None:
        self.path = Path(folder).expanduser() / name if folder else None
        self.every = int(every) if every else None
        self.key = key

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.is_file():
            return None
        payload = torch.load(self.path, map_location="cpu", weights_only=True)
        if payload.get("fingerprint") != self.key:
            raise ConfigError(
                f"{self.path}: checkpoint was written for other training images or hyperparameters; "
                "use another checkpoint_dir or delete it"
            )
        return payload

    def maybe_save(self, epoch: int, epochs: int, payload: Mapping[str, Any]) -> None:
        """Save after ``epoch`` (1-based count of finished epochs) when due, and at the end."""
        if self.path is None or not (self.every and (epoch % self.every == 0 or epoch == epochs)):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save({**payload, "epoch": epoch, "fingerprint": self.key}, tmp)
        os.replace(tmp, self.path)


def module_state_to_numpy(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def module_state_from_numpy(prefix: str, module: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    own = {k[len(prefix) + 1 :]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith(prefix + ".")}
    module.load_state_dict(own, strict=True)
