"""EfficientAD's training losses and its quantile-based map normalisation.

``quantile`` follows numpy's default (linear interpolation between the two closest ranks) but uses
``topk`` instead of ``torch.quantile``, which refuses tensors of more than 16 M elements.
"""

from __future__ import annotations

import math

import torch


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of all elements of ``values`` (numpy's ``linear`` method), as a 0-d tensor."""
    flat = values.reshape(-1)
    n = flat.numel()
    position = q * (n - 1)
    low = math.floor(position)
    top = torch.topk(flat, n - low, sorted=True).values  # descending: [..., v[low + 1], v[low]]
    v_low = top[-1]
    v_high = top[-2] if n - low >= 2 else v_low
    return v_low + (position - low) * (v_high - v_low)


def hard_feature_loss(teacher: torch.Tensor, student: torch.Tensor, q: float = 0.999) -> torch.Tensor:
    """Mean of the squared teacher-student differences at or above their ``q`` quantile (L_hard)."""
    distance = (teacher - student) ** 2
    threshold = quantile(distance.detach(), q)
    return distance[distance >= threshold].mean()


def penalty_loss(student_on_penalty: torch.Tensor) -> torch.Tensor:
    """Mean squared student output on an out-of-distribution image: keeps the student from over-generalising."""
    return (student_on_penalty**2).mean()


def autoencoder_losses(teacher: torch.Tensor, autoencoder: torch.Tensor, student_ae: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_AE, L_STAE): the autoencoder mimics the teacher, the student's second half mimics the autoencoder."""
    return ((teacher - autoencoder) ** 2).mean(), ((autoencoder - student_ae) ** 2).mean()


def map_quantiles(maps: torch.Tensor, q_a: float = 0.9, q_b: float = 0.995) -> tuple[float, float]:
    """The ``q_a`` and ``q_b`` quantiles of all values of a stack of maps."""
    return float(quantile(maps.float(), q_a)), float(quantile(maps.float(), q_b))


def normalise_map(maps: torch.Tensor, q_a: float, q_b: float) -> torch.Tensor:
    """Map q_a -> 0 and q_b -> 0.1, linearly (the paper's map normalisation)."""
    return 0.1 * (maps - q_a) / max(q_b - q_a, 1e-12)
