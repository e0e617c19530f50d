"""GLASS's inference path as one traceable module, for ``autovi export`` (docs/deploy.md).

The same computation as :meth:`GLASS.infer`, for a batch of raw images: resize and normalise, the
backbone's layers averaged over their 3x3 neighbourhoods, upsampled to the first layer's grid and
concatenated, the feature adaptor and the discriminator at every position, the sigmoid, bilinear
upsampling to the network input, the Gaussian blur, the image score (the blurred map's maximum) and
the map at the images' size.
"""

from __future__ import annotations

import copy

import torch

from autovi_core.backbones import InputGeometry
from autovi_core.backbones.graph import FeatureTaps, ImageInput, to_frame

from .features import combine_layers
from .networks import GlassModel


class GlassGraph(torch.nn.Module):
    def __init__(self, taps: FeatureTaps, geometry: InputGeometry, model: GlassModel, patch_size: int, sigma: float) -> None:
        super().__init__()
        self.input, self.taps, self.geometry = ImageInput(geometry), taps, geometry
        self.model = copy.deepcopy(model).to("cpu").eval()
        self.patch_size, self.sigma = patch_size, sigma

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.taps(self.input(images))
        features = combine_layers(dict(zip(self.taps.layers, maps)), self.taps.layers, self.patch_size)
        probability = torch.sigmoid(self.model(features))
        smooth = self.geometry.upsample_and_blur(probability, self.sigma)
        return smooth.flatten(1).amax(dim=1), to_frame(smooth, self.geometry, images)
