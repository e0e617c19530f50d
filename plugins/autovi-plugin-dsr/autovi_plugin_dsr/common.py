"""Training plumbing of DSR's three stages: image preparation, the DataLoader, the step LR schedule
and the focal loss (checkpoints, mixed precision and determinism come from ``autovi_core.training``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image





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
