"""Periodic training checkpoints (``step`` = meta-epochs done here) (weights-only torch files) and resuming from the latest one.

A checkpoint holds tensors, numbers and strings only, so it is read back with
``torch.load(weights_only=True)``. Each carries a ``run_key`` (a hash of the settings, the seed and
the training images); only a checkpoint with the current run's key is resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

IGNORED = ("teacher_source", "checkpoint_every", "checkpoint_dir", "weights_source")


def run_key(hparams: Mapping[str, Any], seed: int, images: Sequence[np.ndarray]) -> str:
    """Hash of what determines a training run (bookkeeping hyperparameters excluded)."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in hparams.items() if k not in IGNORED}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(str(seed).encode())
    for image in images:
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(folder: str | os.PathLike[str], step: int, state: dict[str, Any]) -> Path:
    """Write ``folder/step-<step>.pt`` atomically."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.pt"
    tmp = folder / f".{path.name}.{os.getpid()}"
    torch.save({**state, "step": step}, tmp)
    os.replace(tmp, path)
    return path


def latest_checkpoint(folder: str | os.PathLike[str] | None, key: str) -> dict[str, Any] | None:
    """The newest checkpoint in ``folder`` written by a run with ``key``, or None."""
    if not folder or not Path(folder).expanduser().is_dir():
        return None
    for path in sorted(Path(folder).expanduser().glob("step-*.pt"), reverse=True):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("run_key") == key:
            return state
    return None
