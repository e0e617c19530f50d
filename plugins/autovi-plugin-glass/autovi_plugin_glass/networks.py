"""GLASS's trainable parts and losses (paper: feature adaptor, discriminator, training objective).

- :class:`GlassModel`: the feature adaptor (one linear layer applied at every feature position) and
  the discriminator (an MLP over each adapted patch feature: ``layers - 1`` blocks of linear, batch
  norm and LeakyReLU, then a linear layer giving one anomaly logit).
- :func:`bce` and :func:`binary_focal`: the losses of the normal and global (BCE) and of the local
  (focal) synthetic anomalies, on logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
"""Negative slope of the discriminator's LeakyReLU (SimpleNet's value)."""


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Discriminator(nn.Module):
    """(P, D) patch features -> (P,) anomaly logits."""

    def __init__(self, dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(LEAKY_SLOPE)]
            width = hidden
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Linear(width, 1)
        self.apply(_init_linear)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(features))[:, 0]


class GlassModel(nn.Module):
    """Feature adaptor + discriminator over (N, D, h, w) backbone features."""

    def __init__(self, dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.adaptor = nn.Linear(dim, dim)
        _init_linear(self.adaptor)
        self.discriminator = Discriminator(dim, hidden, layers)

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w) backbone features -> (N * h * w, D) adapted patch features (row-major positions)."""
        return self.adaptor(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, h, w) anomaly logits of (N, D, h, w) backbone features."""
        n, _, h, w = features.shape
        return self.discriminator(self.adapt(features)).reshape(n, h, w)


def bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Mean binary cross-entropy of logits against ``target`` (a tensor, or one label for all)."""
    target = torch.full_like(logits, float(target)) if not torch.is_tensor(target) else target.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target)


def binary_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss ``-y (1-p)^gamma log p - (1-y) p^gamma log(1-p)``, ``p = sigmoid(logits)``, ``y`` in {0, 1}."""
    target = target.to(logits.dtype)
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p, q = log_p.exp(), log_q.exp()
    return -(target * q**gamma * log_p + (1 - target) * p**gamma * log_q).mean()
