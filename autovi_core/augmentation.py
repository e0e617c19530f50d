"""Training augmentation recipes (``autovi run --augment NAME``), drawn per image and per epoch.

The AutoVI paper's recipe (section 6.1, Table 11): with probability 0.5 a rotation by an angle drawn
uniformly in [-15°, +15°]; independently, with probability 0.5, per-pixel Gaussian noise N(0, σ²)
with σ² drawn uniformly in [10, 120] once per image (pixel values 0-255). No flips, no colour jitter.

Every draw comes from ``(seed, epoch, image index)`` alone, so a run is reproducible and the
augmentation of image ``i`` in epoch ``e`` does not depend on the order in which images are read.

How detectors see it: the runner hands ``fit`` an :class:`AugmentedImages` (a list holding the
epoch-0 augmentation of every training image). One-pass methods (PatchCore, PaDiM) therefore see one
augmented pass, as in the paper's one-epoch anomalib runs. Methods that train for epochs call
:func:`epoch_images` at the start of each epoch and get that epoch's fresh draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .dataset import KeyedImages, image_paths
from .errors import ConfigError

STREAM = 0x617567  # separates augmentation draws from every other use of the experiment seed


@dataclass(frozen=True)
class AugmentationRecipe:
    """Probabilities and ranges of one recipe."""

    name: str
    rotation_p: float
    max_degrees: float
    noise_p: float
    noise_variance: tuple[float, float]
    source: str

    def draw(self, seed: int, epoch: int, index: int) -> tuple[float | None, float | None]:
        """(rotation angle in degrees or None, noise variance or None) of image ``index`` in ``epoch``."""
        rng = np.random.default_rng([STREAM, seed, epoch, index])
        rotate, angle = rng.random(), rng.uniform(-self.max_degrees, self.max_degrees)
        noisy, variance = rng.random(), rng.uniform(*self.noise_variance)
        return (angle if rotate < self.rotation_p else None), (variance if noisy < self.noise_p else None)

    def apply(self, image: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
        """The augmented copy of ``image`` (HWC uint8 RGB) for ``(seed, epoch, index)``.

        Rotation: about the image centre, bilinear, same size, corners filled with black (as
        torchvision's ``RandomRotation`` with its default fill). Noise: added per pixel and channel,
        rounded and clipped to 0-255, from a generator of its own so it does not shift other draws.
        """
        angle, variance = self.draw(seed, epoch, index)
        out = image
        if angle is not None:
            out = np.array(Image.fromarray(out).rotate(angle, resample=Image.BILINEAR, fillcolor=(0, 0, 0)))
        if variance is not None:
            noise = np.random.default_rng([STREAM, seed, epoch, index, 1]).normal(0.0, np.sqrt(variance), size=out.shape)
            out = np.clip(np.rint(out.astype(np.float64) + noise), 0, 255).astype(np.uint8)
        return out if out is not image else image.copy()


RECIPES: dict[str, AugmentationRecipe] = {
    "autovi-paper": AugmentationRecipe(
        name="autovi-paper",
        rotation_p=0.5,
        max_degrees=15.0,
        noise_p=0.5,
        noise_variance=(10.0, 120.0),
        source="AutoVI paper, section 6.1 / Table 11",
    ),
}


def recipe(name: str) -> AugmentationRecipe:
    """The recipe called ``name``, or a one-line :class:`ConfigError` listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"--augment {name!r} refused: known recipes are {', '.join(sorted(RECIPES))}") from None


class AugmentedImages(KeyedImages):
    """Training images seen through a recipe: the list holds epoch 0's draws; :meth:`for_epoch` any other's."""

    def __init__(self, originals: Sequence[np.ndarray], augmentation: AugmentationRecipe, seed: int) -> None:
        self.originals = list(originals)
        self.augmentation, self.seed = augmentation, seed
        paths = image_paths(originals) or [f"train/{i}" for i in range(len(self.originals))]
        super().__init__(self.for_epoch(0), paths)

    def for_epoch(self, epoch: int) -> list[np.ndarray]:
        """Every training image augmented with the draws of ``epoch``."""
        return [self.augmentation.apply(image, self.seed, epoch, i) for i, image in enumerate(self.originals)]


def epoch_images(images: Sequence[np.ndarray], epoch: int) -> Sequence[np.ndarray]:
    """What a detector trains on in ``epoch``: fresh draws when ``images`` are augmented, else ``images``."""
    if isinstance(images, AugmentedImages) and epoch != 0:
        return images.for_epoch(epoch)
    return images


def is_augmented(images: Sequence[np.ndarray]) -> bool:
    """Whether ``fit`` received augmented images (a detector then re-reads :func:`epoch_images` each epoch)."""
    return isinstance(images, AugmentedImages)


__all__ = ["RECIPES", "AugmentationRecipe", "AugmentedImages", "epoch_images", "is_augmented", "recipe"]
