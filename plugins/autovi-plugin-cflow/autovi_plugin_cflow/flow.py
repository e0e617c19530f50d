"""Conditional normalising flows: positional encoding, coupling blocks and the flow decoder.

A coupling block (in the spirit of FrEIA's ``AllInOneBlock``, used by CFlow-AD) maps a feature
vector x (C dims) with condition c (the positional encoding of its position):

1. split x = (x1, x2); a = 0.1 * subnet([x1, c]) with subnet = FC(in -> 2 in) -> ReLU -> FC(-> 2 |x2|);
2. soft clamping of the log-scale: s = clamp * tanh(a_s) (|s| < clamp = 1.9);
3. x2 <- x2 * exp(s) + a_t;
4. global affine y <- y * softplus-scale + offset (learned, per channel, scale 1 at initialisation);
5. a fixed random orthogonal mixing of the channels (``permute_soft``) or a fixed random permutation.

log|det J| = sum(s) + sum(log scale) (+ log|det mixing|, 0 up to rounding). Every step is invertible
in closed form (:meth:`CouplingBlock.inverse`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """(channels, height, width) sinusoidal encoding: the first half encodes the column, the second the row.

    Within each half, channel 2k is sin(pos * w_k) and channel 2k + 1 is cos(pos * w_k), with
    w_k = 10000^(-2k / half) (Transformer frequencies), pos the integer column or row index.
    """
    if channels % 4:
        raise ValueError(f"positional encoding channels must be divisible by 4, got {channels}")
    half = channels // 2
    freq = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * (-math.log(10000.0) / half))  # (half/2,)
    cols = torch.arange(width, dtype=torch.float32)[:, None] * freq  # (W, half/2)
    rows = torch.arange(height, dtype=torch.float32)[:, None] * freq  # (H, half/2)
    pe = torch.zeros(channels, height, width)
    pe[0:half:2] = torch.sin(cols).T[:, None, :].expand(-1, height, -1)
    pe[1:half:2] = torch.cos(cols).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(rows).T[:, :, None].expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(rows).T[:, :, None].expand(-1, -1, width)
    return pe


def _full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when autocast made it half precision; float32/float64 stay as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


class CouplingBlock(nn.Module):
    """One conditional affine coupling with soft clamping, global affine and fixed channel mixing."""

    def __init__(
        self, channels: int, condition: int, *, clamp: float = 1.9, permute_soft: bool = True, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.split = channels // 2
        kept, changed = self.split, channels - self.split
        inputs = kept + condition
        self.subnet = nn.Sequential(nn.Linear(inputs, 2 * inputs), nn.ReLU(), nn.Linear(2 * inputs, 2 * changed))
        self.clamp = clamp
        # softplus(raw) * 2 / ... : scale = softplus(0.5 * raw) / softplus(0.5 * raw0) with scale 1 at raw = raw0
        self.global_scale_raw = nn.Parameter(torch.zeros(channels))
        self.global_offset = nn.Parameter(torch.zeros(channels))
        generator = generator or torch.Generator().manual_seed(0)
        if permute_soft:
            q, r = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
            mixing = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix
        else:
            mixing = torch.eye(channels)[torch.randperm(channels, generator=generator)]
        self.register_buffer("mixing", mixing)

    def _global_scale(self) -> torch.Tensor:
        return F.softplus(self.global_scale_raw + math.log(math.e - 1.0))  # = 1 at initialisation

    def _scale_shift(self, x1: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = 0.1 * _full_precision(self.subnet(torch.cat([x1, condition], dim=1)))
        changed = a.shape[1] // 2
        return self.clamp * torch.tanh(a[:, :changed] / self.clamp), a[:, changed:]

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, log|det dy/dx|) for (N, C) inputs and (N, P) conditions."""
        x1, x2 = x[:, : self.split], x[:, self.split :]
        s, t = self._scale_shift(x1, condition)
        y = torch.cat([x1, x2 * torch.exp(s) + t], dim=1)
        scale = self._global_scale()
        y = (y * scale + self.global_offset) @ self.mixing.T
        # |det mixing| = 1 up to rounding of the stored matrix; counted exactly all the same
        return y, s.sum(dim=1) + torch.log(scale).sum() + torch.linalg.slogdet(self.mixing.to(s.dtype)).logabsdet

    def inverse(self, y: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        mixed = torch.linalg.solve(self.mixing.to(y.dtype), y.T).T  # = y @ mixing for an exactly orthogonal matrix
        x = (mixed - self.global_offset) / self._global_scale()
        x1, x2 = x[:, : self.split], x[:, self.split :]
        s, t = self._scale_shift(x1, condition)
        return torch.cat([x1, (x2 - t) * torch.exp(-s)], dim=1)


class ConditionalFlow(nn.Module):
    """A stack of coupling blocks: z = f(x | c), log p(x | c) = log N(z; 0, I) + log|det J|."""

    def __init__(self, channels: int, condition: int, blocks: int, *, clamp: float = 1.9, permute_soft: bool = True, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.channels = channels
        self.blocks = nn.ModuleList(
            CouplingBlock(channels, condition, clamp=clamp, permute_soft=permute_soft, generator=generator) for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(x.shape[0], device=x.device, dtype=_full_precision(x).dtype)
        for block in self.blocks:
            x, block_log_det = block(x, condition)
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            z = block.inverse(z, condition)
        return z

    def log_likelihood(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """log p(x | c) per sample, in nats: -C/2 log 2 pi - |z|^2 / 2 + log|det J|."""
        z, log_det = self(x, condition)
        z = _full_precision(z)
        return -0.5 * self.channels * math.log(2 * math.pi) - 0.5 * (z**2).sum(dim=1) + log_det
