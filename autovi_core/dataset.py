"""The dataset interface: categories, samples, ground-truth channels and defect configurations.

A *dataset* (``DatasetProvider``) knows how to find categories under a root directory.
A *category* (``Category``) holds the list of samples of its splits and loads images and
ground truth lazily, decoding each file at most once per ``Category`` object.

Images always come out in the layout declared by :data:`IMAGE_LAYOUT`: ``numpy.uint8`` arrays
of shape ``(H, W, 3)`` in RGB order. Ground-truth channels come out as boolean ``(H, W)`` masks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import IMAGE_SUFFIXES, is_image_file  # noqa: F401 - IMAGE_SUFFIXES re-exported

IMAGE_LAYOUT = "HWC uint8 RGB"
"""Layout of every image handed to a detector: (height, width, 3), uint8, RGB."""


@dataclass(frozen=True)
class DefectConfig:
    """One entry of AutoVI's ``defects_config.json``.

    ``saturation_threshold`` is a float in (0, 1] when ``relative_saturation`` is true (a share of
    the defect's area) and an int number of pixels otherwise, exactly as the official evaluator
    asserts.
    """

    defect_name: str
    pixel_value: int
    saturation_threshold: float | int
    relative_saturation: bool

    def saturation_area(self, defect_area: int) -> int:
        """Number of pixels at which this defect's sPRO saturates to 1."""
        if self.relative_saturation:
            return int(self.saturation_threshold * defect_area)
        return min(int(self.saturation_threshold), defect_area)

    @classmethod
    def from_json_entry(cls, entry: object, where: str) -> DefectConfig:
        """Validate one JSON entry with the official evaluator's strictness."""
        if not isinstance(entry, dict):
            raise DataError(f"{where}: each entry must be an object, got {type(entry).__name__}")
        missing = {"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"} - set(entry)
        if missing:
            raise DataError(f"{where}: entry {entry!r} lacks key(s) {sorted(missing)}")
        name, value = entry["defect_name"], entry["pixel_value"]
        threshold, relative = entry["saturation_threshold"], entry["relative_saturation"]
        if not isinstance(name, str) or not name:
            raise DataError(f"{where}: defect_name must be a non-empty string, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise DataError(f"{where}: pixel_value of {name!r} must be an int in 1..255, got {value!r}")
        if not isinstance(relative, bool):
            raise DataError(f"{where}: relative_saturation of {name!r} must be true or false, got {relative!r}")
        if relative:
            if not isinstance(threshold, float) or not 0.0 < threshold <= 1.0:
                raise DataError(
                    f"{where}: saturation_threshold of {name!r} is relative, so it must be a float in (0, 1] "
                    f"written with a decimal point (e.g. 1.0), got {threshold!r}"
                )
        elif isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise DataError(
                f"{where}: saturation_threshold of {name!r} is absolute, so it must be a positive int number of pixels, got {threshold!r}"
            )
        return cls(name, value, threshold, relative)


WHOLE_REGION = DefectConfig("defect", 255, 1.0, True)
"""Config used for datasets without ``defects_config.json``: a mask is one region saturating at 100 %."""


def read_defects_config(path: Path) -> tuple[DefectConfig, ...]:
    """Read and validate ``defects_config.json``; pixel values must be unique."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: defects_config.json not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: must be a non-empty JSON list of defect objects")
    configs = tuple(DefectConfig.from_json_entry(e, str(path)) for e in entries)
    values = [c.pixel_value for c in configs]
    if len(set(values)) != len(values):
        raise DataError(f"{path}: pixel_value entries must be unique, got {values}")
    return configs


@dataclass(frozen=True)
class GroundTruthChannel:
    """One ground-truth channel of a test image: a mask file and, once read, its defect config.

    ``pixel_value`` selects the config; ``None`` means a plain binary mask (MVTec AD style)
    whose non-zero pixels form the defect; ``0`` means "read the value from the mask when loading"
    (AutoVI readers index paths only).
    """

    path: Path
    pixel_value: int | None = None


@dataclass(frozen=True)
class Sample:
    """One image of a category.

    ``defect_dir`` is the folder under ``test/`` (``good`` for defect-free images; always ``good``
    for training images). ``label`` is 0 for good and 1 for defective.
    """

    path: Path
    split: str
    defect_dir: str
    label: int
    channels: tuple[GroundTruthChannel, ...] = ()

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def key(self) -> str:
        """``<defect_dir>/<stem>``: the identity used for maps and image scores."""
        return f"{self.defect_dir}/{self.stem}"


class KeyedImages(list):
    """Images (:data:`IMAGE_LAYOUT` arrays) that also know where they come from.

    A plain ``list`` to everyone who does not care; ``paths[i]`` is image ``i``'s path relative to
    its category folder (e.g. ``test/scratch/003.png``). :meth:`Category.load_images` returns
    these, so detectors that must match images to side files (e.g. user-given part maps) can call
    :func:`image_paths` on what ``fit``/``predict`` receive. Slicing gives a plain list.
    """

    def __init__(self, images: Iterable[np.ndarray], paths: Iterable[str]) -> None:
        super().__init__(images)
        self.paths = list(paths)
        if len(self.paths) != len(self):
            raise ValueError(f"{len(self)} images but {len(self.paths)} paths")


def image_paths(images: Sequence[np.ndarray]) -> list[str] | None:
    """The category-relative paths of ``images`` when it is :class:`KeyedImages`, else None."""
    return list(images.paths) if isinstance(images, KeyedImages) else None


def select_images(images: Sequence[np.ndarray], index: Iterable[int]) -> list[np.ndarray]:
    """``[images[i] for i in index]``, keeping the paths when ``images`` is :class:`KeyedImages`."""
    index = list(index)
    chosen = [images[i] for i in index]
    paths = image_paths(images)
    return chosen if paths is None else KeyedImages(chosen, [paths[i] for i in index])


@dataclass
class Category:
    """A category of a dataset with its splits, loading images and masks lazily and only once."""

    dataset: str
    name: str
    root: Path
    samples: list[Sample]
    defects_config: tuple[DefectConfig, ...] = ()
    native_size: tuple[int, int] | None = None  # (height, width) when the category declares one
    has_masks: bool = True
    _images: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    # --- splits -----------------------------------------------------------------------------
    @property
    def train(self) -> list[Sample]:
        return [s for s in self.samples if s.split == "train"]

    @property
    def test(self) -> list[Sample]:
        return [s for s in self.samples if s.split == "test"]

    @property
    def defect_dirs(self) -> list[str]:
        return sorted({s.defect_dir for s in self.test if s.label == 1})

    def config_for(self, channel: GroundTruthChannel, mask_values: Iterable[int] = ()) -> DefectConfig:
        """The defect config of a channel (``WHOLE_REGION`` for plain binary masks)."""
        if channel.pixel_value is None:
            return WHOLE_REGION
        for cfg in self.defects_config:
            if cfg.pixel_value == channel.pixel_value:
                return cfg
        known = [c.pixel_value for c in self.defects_config]
        raise DataError(f"{channel.path}: pixel value {channel.pixel_value} is not in defects_config.json (known: {known})")

    # --- loading ------------------------------------------------------------------------------
    def load_image(self, sample: Sample) -> np.ndarray:
        """The sample's image as ``IMAGE_LAYOUT``; decoded once and cached on this object."""
        cached = self._images.get(sample.path)
        if cached is None:
            from .image_io import read_rgb

            cached = read_rgb(sample.path)
            if self.native_size is not None and cached.shape[:2] != self.native_size:
                raise DataError(
                    f"{sample.path}: image is {cached.shape[1]}x{cached.shape[0]} but category "
                    f"{self.name!r} images are {self.native_size[1]}x{self.native_size[0]}"
                )
            self._images[sample.path] = cached
        return cached

    def load_images(self, samples: Sequence[Sample], description: str | None = None) -> KeyedImages:
        """Load several images (with their :meth:`relative_path`), with a progress bar when ``description`` is given."""
        from .progress import track

        items = samples if description is None else track(samples, description)
        return KeyedImages([self.load_image(s) for s in items], [self.relative_path(s) for s in samples])

    def relative_path(self, sample: Sample) -> str:
        """The sample's path relative to the category folder, POSIX style (absolute when outside it)."""
        try:
            return sample.path.relative_to(self.root).as_posix()
        except ValueError:
            return sample.path.as_posix()

    def load_channels(self, sample: Sample, shape: tuple[int, int] | None = None) -> list[tuple[np.ndarray, DefectConfig]]:
        """The sample's ground-truth channels as ``(bool mask, DefectConfig)`` pairs.

        ``shape`` (the image's ``(H, W)``) is checked when given. A channel with ``pixel_value`` 0
        takes its value from the mask's non-zero pixels; any non-``None`` value must be in
        ``defects_config`` and the mask must not be empty (as the official evaluator requires).
        """
        from .image_io import read_mask

        out = []
        for channel in sample.channels:
            mask, value = read_mask(channel.path)
            resolved = channel
            if channel.pixel_value is not None:
                if value is None:
                    raise DataError(f"{channel.path}: ground-truth channel is empty (no non-zero pixel)")
                if channel.pixel_value != 0 and value != channel.pixel_value:
                    raise DataError(f"{channel.path}: mask value {value} differs from expected {channel.pixel_value}")
                resolved = GroundTruthChannel(channel.path, value)
            cfg = self.config_for(resolved)
            if shape is not None and mask.shape != tuple(shape):
                raise DataError(f"{channel.path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
            out.append((mask, cfg))
        return out

    def ground_truth_shape(self, sample: Sample) -> tuple[int, int]:
        """The (H, W) at which maps of this sample are evaluated: the image's own size."""
        if self.native_size is not None:
            return self.native_size
        from .image_io import image_size

        w, h = image_size(sample.path)
        return (h, w)

    def summary(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "test_good": sum(1 for s in self.test if s.label == 0),
            "test_defective": sum(1 for s in self.test if s.label == 1),
        }


class DatasetProvider(ABC):
    """A dataset format registered by a plugin (``autovi_register_datasets``)."""

    name: str = ""
    description: str = ""

    @abstractmethod
    def categories(self, root: Path | None) -> list[str]:
        """Category names available under ``root`` (or the provider's default location)."""

    @abstractmethod
    def load_category(self, root: Path | None, category: str) -> Category:
        """Index one category; images are not decoded here."""

    def default_root(self) -> Path | None:
        """Where the data lives when the user gives no ``--root`` (None: a root is required)."""
        return None

    def resolve_root(self, root: Path | str | None) -> Path:
        if root is None:
            root = self.default_root()
            if root is None:
                raise DataError(f"dataset {self.name!r} needs --root pointing at its files")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: dataset root of {self.name!r} is not a directory")
        return root

    def check_category(self, root: Path, category: str) -> None:
        valid = self.categories(root)
        if category not in valid:
            raise DataError(f"unknown category {category!r} for dataset {self.name!r} at {root}; valid: {', '.join(valid) or 'none found'}")


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file())
