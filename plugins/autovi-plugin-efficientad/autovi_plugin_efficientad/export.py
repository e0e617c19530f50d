"""EfficientAD's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`EfficientAD.infer` for a batch of raw images: the antialiased resize
to ``image_size`` rounded to 8 bits (as :func:`.teacher.arrays_to_tensor`), ImageNet normalisation,
teacher, student and autoencoder, both maps normalised by the saved quantiles and averaged
(:meth:`.inference.FusedEfficientAD.combine`), the image score (the grid's maximum), and the map:
the unseen border cells replicated, upsampled bilinearly and resized to the image's size. On the
CPU ``infer`` runs in float32, as the graph does.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from autovi_core.backbones import InputGeometry
from autovi_core.backbones.graph import to_frame

from .inference import FusedEfficientAD


class EfficientADGraph(torch.nn.Module):
    def __init__(self, fused: FusedEfficientAD, size: int) -> None:
        super().__init__()
        self.model = copy.deepcopy(fused).cpu().float().eval().to(memory_format=torch.contiguous_format)
        self.size, self.geometry = size, InputGeometry(size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0.0, 255.0) / 255.0
        grid = self.model.combine(*self.model.raw_maps((x - self.model.image_mean) / self.model.image_std))
        maps = self.geometry.upsample_and_blur(self.model.pad_to_input_grid(grid), 0.0)
        return grid.flatten(1).amax(dim=1), to_frame(maps, self.geometry, images)
