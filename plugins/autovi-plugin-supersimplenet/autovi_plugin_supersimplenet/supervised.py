"""SuperSimpleNet's supervised mode (paper, Sec. 3): labelled defective images with their masks train
the heads alongside the feature-space synthetic anomalies of the unsupervised mode.

Everything but the batches is the unsupervised detector's (:class:`.detector.SuperSimpleNet`): same
features, networks, losses, optimiser, inference and saved state. What changes:

- the labelled defects' backbone features are extracted once, and each ground-truth mask is brought
  to the feature grid (:func:`mask_to_grid`: a cell is defective when the defect covers at least half
  of it);
- every batch holds ``batch_size - batch_size // 2`` shuffled good images and ``batch_size // 2``
  labelled defects (at least one of each), the defects drawn in reshuffled passes over the labelled
  set; an epoch is one pass over the good images;
- a defect's segmentation target is its grid mask and its image label is 1; synthetic anomalies are
  drawn on every sample, good or defective, but never inside a real defect (the shared training step,
  :meth:`.detector.SuperSimpleNet._train_step`).

Heavy libraries are imported inside the functions so that listing plugins stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from autovi_core import Capabilities, LabelledDefects
from autovi_core.errors import ConfigError, DataError

from .detector import SuperSimpleNet, batch_bounds


def mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the cells of the feature ``grid`` that the (H, W) defect ``mask`` covers at least half of.

    The whole image frame maps onto the grid (the network input is the image resized to a square, the
    aspect ratio not kept); each cell's covered fraction is the mean of the mask over the cell's pixels
    (adaptive average pooling: exact where the grid divides the mask, nearly so elsewhere)."""
    import torch
    import torch.nn.functional as F

    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) defect mask, got shape {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array != 0, dtype=np.float64))[None, None]
    covered = F.adaptive_avg_pool2d(tensor, tuple(int(v) for v in grid))[0, 0]
    return (covered >= 0.5).numpy()


class SuperSimpleNetSupervised(SuperSimpleNet):
    name = "supersimplenet_sup"
    description = (
        "SuperSimpleNet, supervised mode: labelled defects with their masks train the heads alongside "
        "Perlin-masked Gaussian noise in adapted CNN features."
    )
    capabilities = Capabilities(needs_gpu=False, supervised=True, pretrained_assets=SuperSimpleNet.capabilities.pretrained_assets)

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self._labelled: tuple[Any, np.ndarray] | None = None

    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        if labelled is None or not labelled.images:
            raise ConfigError(
                f"{self.name} is supervised: fit needs labelled defective images (use {SuperSimpleNet.name} for unsupervised training)"
            )
        if len(labelled.masks) != len(labelled.images):
            raise DataError(f"{self.name}: {len(labelled.images)} labelled defective images but {len(labelled.masks)} masks")
        missing = [i for i, mask in enumerate(labelled.masks) if mask is None]
        if missing:
            raise DataError(f"{self.name}: labelled defects {missing} have no ground-truth mask; the supervised mode needs one per image")
        features = self._features(labelled.images, f"{self.name}: features of {len(labelled.images)} labelled defects")
        grid = (int(features.shape[2]), int(features.shape[3]))
        masks = np.stack([mask_to_grid(mask, grid) for mask in labelled.masks])
        self._labelled = (features, masks)
        try:
            super().learn(images, None)
        finally:
            self._labelled = None  # the labelled features are not part of the learned state
        self.provenance["labelled_defects"] = len(masks)
        self.provenance["labelled_defects_empty_on_grid"] = int((~masks.any(axis=(1, 2))).sum())

    def _epoch_batches(self, features: Any, generator: Any) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
        """Shuffled good images with ``batch_size // 2`` labelled defects appended to each batch."""
        import torch

        if self._labelled is None:
            raise RuntimeError(f"{self.name}: the labelled defects are set only while learn() runs")
        defect_features, defect_masks = self._labelled
        n, _, h, w = features.shape
        size = int(self.hparams["batch_size"])
        per_batch = max(1, size // 2)
        bounds = batch_bounds(n, max(1, size - per_batch))
        order = torch.randperm(n, generator=generator)
        count, needed = len(defect_features), len(bounds) * per_batch
        passes = [torch.randperm(count, generator=generator) for _ in range(-(-needed // count))]
        defects = torch.cat(passes)[:needed]
        for i, (start, end) in enumerate(bounds):
            good, bad = order[start:end], defects[i * per_batch : (i + 1) * per_batch]
            batch = torch.cat([features[good], defect_features[bad]])
            real = np.concatenate([np.zeros((len(good), h, w), dtype=bool), defect_masks[bad.numpy()]])
            defective = np.concatenate([np.zeros(len(good), dtype=bool), np.ones(len(bad), dtype=bool)])
            yield batch, real, defective
