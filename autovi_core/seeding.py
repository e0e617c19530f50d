"""Seeding every random generator an experiment may touch."""

from __future__ import annotations

import os
import random
import sys

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and, when it is imported, torch (CUDA included).

    torch is not imported here, so that detectors without it do not pay for it; detectors that
    use torch import it before calling this (the runner calls it again after building them) or seed
    their own generators from ``Detector.seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
