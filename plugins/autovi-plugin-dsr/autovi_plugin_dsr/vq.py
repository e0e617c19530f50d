"""DSR's general discrete model (stage 1): a two-level VQ-VAE in the style of VQ-VAE-2.

The bottom ("hi", fine) encoder has stride 4, the top ("lo", coarse) encoder a further stride 2.
The top code is decoded to the bottom grid and joins the bottom encoder's output before the bottom
quantisation; the image decoder reads both quantised maps. Codebooks are updated by exponential
moving averages (EMA) of the assigned encoder outputs; the encoder gets a commitment loss and the
straight-through gradient. The codebook starts from encoder outputs of the first batch and codes
that fall out of use are moved onto random encoder outputs (a standard guard against collapse).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class VectorQuantizerEMA(nn.Module):
    """Nearest-codebook quantisation of ``(N, D, H, W)`` maps with an EMA-updated codebook of K codes."""

    def __init__(
        self, num_codes: int, dim: int, commitment: float = 0.25, decay: float = 0.99, eps: float = 1e-5, dead_threshold: float = 0.01
    ) -> None:
        super().__init__()
        self.commitment, self.decay, self.eps, self.dead_threshold = commitment, decay, eps, dead_threshold
        self.register_buffer("embedding", torch.randn(num_codes, dim))
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_sum", self.embedding.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @property
    def num_codes(self) -> int:
        return self.embedding.shape[0]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices ``(N, H, W)`` of the codes nearest to each vector of ``z``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embedding.t() + self.embedding.pow(2).sum(1)[None]
        return dist.argmin(dim=1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors ``(N, D, H, W)`` of an index map ``(N, H, W)``."""
        return self.embedding[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantised with straight-through gradient, indices, commitment loss)``; EMA update in training."""
        indices = self.nearest(z)
        quantised = self.lookup(indices).to(z.dtype)
        if self.training:
            self._ema_update(z.detach().float(), indices)
        loss = self.commitment * F.mse_loss(z.float(), quantised.detach().float())
        return z + (quantised - z).detach(), indices, loss

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if not bool(self.initialised):  # data-dependent start: codes = random encoder outputs
            self._restart(flat, torch.ones(self.num_codes, dtype=torch.bool, device=flat.device))
            self.initialised.fill_(True)
            indices = self.nearest(z)
        onehot = F.one_hot(indices.reshape(-1), self.num_codes).to(flat.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
        self.embedding.copy_(self.embed_sum / smoothed[:, None])
        self._restart(flat, self.cluster_size < self.dead_threshold)

    def _restart(self, flat: torch.Tensor, dead: torch.Tensor) -> None:
        """Move ``dead`` codes onto random encoder outputs of the batch (avoids codebook collapse)."""
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(flat.shape[0], (n_dead,), device=flat.device)
        noise = 1e-3 * torch.randn(n_dead, flat.shape[1], device=flat.device)
        self.embedding[dead] = flat[pick] + noise
        self.embed_sum[dead] = self.embedding[dead]
        self.cluster_size[dead] = 1.0


class ResidualStack(nn.Module):
    """``layers`` residual blocks ReLU-conv3x3-ReLU-conv1x1, then ReLU."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
            for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class ImageDecoder(nn.Module):
    """Decodes ``cat(q_hi, upsampled q_lo)`` (stride 4) to an image; both the general decoder of the
    VQ model and DSR's object-specific decoder have this form."""

    def __init__(self, dim: int, hidden: int, res_hidden: int, res_layers: int) -> None:
        super().__init__()
        self.upsample_lo = nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(2 * dim, hidden, 3, padding=1),
            ResidualStack(hidden, res_hidden, res_layers),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, 3, 4, stride=2, padding=1),
        )

    def forward(self, q_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([q_hi, self.upsample_lo(q_lo)], dim=1))


class VQModel(nn.Module):
    """Two-level VQ-VAE: ``encode`` gives the quantised hi (stride 4) and lo (stride 8) maps."""

    def __init__(
        self,
        hidden: int = 128,
        dim: int = 128,
        num_codes: int = 4096,
        res_hidden: int = 64,
        res_layers: int = 2,
        commitment: float = 0.25,
        decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.encoder_hi = nn.Sequential(
            nn.Conv2d(3, hidden // 2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), ResidualStack(hidden, res_hidden, res_layers),
        )  # fmt: skip
        self.encoder_lo = nn.Sequential(
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), ResidualStack(hidden, res_hidden, res_layers),
        )  # fmt: skip
        self.pre_vq_lo = nn.Conv2d(hidden, dim, 1)
        self.vq_lo = VectorQuantizerEMA(num_codes, dim, commitment, decay)
        self.decoder_lo = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), ResidualStack(hidden, res_hidden, res_layers),
            nn.ConvTranspose2d(hidden, dim, 4, stride=2, padding=1),
        )  # fmt: skip
        self.pre_vq_hi = nn.Conv2d(hidden + dim, dim, 1)
        self.vq_hi = VectorQuantizerEMA(num_codes, dim, commitment, decay)
        self.decoder = ImageDecoder(dim, hidden, res_hidden, res_layers)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q_hi, q_lo, idx_hi, idx_lo, commitment loss)`` of images ``x`` in [0, 1]."""
        h = self.encoder_hi(x)
        q_lo, idx_lo, loss_lo = self.vq_lo(self.pre_vq_lo(self.encoder_lo(h)))
        q_hi, idx_hi, loss_hi = self.vq_hi(self.pre_vq_hi(torch.cat([h, self.decoder_lo(q_lo)], dim=1)))
        return q_hi, q_lo, idx_hi, idx_lo, loss_hi + loss_lo

    def decode(self, q_hi: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        return self.decoder(q_hi, q_lo)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, commitment loss)``."""
        q_hi, q_lo, _, _, loss = self.encode(x)
        return self.decode(q_hi, q_lo), loss
