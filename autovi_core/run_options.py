"""The AutoVI paper's section-6 experiments as options of a run (and keys of a :class:`~.experiment.Task`).

- ``augment``: a training augmentation recipe (:mod:`.augmentation`), e.g. ``autovi-paper``.
- ``train_images``: few-shot training, N images drawn with the seed; the same N for every method
  under a seed, and nested (the 4 images of seed s are among its 8). The calibration hold-out is
  drawn from the images left over.
- ``crop``: a ``WxH`` window around the image centre, cut identically from train and test images
  and from the ground truth (Table 12's 200 x 200 rows).

Each is recorded in the results record (``options``) and shown in report column headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .dataset import Category, GroundTruthChannel, Sample
from .errors import ConfigError, DataError

OPTION_NAMES = ("augment", "train_images", "crop")
"""The Task fields that are section-6 options, in the order they are shown."""
_CROP = re.compile(r"([1-9][0-9]*)x([1-9][0-9]*)")
_SUBSET_STREAM = 0x66657773  # the few-shot draw's own stream of the experiment seed


def options_of(source: Any) -> dict[str, Any]:
    """The options that are set (not None) on a Task or in a record's ``options``."""
    values = source.get("options") or {} if isinstance(source, Mapping) else {k: getattr(source, k) for k in OPTION_NAMES}
    return {k: values[k] for k in OPTION_NAMES if values.get(k) is not None}


def options_label(options: Mapping[str, Any]) -> str:
    """``augment=autovi-paper, train-images=8, crop=200x200`` (empty when no option is set)."""
    return ", ".join(f"{key.replace('_', '-')}={value}" for key, value in options.items())


def options_slug(options: Mapping[str, Any]) -> str:
    """A file-name suffix telling runs with different options apart (``""`` without options)."""
    return "".join(f"-{key.replace('_', '-')}-{value}" for key, value in options.items())


def check_category_options(category: Category, options: Mapping[str, Any]) -> None:
    """Refuse, before anything runs, a ``crop`` larger than ``category``'s images and
    ``train_images`` above its training set (``options``: Task fields, others ignored)."""
    from .image_io import image_size

    if options.get("crop") is not None and category.train:
        width, height = image_size(category.train[0].path)
        Window.parse(options["crop"]).check_fits(category.native_size or (height, width), f"category {category.name!r}")
    n = options.get("train_images")
    if n is not None and n > len(category.train):
        raise ConfigError(f"--train-images {n} refused: category {category.name!r} has only {len(category.train)} training images")


# --- few-shot subsets -----------------------------------------------------------------------------
def split_few_shot(train: list[Sample], n: int, holdout: float, seed: int) -> tuple[list[Sample], list[Sample], str | None]:
    """(training subset of ``n`` images, calibration hold-out, note or None).

    The subset is the first ``n`` of one seeded permutation of ``train``, so subsets are nested in
    ``n``. The hold-out is the usual share of the whole training set (as without the option), taken
    from the images left over, and capped at how many are left.
    """
    if n > len(train):
        raise ConfigError(f"--train-images {n} refused: the category has only {len(train)} training images")
    order = np.random.default_rng([_SUBSET_STREAM, seed]).permutation(len(train))
    chosen, rest = sorted(order[:n].tolist()), order[n:].tolist()
    wanted = int(round(len(train) * holdout)) if len(train) >= 10 else 0
    held = sorted(rest[:wanted])
    note = None
    if wanted and not held:
        note = f"no calibration hold-out: all {len(train)} training images are used for training"
    elif len(held) < wanted:
        note = f"calibration hold-out of {len(held)} images instead of {wanted}: only {len(rest)} left after the {n} training images"
    return [train[i] for i in chosen], [train[i] for i in held], note


# --- centre crops ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A ``width x height`` window centred in an image (offsets rounded down)."""

    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Window:
        match = _CROP.fullmatch(str(text).strip())
        if not match:
            raise ConfigError(f"--crop {text!r} refused: expected WIDTHxHEIGHT in pixels, e.g. 200x200")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    def check_fits(self, shape: tuple[int, int], where: str) -> None:
        """Refuse a window larger than the published images (it would need pixels nobody has)."""
        height, width = shape
        if self.width > width or self.height > height:
            raise ConfigError(
                f"--crop {self} refused: {where} images are {width}x{height}; a window larger than the published "
                "images needs the uncropped originals, which the dataset does not contain"
            )

    def slices(self, shape: tuple[int, int]) -> tuple[slice, slice]:
        top, left = (shape[0] - self.height) // 2, (shape[1] - self.width) // 2
        return slice(top, top + self.height), slice(left, left + self.width)

    def cut(self, array: np.ndarray) -> np.ndarray:
        rows, cols = self.slices(array.shape[:2])
        return np.ascontiguousarray(array[rows, cols])


class CroppedCategory(Category):
    """A category seen through a centred window: images, masks and map sizes all cut the same way.

    A defective test image whose every ground-truth region lies outside the window is dropped (it
    has no defect left to find); regions cut by the window keep their inside part, and relative
    saturation thresholds then apply to that part. :attr:`dropped` lists the dropped samples.
    """

    window: Window
    dropped: list[Sample]

    @classmethod
    def of(cls, category: Category, window: Window) -> CroppedCategory:
        cropped = cls(
            dataset=category.dataset,
            name=category.name,
            root=category.root,
            samples=list(category.samples),
            defects_config=category.defects_config,
            native_size=(window.height, window.width),
            has_masks=category.has_masks,
        )
        cropped.window, cropped.dropped, cropped._source = window, [], category
        if category.native_size is not None:
            window.check_fits(category.native_size, f"category {category.name!r}")
        kept = []
        for sample in cropped.samples:
            channels = cropped._inside(sample) if sample.label == 1 and category.has_masks else sample.channels
            if sample.label == 1 and category.has_masks and not channels:
                cropped.dropped.append(sample)
            else:
                kept.append(replace(sample, channels=tuple(channels)))
        cropped.samples = kept
        return cropped

    def _inside(self, sample: Sample) -> list[GroundTruthChannel]:
        """The sample's channels that keep at least one pixel inside the window."""
        inside = []
        for (mask, _), channel in zip(self._source.load_channels(sample), sample.channels):
            if self.window.cut(mask).any():
                inside.append(channel)
        return inside

    def load_image(self, sample: Sample) -> np.ndarray:
        cached = self._images.get(sample.path)
        if cached is None:
            full = self._source.load_image(sample)
            self._source._images.pop(sample.path, None)  # keep only the window in memory
            self.window.check_fits(full.shape[:2], f"{sample.path}:")
            cached = self._images[sample.path] = self.window.cut(full)
        return cached

    def load_channels(self, sample: Sample, shape: tuple[int, int] | None = None) -> list[tuple[np.ndarray, Any]]:
        channels = [(self.window.cut(mask), config) for mask, config in self._source.load_channels(sample)]
        for (mask, _), channel in zip(channels, sample.channels):
            if shape is not None and mask.shape != tuple(shape):
                raise DataError(f"{channel.path}: cropped mask is {mask.shape[1]}x{mask.shape[0]}, its image {shape[1]}x{shape[0]}")
        return channels


__all__ = [
    "OPTION_NAMES",
    "CroppedCategory",
    "Window",
    "check_category_options",
    "options_label",
    "options_of",
    "options_slug",
    "split_few_shot",
]
