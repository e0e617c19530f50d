"""Training plumbing shared by the detector plugins that train networks.

Imported only by plugins (never by the core at import time), like :mod:`autovi_core.backbones`, so
that ``autovi list`` stays torch-free.

- :func:`run_fingerprint`: a hash of what determines a training run (hyperparameters minus the
  bookkeeping ones, seed, training images), stored in every checkpoint.
- :class:`Checkpointer`: resumable training checkpoints holding tensors, numbers and strings only,
  written atomically (:func:`autovi_core.files.atomic_write`) and read back with
  ``torch.load(weights_only=True)``. Either one rolling file (``name=...``) or step-numbered files
  resumed from the newest; a checkpoint of another run is skipped or refused (``on_mismatch``).
- :func:`autocast` (bfloat16 on CUDA, nothing on the CPU) and :func:`deterministic` (deterministic
  algorithms while training on the CPU).
- :func:`module_state_to_numpy` / :func:`module_state_from_numpy`: a module's state dict as prefixed
  numpy arrays, for :meth:`~autovi_core.detector.Detector.state_dict` (no pickle).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .errors import ConfigError
from .files import atomic_write

STEP_PATTERN = "step-{step:09d}.pt"
"""File name of a step-numbered checkpoint (zero-padded so that names sort by step)."""
STEP_GLOB = "step-*.pt"


def run_fingerprint(hparams: Mapping[str, Any], seed: int, images: Iterable[np.ndarray], ignore: Sequence[str] = ()) -> str:
    """SHA-256 (hex) of the training ``images``, the ``hparams`` minus ``ignore`` and the ``seed``.

    ``images`` is a sequence of arrays (sizes may differ) or one stacked array; both hash the same
    bytes. Hyperparameters are serialised as sorted JSON (non-JSON values through ``str``).
    """
    digest = hashlib.sha256()
    for image in images:
        digest.update(np.ascontiguousarray(image).tobytes())
    relevant = {k: v for k, v in sorted(hparams.items()) if k not in ignore}
    digest.update(json.dumps([relevant, seed], sort_keys=True, default=str).encode())
    return digest.hexdigest()


class Checkpointer:
    """Periodic, resumable training checkpoints in ``folder`` for the run with fingerprint ``key``.

    A checkpoint is ``{**payload, step_field: step, "fingerprint": key}``, where the payload holds
    tensors, numbers and strings only (state dicts, RNG states), so it is read back with
    ``torch.load(weights_only=True)``.

    - ``folder=None`` disables checkpoints (:meth:`load` returns None, nothing is saved);
      ``every=None`` (or 0) only disables the periodic saving (:meth:`due`).
    - ``name=None``: one file per checkpoint, :data:`STEP_PATTERN`; :meth:`load` returns the newest
      one. ``name="x.pt"``: a single file, overwritten by every save.
    - ``on_mismatch="skip"``: a checkpoint with another fingerprint is ignored (an older matching
      step-numbered one may be used); ``"raise"``: it is refused with :class:`ConfigError`.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str] | None,
        key: str,
        *,
        every: int | None = None,
        name: str | None = None,
        on_mismatch: Literal["skip", "raise"] = "skip",
        step_field: str = "step",
    ) -> None:
        if on_mismatch not in ("skip", "raise"):
            raise ValueError(f"on_mismatch must be 'skip' or 'raise', got {on_mismatch!r}")
        self.folder = Path(folder).expanduser() if folder else None
        self.key = key
        self.every = int(every) if every else None
        self.name = name
        self.on_mismatch = on_mismatch
        self.step_field = step_field

    def path(self, step: int) -> Path:
        """Where the checkpoint after ``step`` goes."""
        if self.folder is None:
            raise ValueError("checkpoints are disabled (no folder)")
        return self.folder / (self.name or STEP_PATTERN.format(step=step))

    def due(self, step: int, *, last: bool = False) -> bool:
        """Whether to save after ``step`` (1-based count of finished steps): every ``every`` steps,
        and also at the ``last`` step when asked."""
        return self.folder is not None and bool(self.every) and (step % self.every == 0 or last)

    def save(self, step: int, payload: Mapping[str, Any]) -> Path:
        """Write the checkpoint after ``step`` atomically (:func:`~autovi_core.files.atomic_write`)."""
        path = self.path(step)
        with atomic_write(path) as tmp:
            torch.save({**payload, self.step_field: step, "fingerprint": self.key}, tmp)
        return path

    def maybe_save(self, step: int, payload: Mapping[str, Any], *, last: bool = False) -> Path | None:
        """:meth:`save` when :meth:`due`; the written path or None."""
        return self.save(step, payload) if self.due(step, last=last) else None

    def load(self) -> dict[str, Any] | None:
        """The checkpoint to resume from (its step under ``step_field``), or None."""
        if self.folder is None or not self.folder.is_dir():
            return None
        if self.name:
            candidates = [self.folder / self.name]
        else:
            candidates = sorted(self.folder.glob(STEP_GLOB), reverse=True)
        for path in candidates:
            if not path.is_file():
                continue
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("fingerprint") == self.key:
                return payload
            if self.on_mismatch == "raise":
                raise ConfigError(
                    f"{path}: checkpoint was written for other training images or hyperparameters; use another checkpoint_dir or delete it"
                )
        return None

    def restore(self, stateful: Mapping[str, Any]) -> int:
        """Load the checkpoint to resume from into ``stateful`` (name -> object with
        ``load_state_dict``, or ``set_state`` like ``torch.Generator``); its step, or 0 without one."""
        payload = self.load()
        if payload is None:
            return 0
        for name, obj in stateful.items():
            (obj.load_state_dict if hasattr(obj, "load_state_dict") else obj.set_state)(payload[name])
        return int(payload[self.step_field])

    @staticmethod
    def capture(stateful: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of ``stateful`` for :meth:`save`: each object's ``state_dict()`` or ``get_state()``."""
        return {name: obj.state_dict() if hasattr(obj, "state_dict") else obj.get_state() for name, obj in stateful.items()}


class GlobalTorchRNG:
    """torch's global random generator as a ``get_state``/``set_state`` object, for checkpoints."""

    @staticmethod
    def get_state() -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_state(state: torch.Tensor) -> None:
        torch.set_rng_state(state)


GPU_PATHS_ON_CPU = False
"""Tests set this to run the CUDA-only code paths on the CPU, so that a machine without a GPU still
exercises them: :func:`autocast` becomes bfloat16 CPU autocast and :func:`make_loader` synthesises
batches in worker processes."""


def mixed_precision_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 where the GPU supports it (and on the CPU), else float16."""
    if str(device).startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: str | torch.device, dtype: torch.dtype = torch.bfloat16) -> contextlib.AbstractContextManager:
    """Mixed precision (``dtype``, bfloat16 by default) on CUDA, nothing on the CPU (unless
    :data:`GPU_PATHS_ON_CPU`, then bfloat16 CPU autocast)."""
    if str(device).startswith("cuda"):
        return torch.autocast(device_type="cuda", dtype=dtype)
    if GPU_PATHS_ON_CPU:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def deterministic(device: str | torch.device) -> Iterator[None]:
    """Deterministic algorithms while training on the CPU (the previous setting is restored)."""
    if str(device).startswith("cuda"):
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def single_thread_on_cpu(device: str | torch.device) -> Iterator[None]:
    """One intra-op torch thread on the CPU (the previous count is restored); nothing changes on a GPU.

    For loops of many small kernels (PatchCore's greedy coreset steps, GLASS's training steps):
    splitting each across threads costs more in synchronisation than it gains, and on a busy
    machine far more (a coreset step: 14.7 ms with two threads on a loaded 2-core machine against
    0.55 ms with one; two GLASS fast-profile epochs: 88 s against 3.2 s).
    """
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def module_state_to_numpy(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``module``'s state dict as numpy copies named ``<prefix>.<key>``."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def module_state_from_numpy(prefix: str, module: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Load the ``<prefix>.*`` entries of ``state`` into ``module`` (strictly)."""
    own = {k[len(prefix) + 1 :]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith(prefix + ".")}
    module.load_state_dict(own, strict=True)


# --- data loading, schedules and losses shared by the trained detectors ---------------------------
def prepare_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """``(N, size, size, 3)`` float32 in [0, 1] (bilinear resize, no ImageNet normalisation),
    the input of the detectors that learn from raw pixels (DRAEM, DSR)."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.asarray(image, dtype=np.uint8))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(pil, dtype=np.float32) / 255.0
    return out


def refresh_for_epoch(dataset: Any, images: Sequence[np.ndarray], epoch: int, size: int) -> None:
    """With augmented training images (``autovi run --augment``), set ``dataset.images`` to the draws
    of ``epoch`` prepared as :func:`prepare_images`; without augmentation, do nothing."""
    from .augmentation import epoch_images, is_augmented

    if is_augmented(images):
        dataset.images = prepare_images(epoch_images(images, epoch), size)


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

    On CUDA, ``workers`` processes synthesise the batches (pinned memory); on the CPU they run inline
    (in workers too under :data:`GPU_PATHS_ON_CPU`).
    """
    if hasattr(dataset, "epoch"):
        dataset.epoch = epoch
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    on_cuda = str(device).startswith("cuda")
    n_workers = workers if on_cuda or GPU_PATHS_ON_CPU else 0
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        generator=generator,
        num_workers=n_workers,
        pin_memory=on_cuda and n_workers > 0,
        worker_init_fn=functools.partial(_seed_worker, base_seed=seed) if n_workers else None,
    )


def step_lr(
    optimizer: torch.optim.Optimizer, base_lr: float, epoch: int, epochs: int, milestones: Sequence[float] = (0.8, 0.9), gamma: float = 0.2
) -> float:
    """Multiply the lr by ``gamma`` at each milestone (a fraction of ``epochs``), as DRAEM and DSR do."""
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
