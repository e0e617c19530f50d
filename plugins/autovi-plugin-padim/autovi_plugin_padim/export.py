"""PaDiM's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`PaDiM.infer`, for a batch of raw images: resize and normalise, the
backbone's three layers resampled (nearest) to the first one's grid and the saved channel subset,
the Mahalanobis distance to every position's Gaussian (means and inverse covariances as constants,
all positions at once where ``infer`` goes 256 at a time), bilinear upsampling to the network input,
the Gaussian blur, the image score (the blurred map's maximum) and the map in the full frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autovi_core.backbones import InputGeometry
from autovi_core.backbones.graph import FeatureTaps, ImageInput, to_frame


class PaDiMGraph(torch.nn.Module):
    def __init__(self, taps: FeatureTaps, geometry: InputGeometry, channels, mean, inv_cov, grid: tuple[int, int], sigma: float) -> None:
        super().__init__()
        self.input, self.taps, self.geometry = ImageInput(geometry), taps, geometry
        self.register_buffer("channels", torch.as_tensor(channels, dtype=torch.int64))
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))  # (P, D)
        self.register_buffer("inv_cov", torch.as_tensor(inv_cov, dtype=torch.float32))  # (P, D, D)
        self.grid, self.sigma = grid, sigma

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.taps(self.input(images))
        maps = [m if m.shape[-2:] == self.grid else F.interpolate(m, size=self.grid, mode="nearest") for m in maps]
        embedding = torch.cat(maps, dim=1)[:, self.channels].flatten(2)  # (B, D, P)
        delta = embedding.permute(2, 0, 1) - self.mean.unsqueeze(1)  # (P, B, D)
        distances = (torch.bmm(delta, self.inv_cov) * delta).sum(dim=2).clamp(min=0.0).sqrt().T  # (B, P)
        smooth = self.geometry.upsample_and_blur(distances.reshape(-1, *self.grid), self.sigma)
        return smooth.flatten(1).amax(dim=1), to_frame(smooth, self.geometry, images)
