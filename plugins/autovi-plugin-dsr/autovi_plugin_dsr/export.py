"""DSR's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`DSR.infer` for a batch of raw images: the image at ``image_size`` in
[0, 1]; the VQ model's two quantised feature maps (nearest codes by squared distance); the object
decoder on the subspace-restricted features beside the general decoder's reconstruction; the
anomaly detection module's softmax (the coarse mask), whose ``score_pool`` x ``score_pool`` mean's
maximum is the image score; and the upsampling module's softmax on the image and the coarse mask
(the map, resized bilinearly to the image's size).

One substitution, as for DRAEM: ``infer`` resizes with Pillow's 8-bit bilinear filter, which a
graph cannot express; the graph resizes with the antialiased bilinear filter and rounds to 8 bits
(one grey level apart at some pixels). Images already at ``image_size`` are not resampled by either.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


class DSRGraph(torch.nn.Module):
    def __init__(self, modules: dict[str, torch.nn.Module], size: int, pool: int) -> None:
        super().__init__()
        copies = {name: copy.deepcopy(module).cpu().float().eval() for name, module in modules.items()}
        self.vq, self.restrict_hi, self.restrict_lo = copies["vq"], copies["restrict_hi"], copies["restrict_lo"]
        self.object_decoder, self.adm, self.upsampler = copies["object_decoder"], copies["adm"], copies["upsampler"]
        self.size, self.pool = size, pool

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0.0, 255.0) / 255.0
        q_hi, q_lo, _, _, _ = self.vq.encode(x)
        _, r_hi = self.restrict_hi(q_hi, self.vq.vq_hi)
        _, r_lo = self.restrict_lo(q_lo, self.vq.vq_lo)
        coarse = torch.softmax(self.adm(torch.cat([self.object_decoder(r_hi, r_lo), self.vq.decode(q_hi, q_lo)], dim=1)), dim=1)
        score = F.avg_pool2d(coarse[:, 1:], self.pool, stride=1, padding=self.pool // 2).flatten(1).amax(dim=1)
        fine = torch.softmax(self.upsampler(torch.cat([x, coarse], dim=1)), dim=1)[:, 1:]
        height, width = images.shape[1], images.shape[2]
        return score, F.interpolate(fine, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
