"""Training sets of DSR's three stages; sample ``i`` of epoch ``e`` is seeded by ``(seed, stage, e, i)``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from autovi_core.synthesis import ProceduralTextureSource, SolidColourSource, perlin_mask, synthesize_anomaly


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


class _Seeded(Dataset):
    stage = 0

    def __init__(self, images: np.ndarray, length: int, seed: int) -> None:
        self.images, self.length, self.seed, self.epoch = images, length, seed, 0

    def __len__(self) -> int:
        return self.length

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stage, self.epoch, i])


class Stage1Set(_Seeded):
    """Stage 1 (general VQ model): training images with flips and 90-degree rotations and, with
    probability ``texture_prob``, a procedural texture blended into a Perlin mask. The paper's general
    model sees ImageNet; trained on a few normal images only, it would quantise any unseen (defect)
    appearance away, and the later stages could not see the defect at all."""

    stage = 1

    def __init__(self, images: np.ndarray, length: int, seed: int, texture_prob: float = 0.0) -> None:
        super().__init__(images, length, seed)
        self.texture_prob, self.source = texture_prob, ProceduralTextureSource()

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = self.rng(i)
        image = np.rot90(self.images[i % len(self.images)], k=int(rng.integers(4)))
        image = image[:, ::-1] if rng.random() < 0.5 else image
        if self.texture_prob > 0:
            image, _ = synthesize_anomaly(image, self.source, rng, self.texture_prob, beta_range=(0.0, 0.8))
        return _chw(image)


class Stage2Set(_Seeded):
    """Stage 2: a clean image, a Perlin mask (empty for ``1 - anomaly_prob`` of the samples), the level
    to corrupt (0 = hi, 1 = lo, 2 = both, drawn with weights ``levels``; ``paper``: uniform) and the anomaly
    strength ``~ U(0.2, 1)``."""

    stage = 2

    def __init__(self, images: np.ndarray, length: int, seed: int, anomaly_prob: float = 0.5,
                 levels: Sequence[float] = (1.0, 1.0, 1.0)) -> None:  # fmt: skip
        super().__init__(images, length, seed)
        self.anomaly_prob = anomaly_prob
        weights = np.asarray(levels, dtype=np.float64)
        self.levels = weights / weights.sum()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        rng = self.rng(i)
        image = self.images[i % len(self.images)]
        mask = np.zeros(image.shape[:2], np.float32)
        if rng.random() < self.anomaly_prob:
            mask = perlin_mask(image.shape[:2], rng, nonempty=True).astype(np.float32)
        return _chw(image), torch.from_numpy(mask[None]), int(rng.choice(3, p=self.levels)), float(rng.uniform(0.2, 1.0))


class Stage3Set(_Seeded):
    """Stage 3 (upsampling module): image-space anomalies, a Perlin mask filled with a random solid
    colour at opacity in [0.2, 0.8]."""

    stage = 3

    def __init__(self, images: np.ndarray, length: int, seed: int, anomaly_prob: float = 0.5) -> None:
        super().__init__(images, length, seed)
        self.anomaly_prob, self.source = anomaly_prob, SolidColourSource()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(i)
        image, mask = synthesize_anomaly(
            self.images[i % len(self.images)], self.source, rng, self.anomaly_prob, beta_range=(0.2, 0.8), augment=False
        )
        return _chw(image), torch.from_numpy(mask[None])
