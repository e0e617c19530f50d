"""PatchCore's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`PatchCore.infer` for a batch of raw images: resize and normalise,
the backbone, the locally aware patch features (:func:`.features.patch_features`), the distance of
every patch to its nearest memory-bank vectors, the map (bilinear upsampling, Gaussian blur, full
frame) and the image score (the largest patch score, reweighted by the paper's Eq. 7 when
``reweight`` is on), with the memory bank as a constant.

One substitution: faiss cannot be expressed in a graph, so the nearest neighbours are found by
exact brute force, ||q||^2 - 2 q.b + ||b||^2 as a matrix product over the bank in chunks of
:data:`CHUNK` vectors, each chunk's k best kept and merged. It is exact (faiss' flat index computes
the same expansion), in float32 where ``infer`` scores in float64.
"""

from __future__ import annotations

import torch

from autovi_core.backbones import InputGeometry
from autovi_core.backbones.graph import FeatureTaps, ImageInput, to_frame

from .features import patch_features

CHUNK = 16384
"""Bank vectors per matrix product: bounds the (queries x CHUNK) distance block."""


def nearest(queries: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, k) L2 distances and bank indices of each query's k nearest bank vectors, nearest first."""
    q_sq = (queries * queries).sum(dim=1, keepdim=True)
    best_d, best_i = [], []
    for begin in range(0, bank.shape[0], CHUNK):
        block = bank[begin : begin + CHUNK]
        squared = (q_sq - 2.0 * queries @ block.T + bank_sq[:, begin : begin + CHUNK]).clamp(min=0.0)
        d, i = torch.topk(squared, min(k, block.shape[0]), dim=1, largest=False)
        best_d.append(d)
        best_i.append(i + begin)
    squared, index = torch.cat(best_d, dim=1), torch.cat(best_i, dim=1)
    if len(best_d) > 1:
        squared, order = torch.topk(squared, k, dim=1, largest=False)
        index = torch.gather(index, 1, order)
    return squared.sqrt(), index


class PatchCoreGraph(torch.nn.Module):
    def __init__(self, taps: FeatureTaps, geometry: InputGeometry, bank, grid: tuple[int, int], hparams, sigma: float) -> None:
        super().__init__()
        self.input, self.taps, self.geometry, self.grid, self.sigma = ImageInput(geometry), taps, geometry, grid, sigma
        self.register_buffer("bank", torch.as_tensor(bank, dtype=torch.float32))
        self.register_buffer("bank_sq", (self.bank * self.bank).sum(dim=1).unsqueeze(0))
        self.patch_size, self.target_dim, self.k = int(hparams["patch_size"]), int(hparams["target_dim"]), int(hparams["k"])
        self.reweight, self.b = bool(hparams["reweight"]), int(hparams["reweight_neighbours"])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = dict(zip(self.taps.layers, self.taps(self.input(images))))
        features = patch_features(features, self.taps.layers, self.patch_size, self.target_dim)
        n, d = features.shape[0], features.shape[1]
        patches = features.permute(0, 2, 3, 1).reshape(n, -1, d)  # (N, P, D)
        distances, indices = nearest(patches.reshape(-1, d), self.bank, self.bank_sq, min(self.k, self.bank.shape[0]))
        patch_scores = distances.mean(dim=1).reshape(n, -1)  # (N, P)
        top = patch_scores.argmax(dim=1, keepdim=True)
        s_star = torch.gather(patch_scores, 1, top).squeeze(1)
        if self.reweight:  # Eq. 7: 1 - softmax over the distances from m_test* to N_b(m*), m* first
            test_star = torch.gather(patches, 1, top.unsqueeze(2).expand(-1, -1, d)).squeeze(1)  # (N, D)
            bank_star = self.bank[torch.gather(indices[:, 0].reshape(n, -1), 1, top).squeeze(1)]  # (N, D)
            _, support = nearest(bank_star, self.bank, self.bank_sq, min(self.b, self.bank.shape[0]))
            distances_b = torch.linalg.vector_norm(self.bank[support] - test_star.unsqueeze(1), dim=2)
            s_star = (1.0 - torch.softmax(distances_b, dim=1)[:, 0]) * s_star
        smooth = self.geometry.upsample_and_blur(patch_scores.reshape(n, *self.grid), self.sigma)
        return s_star, to_frame(smooth, self.geometry, images)
