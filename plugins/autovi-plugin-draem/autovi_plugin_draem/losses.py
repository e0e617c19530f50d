"""DRAEM's losses: SSIM (written out, Gaussian window) and the focal loss on two-class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of two ``(N, C, H, W)`` batches over every full window ("valid" positions).

    Local means, variances and covariance come from a separable Gaussian window per channel;
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range`` (Wang et al., 2004).
    """
    channels = x.shape[1]
    w1 = gaussian_window(window, sigma).to(device=x.device, dtype=x.dtype)
    kernel = (w1[:, None] * w1[None, :]).expand(channels, 1, window, window).contiguous()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.mean()
