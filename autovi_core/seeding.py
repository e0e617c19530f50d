"""Seeding every random generator an experiment may touch."""

from __future__ import annotations

import importlib.util
import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when installed) torch, including CUDA, for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
