"""Patch and image anomaly scores of PatchCore (Sec. 3.3): nearest-neighbour distances to the bank.

A patch's score is the L2 distance to its nearest memory-bank vector. The image score is the largest
patch score s* = ||m_test* - m*||, reweighted as in the paper's Eq. 7:

    s = (1 - exp ||m_test* - m*|| / sum_{m in N_b(m*)} exp ||m_test* - m||) * s*

where N_b(m*) are the b nearest bank vectors of m* (m* itself included). The weight grows when m*
lies far from its neighbours, i.e. when the test patch is close only to a rare nominal feature.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

FAISS_BLAS_THRESHOLD = 20
"""Queries from which faiss computes exact L2 distances as one matrix product (BLAS) rather than
query by query with its SIMD kernels: faiss's historical default. The faiss-cpu 1.15 wheel ships
128,000, which sends a 224-px image's 784 queries against a 31,360-patch bank down the SIMD path:
91 ms instead of 32 ms on the 2-core dev machine, same neighbours (docs/performance.md)."""


@contextlib.contextmanager
def faiss_blas_from(threshold: int) -> Iterator[None]:
    """faiss's process-wide BLAS threshold set to ``threshold`` for the block, then restored."""
    import faiss

    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = threshold
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


class NearestNeighbours:
    """Exact k-nearest-neighbour search in a memory bank: faiss ``IndexFlatL2`` on the CPU, torch on CUDA."""

    def __init__(self, bank: torch.Tensor, device: torch.device, chunk: int = 4096) -> None:
        self.device = device
        self.chunk = chunk
        self.bank = bank.float().contiguous()
        if device.type == "cuda":
            self.bank = self.bank.to(device)
            self.index = None
        else:
            import faiss

            self.index = faiss.IndexFlatL2(self.bank.shape[1])
            self.index.add(self.bank.numpy())

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, k) L2 distances (not squared) and int64 bank indices of the k nearest vectors, nearest first."""
        k = min(k, self.bank.shape[0])
        if self.index is not None:
            with faiss_blas_from(FAISS_BLAS_THRESHOLD):
                squared, indices = self.index.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
            return torch.from_numpy(np.sqrt(np.maximum(squared, 0.0))), torch.from_numpy(indices.astype(np.int64))
        distances, indices = [], []
        for begin in range(0, queries.shape[0], self.chunk):
            block = torch.cdist(queries[begin : begin + self.chunk].to(self.device).float(), self.bank)
            d, i = torch.topk(block, k, dim=1, largest=False)
            distances.append(d.cpu())
            indices.append(i.cpu())
        return torch.cat(distances), torch.cat(indices)


def reweighted_image_scores(
    patch_features: torch.Tensor,
    patch_scores: torch.Tensor,
    nearest: torch.Tensor,
    knn: NearestNeighbours,
    b: int,
) -> torch.Tensor:
    """Paper Eq. 7 for each image.

    ``patch_features`` (N, P, D), ``patch_scores`` (N, P) nearest distances, ``nearest`` (N, P) index of
    each patch's nearest bank vector. Returns (N,) reweighted maxima.
    """
    top = patch_scores.argmax(dim=1)
    rows = torch.arange(patch_scores.shape[0])
    s_star = patch_scores[rows, top]
    test_star = patch_features[rows, top].float()  # m_test*
    bank_star = knn.bank[nearest[rows, top].to(knn.bank.device)].float()  # m*
    _, support = knn.search(bank_star, k=b)  # N_b(m*), m* first
    neighbours = knn.bank[support.to(knn.bank.device)].cpu()  # (N, b, D)
    distances = torch.linalg.vector_norm(neighbours - test_star.cpu().unsqueeze(1), dim=2)  # (N, b)
    weights = 1.0 - torch.softmax(distances.double(), dim=1)[:, 0]
    return weights * s_star.double()
