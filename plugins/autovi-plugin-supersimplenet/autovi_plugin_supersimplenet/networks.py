"""SuperSimpleNet's trainable parts (paper, Sec. 3), its feature-space anomalies and its losses.

- :class:`SuperSimpleNetModel`: a 1x1-convolution feature adaptor, a segmentation head (1x1 conv,
  batch norm, ReLU, 1x1 conv -> one anomaly logit per feature position) and a classification head
  (5x5 conv, batch norm, ReLU over the adapted features concatenated with the segmentation logits;
  global max and mean pooling of that and of the segmentation logits, a linear layer -> one image logit).
  The segmentation logits enter the classification head with their gradient stopped.
- :func:`feature_anomalies`: Gaussian noise N(0, sigma^2) added to the adapted features inside a mask.
- :func:`truncated_l1` and :func:`binary_focal`: the losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autovi_core.training import focal_loss


class SuperSimpleNetModel(nn.Module):
    """Feature adaptor + segmentation head + classification head over (N, D, h, w) backbone features."""

    def __init__(self, dim: int, seg_width: int, cls_width: int) -> None:
        super().__init__()
        self.adaptor = nn.Conv2d(dim, dim, kernel_size=1)
        self.seg = nn.Sequential(
            nn.Conv2d(dim, seg_width, kernel_size=1, bias=False),
            nn.BatchNorm2d(seg_width),
            nn.ReLU(inplace=True),
            nn.Conv2d(seg_width, 1, kernel_size=1),
        )
        self.cls_conv = nn.Sequential(
            nn.Conv2d(dim + 1, cls_width, kernel_size=5, padding=2, bias=False),
            nn.BatchNorm2d(cls_width),
            nn.ReLU(inplace=True),
        )
        self.cls_fc = nn.Linear(2 * cls_width + 2, 1)

    def heads(self, adapted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, h, w) segmentation logits and (N,) image logits of adapted features."""
        seg = self.seg(adapted)
        hidden = self.cls_conv(torch.cat([adapted, seg.detach()], dim=1))
        flat_seg = seg.detach().flatten(1)
        pooled = torch.cat(
            [hidden.amax(dim=(2, 3)), hidden.mean(dim=(2, 3)), flat_seg.amax(dim=1, keepdim=True), flat_seg.mean(dim=1, keepdim=True)],
            dim=1,
        )
        return seg[:, 0], self.cls_fc(pooled)[:, 0]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: (N, h, w) segmentation logits and (N,) image logits of backbone features."""
        return self.heads(self.adaptor(features))


def feature_anomalies(adapted: torch.Tensor, mask: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``adapted`` (N, D, h, w) plus N(0, sigma^2) noise at the positions where ``mask`` (N, h, w) is set
    (the noise is drawn on the CPU from ``generator``, so that it does not depend on the device)."""
    noise = torch.randn(adapted.shape, generator=generator, dtype=adapted.dtype).to(adapted.device) * sigma
    return adapted + noise * mask.to(adapted.dtype).unsqueeze(1)


def truncated_l1(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Mean truncated L1: ``max(0, threshold - z)`` where ``target`` is 1, ``max(0, threshold + z)`` where it is 0."""
    target = target.to(logits.dtype)
    return (target * F.relu(threshold - logits) + (1 - target) * F.relu(threshold + logits)).mean()


def binary_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss of single anomaly logits (any shape) against ``target`` in {0, 1}: the core's
    two-class focal loss with the logits (0, z), whose softmax is (1 - sigmoid z, sigmoid z)."""
    flat = logits.reshape(logits.shape[0], 1, -1)
    two = torch.cat([torch.zeros_like(flat), flat], dim=1)
    return focal_loss(two, target.reshape(logits.shape[0], -1), gamma=gamma)
