"""Training plumbing: image preparation, the synthesising Dataset and its DataLoader and the step LR
schedule. Mixed precision, CPU determinism and checkpoints come from :mod:`autovi_core.training`."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import rotate as nd_rotate
from torch.utils.data import Dataset

from autovi_core.synthesis import AnomalySource, synthesize_anomaly


class DraemTrainingSet(Dataset):
    """Training samples with DRAEM's synthetic anomalies, generated on the fly (in workers on CUDA).

    Sample ``i`` of epoch ``e`` uses image ``i mod N`` and a generator seeded by ``(seed, e, i)``,
    so a sample is reproducible whatever worker draws it and whether training was resumed.
    """

    def __init__(
        self,
        images: np.ndarray,
        source: AnomalySource,
        length: int,
        seed: int,
        rotate_prob: float = 0.0,
        anomaly_prob: float = 0.5,
        beta_range: tuple[float, float] = (0.0, 0.8),
    ) -> None:
        self.images, self.source, self.length, self.seed = images, source, length, seed
        self.rotate_prob, self.anomaly_prob, self.beta_range = rotate_prob, anomaly_prob, tuple(beta_range)
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image = self.images[i % len(self.images)]
        if self.rotate_prob and rng.random() < self.rotate_prob:  # DRAEM rotates 30 % of the images by +-90 deg
            image = nd_rotate(image, rng.uniform(-90, 90), axes=(1, 0), reshape=False, order=1, mode="constant")
        augmented, mask = synthesize_anomaly(image, self.source, rng, self.anomaly_prob, self.beta_range)
        chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
        return chw(image), chw(augmented), torch.from_numpy(mask[None])
