"""DSR's object-specific modules and its feature-space anomaly generator.

* :class:`UNet`: the building block of the subspace-restriction networks, the anomaly detection module
  and the upsampling module.
* :class:`SubspaceRestriction`: maps (possibly anomalous) quantised features back into the subspace of
  normal features and re-quantises them with the frozen general codebook.
* :func:`replace_codes`: DSR's feature-space anomalies: inside a mask each code is replaced by a code
  whose distance rank (among all codes, from the original one) lies between 5 % and ``strength * K``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vq import VectorQuantizerEMA


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + batch norm + ReLU layers."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class UNet(nn.Module):
    """U-Net with ``depth`` levels (block ``i`` has ``base * min(2**i, 8)`` channels) and skip connections."""

    def __init__(self, cin: int, cout: int, base: int, depth: int) -> None:
        super().__init__()
        chans = [base * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList(conv_block(a, b) for a, b in zip([cin, *chans[:-1]], chans))
        self.up = nn.ModuleList(conv_block(chans[i] + chans[i - 1], chans[i - 1]) for i in range(depth - 1, 0, -1))
        self.out = nn.Conv2d(chans[0], cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for j, block in enumerate(self.up):
            skip = skips[-2 - j]
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], dim=1))
        return self.out(x)


def codebook_stats(codebook: VectorQuantizerEMA) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation ``(1, D, 1, 1)`` of a (frozen) codebook's vectors."""
    embedding = codebook.embedding.float()
    mean = embedding.mean(0)[None, :, None, None]
    std = (embedding.std(0) if embedding.shape[0] > 1 else torch.ones_like(embedding[0])).clamp_min(1e-6)
    return mean, std[None, :, None, None]


def standardise(features: torch.Tensor, codebook: VectorQuantizerEMA) -> torch.Tensor:
    """Features in units of the codebook's spread: ``(features - mean) / std`` per dimension."""
    mean, std = codebook_stats(codebook)
    return (features.float() - mean) / std


class SubspaceRestriction(nn.Module):
    """Restores normal quantised features: a U-Net followed by the frozen general codebook.

    The U-Net reads and writes features standardised by the codebook's per-dimension mean and std. A VQ
    model is free to settle on any latent scale (a small one trained on a few images ends up with codes
    of norm ~0.5 that differ by ~0.01), and unscaled, the U-Net cannot resolve codes that close.
    """

    def __init__(self, dim: int, base: int, depth: int) -> None:
        super().__init__()
        self.net = UNet(dim, dim, base, depth)

    def forward(self, q: torch.Tensor, codebook: VectorQuantizerEMA) -> tuple[torch.Tensor, torch.Tensor]:
        """``(restored features before quantisation, their re-quantisation with a straight-through gradient)``."""
        mean, std = codebook_stats(codebook)
        features = (self.net(((q.float() - mean) / std).to(q.dtype)) * std + mean).to(q.dtype)
        quantised = codebook.lookup(codebook.nearest(features)).to(features.dtype)
        return features, features + (quantised - features).detach()


def sorted_neighbours(embedding: torch.Tensor) -> torch.Tensor:
    """``(K, K)``: for each code, all codes sorted by increasing distance from it (itself first)."""
    return torch.cdist(embedding.float(), embedding.float()).argsort(dim=1)


def replace_codes(
    indices: torch.Tensor,
    mask: torch.Tensor,
    neighbours: torch.Tensor,
    strength: torch.Tensor,
    generator: torch.Generator,
    min_rank: float = 0.05,
) -> torch.Tensor:
    """Feature-space anomalies: inside ``mask`` replace each code by a code of distance rank in
    ``[min_rank * K, max(strength * K, min_rank * K + 1))``; outside the mask nothing changes.

    ``indices`` and ``mask`` are ``(N, h, w)``; ``strength`` is ``(N,)`` in (0, 1]. Random ranks are
    drawn on the CPU from ``generator`` (reproducible on any device).
    """
    k = neighbours.shape[0]
    low = max(1, int(min_rank * k))  # rank 0 is the code itself
    high = torch.clamp((strength.float().cpu() * k).long(), min=low + 1, max=k)  # exclusive upper rank
    u = torch.rand(indices.shape, generator=generator)
    rank = low + (u * (high[:, None, None] - low)).long()
    replaced = neighbours[indices, rank.to(indices.device)]
    return torch.where(mask.bool(), replaced, indices)
