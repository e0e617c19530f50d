"""Patch and image scores of AnomalyDINO: cosine nearest-neighbour distances.

A test patch's score is its cosine distance to the nearest reference patch,
``d(x) = 1 - max_m <x, m> / (|x| |m|)``, in [0, 2]. The image score is the mean of the highest
``fraction`` (the paper: 1 %) of the patch scores of the image, at least one patch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

SIMILARITY_BUDGET = 1 << 24
"""Largest query x bank similarity block held at once (float32 elements: 64 MB)."""


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) rows scaled to unit L2 norm (all-zero rows stay zero: distance 1 to everything)."""
    return F.normalize(vectors.float(), p=2.0, dim=1, eps=1e-12)


class CosineNearestNeighbour:
    """Exact cosine nearest-neighbour distances to a bank of unit vectors, by blocks of matrix products."""

    def __init__(self, bank: torch.Tensor, device: torch.device, budget: int = SIMILARITY_BUDGET) -> None:
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"the reference bank must be a non-empty (M, D) matrix, got {tuple(bank.shape)}")
        self.device = device
        self.bank = unit_rows(bank).to(device).contiguous()
        self.rows = max(1, budget // self.bank.shape[0])

    @torch.inference_mode()
    def distances(self, queries: torch.Tensor) -> torch.Tensor:
        """(Q,) float32 cosine distances of the (Q, D) ``queries`` to their nearest bank vector, on the CPU."""
        if queries.shape[1] != self.bank.shape[1]:
            raise ValueError(f"queries have {queries.shape[1]} dims, the bank {self.bank.shape[1]}")
        out = []
        for start in range(0, queries.shape[0], self.rows):
            block = unit_rows(queries[start : start + self.rows].to(self.device))
            best = (block @ self.bank.T).max(dim=1).values
            out.append((1.0 - best).clamp_(0.0, 2.0).cpu())
        return torch.cat(out) if out else torch.empty(0)


def top_count(n_patches: int, fraction: float) -> int:
    """How many of ``n_patches`` the image score averages: the highest ``fraction``, at least one."""
    return max(1, min(n_patches, math.floor(n_patches * fraction + 1e-9)))


def top_fraction_mean(values: np.ndarray, fraction: float) -> float:
    """Mean of the highest ``fraction`` of ``values`` (at least one value), in float64."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise ValueError("no patch scores to average")
    k = top_count(flat.size, fraction)
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())
