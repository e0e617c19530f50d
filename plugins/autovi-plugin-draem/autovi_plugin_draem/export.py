"""DRAEM's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`DRAEM.infer` for a batch of raw images: the image at ``image_size``
in [0, 1], the reconstructive network, the discriminative network on the image and its
reconstruction, the anomaly channel's softmax (the map, resized bilinearly to the image's size) and
the image score (the maximum of its ``score_pool`` x ``score_pool`` mean).

One substitution: ``infer`` resizes with Pillow's 8-bit bilinear filter, which a graph cannot
express; the graph resizes with the antialiased bilinear filter (onnx Resize, antialias) and rounds
to 8 bits, which differs from Pillow by one grey level at some pixels. Images already at
``image_size`` are not resampled by either, so they match exactly.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


class DRAEMGraph(torch.nn.Module):
    def __init__(self, recon: torch.nn.Module, disc: torch.nn.Module, size: int, pool: int) -> None:
        super().__init__()
        self.recon, self.disc = copy.deepcopy(recon).cpu().float().eval(), copy.deepcopy(disc).cpu().float().eval()
        self.size, self.pool = size, pool

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0.0, 255.0) / 255.0
        amap = torch.softmax(self.disc(torch.cat([x, self.recon(x)], dim=1)), dim=1)[:, 1:]
        pad = (self.pool // 2, (self.pool - 1) // 2) * 2
        score = F.avg_pool2d(F.pad(amap, pad), self.pool, stride=1).flatten(1).amax(dim=1)
        height, width = images.shape[1], images.shape[2]
        return score, F.interpolate(amap, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
