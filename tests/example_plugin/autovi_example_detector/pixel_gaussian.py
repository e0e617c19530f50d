"""Per-pixel Gaussian: a deliberately simple baseline for fixed-viewpoint inspection images.

Each training image is resized to a working resolution and blurred; every pixel and colour channel
gets a mean and a standard deviation. A test pixel's anomaly is its largest absolute z-score over
the channels; the map is smoothed and resized, the image score is its maximum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from autovi_core import Capabilities, Detector, Prediction


def _prepare(images: Sequence[np.ndarray], size: int, blur: float) -> np.ndarray:
    """(N, size, size, 3) float32 images in [0, 1], slightly blurred to tolerate jitter."""
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        out[i] = gaussian_filter(resized / 255.0, sigma=(blur, blur, 0)) if blur > 0 else resized / 255.0
    return out


class PixelGaussian(Detector):
    name = "pixel_gaussian"
    description = "Per-pixel colour Gaussian over aligned training images (example plugin)."
    profiles = {
        "paper": {"size": 128, "blur": 1.0, "min_std": 0.02, "map_sigma": 2.0},
        "fast": {"size": 64, "blur": 1.0, "min_std": 0.02, "map_sigma": 1.0},
    }
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=())

    def learn(self, images: Sequence[np.ndarray], labelled=None) -> None:
        if len(images) < 2:
            raise ValueError(f"{self.name} needs at least 2 training images, got {len(images)}")
        data = _prepare(images, self.hparams["size"], self.hparams["blur"])
        self.mean_ = data.mean(axis=0)
        self.std_ = np.maximum(data.std(axis=0, ddof=1), self.hparams["min_std"]).astype(np.float32)

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        data = _prepare(images, self.hparams["size"], self.hparams["blur"])
        z = np.abs(data - self.mean_) / self.std_
        maps = np.empty((len(images), *output_size), dtype=np.float32)
        for i, zmap in enumerate(z.max(axis=3)):
            smooth = gaussian_filter(zmap, self.hparams["map_sigma"])
            maps[i] = np.asarray(Image.fromarray(smooth).resize(output_size[::-1], Image.Resampling.BILINEAR))
        return Prediction(scores=maps.reshape(len(images), -1).max(axis=1), maps=maps)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "std": self.std_}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        self.mean_, self.std_ = state["mean"], state["std"]
