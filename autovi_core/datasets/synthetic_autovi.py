"""The built-in ``synthetic_autovi`` dataset: a synthetic stand-in that is as hard as AutoVI, in kind.

Six categories with AutoVI's names, aspect ratios, defect types, ``defects_config.json`` saturation
rules and normal-image nuisances (several models, production drift, pose jitter, items at known
places, blur, lens flare, major lighting changes), rendered by
:mod:`autovi_core.datasets.synthetic_autovi_scenes` (its docstring says what each category imitates;
``docs/synthetic-autovi.md`` adds the tables and measured results). Written in exact AutoVI layout
(``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>/<NNN>.png``,
``defects_config.json``), generated on first use into the cache with the same atomic, marked
machinery as the ``synthetic`` dataset (:mod:`autovi_core.datasets.synthetic`) and read back through
the AutoVI reader.

Train images are the first shots of a production series and test images (good and defective,
interleaved in a seeded order) the later ones; :func:`shot_schedule` gives each image's place in the
series, on which the lighting drift depends.

Saturation thresholds (``defects_config.json``): missing items (``pipe_staple``, ``tank_screw``,
``underbody_screw``) saturate at 0.7 of the mask area; ``pipe_clip``'s defects at half the defect
area; ``engine_wiring``'s ``blue_hoop`` at an absolute pixel count, the smallest hoop seen in the
category's training images (measured on the rendered images, so it follows the image size), and its
``fastening`` at half the defect area; ``underbody_pipes``' cables and operators at the whole area.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .synthetic import GeneratedDataset, generate_atomically, save_png, write_channels, write_defects_config, write_marker
from .synthetic_autovi_scenes import (
    AUTOVI_NATIVE_SIZES,
    CATEGORY_SPECS,
    DEFAULT_SIZES,
    GENERATOR_VERSION,
    SYNTHETIC_AUTOVI_CATEGORIES,
    CategorySpec,
    DefectSpec,
    Nuisances,
    Rendered,
    image_streams,
    render,
    render_image,
)

GENERATOR = "autovi-synthetic-autovi"
"""The ``generator`` field of this dataset's markers (the ``synthetic`` dataset's is ``autovi-synthetic``)."""

MIN_HEIGHT = 48
"""Smallest image height accepted: the smallest parts (tank_screw's screw) must stay a few pixels wide."""


@dataclass(frozen=True)
class SyntheticAutoVICounts:
    """Number of images per folder: train/good, test/good, each single-defect folder, ``multiple``."""

    train: int = 60
    test_good: int = 40
    per_defect: int = 20
    multiple: int = 10


def plan(category: str, counts: SyntheticAutoVICounts) -> list[tuple[str, str, int]]:
    """(split, folder, count) of every folder of a category, in writing order."""
    spec = CATEGORY_SPECS[category]
    folders = [("train", "good", counts.train), ("test", "good", counts.test_good)]
    return folders + [("test", f, counts.multiple if f == "multiple" else counts.per_defect) for f in spec.folders]


def shot_schedule(category: str, seed: int, counts: SyntheticAutoVICounts) -> dict[tuple[str, str, int], float]:
    """Each image's place in the production series, in [0, 1], keyed by (split, folder, index).

    Training images are the first shots, in index order; the test images (good and defective) are
    the later shots, in an order drawn from ``seed``, so test goods are spread over the rest of
    the series.
    """
    train = [("train", "good", i) for i in range(counts.train)]
    test = [("test", folder, i) for split, folder, count in plan(category, counts) if split == "test" for i in range(count)]
    order = np.random.default_rng([seed, SYNTHETIC_AUTOVI_CATEGORIES.index(category), 31]).permutation(len(test))
    series = train + [test[k] for k in order]
    last = max(1, len(series) - 1)
    return {key: position / last for position, key in enumerate(series)}


def _marker(category: str, size: tuple[int, int], seed: int, counts: SyntheticAutoVICounts) -> dict[str, object]:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "category": category,
        "size": list(size),
        "seed": seed,
        "counts": asdict(counts),
    }


def write_category(target: Path, category: str, size: tuple[int, int], seed: int, counts: SyntheticAutoVICounts) -> None:
    """Render every image and mask of a category into ``target`` (a fresh folder)."""
    spec = CATEGORY_SPECS[category]
    values = {d.name: d.pixel_value for d in spec.defects}
    shots = shot_schedule(category, seed, counts)
    measured: dict[str, int] = {}
    for split, folder, count in plan(category, counts):
        for index in range(count):
            out = render(category, size=size, seed=seed, split=split, folder=folder, index=index, shot=shots[(split, folder, index)])
            stem = f"{index:03d}"
            save_png(target / split / folder / f"{stem}.png", out.image, compress_level=1)  # noisy images: level 1 is as small and faster
            write_channels(target, folder, stem, out.channels, values)
            if split == "train":
                for key, pixels in out.measures.items():
                    measured[key] = min(pixels, measured.get(key, pixels))
    entries = [d.config_entry(measured.get(d.measure) if d.measure else None) for d in spec.defects]
    write_defects_config(target, entries)
    write_marker(target, _marker(category, size, seed, counts))


def generate_category(
    root: Path,
    category: str,
    *,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    counts: SyntheticAutoVICounts | None = None,
) -> Path:
    """Generate ``<root>/<category>`` unless it is already there with the same parameters.

    ``size`` is (height, width), by default the category's reduced size (:data:`DEFAULT_SIZES`).
    Atomic and safe under concurrent generation; a folder left by another version or other
    parameters is replaced, a folder without this dataset's marker is never touched.
    """
    if category not in CATEGORY_SPECS:
        raise DataError(f"unknown synthetic_autovi category {category!r}; valid: {', '.join(SYNTHETIC_AUTOVI_CATEGORIES)}")
    shape = DEFAULT_SIZES[category] if size is None else (int(size[0]), int(size[1]))
    if min(shape) < MIN_HEIGHT:
        raise DataError(f"synthetic_autovi images must be at least {MIN_HEIGHT} pixels high and wide, got {shape[1]}x{shape[0]}")
    counts = counts or SyntheticAutoVICounts()
    if counts.train < 1:
        raise DataError("synthetic_autovi needs at least one training image")
    marker = _marker(category, shape, seed, counts)

    def write(folder: Path) -> None:
        write_category(folder, category, shape, seed, counts)

    return generate_atomically(Path(root), category, marker, write, kind="synthetic_autovi")


class SyntheticAutoVIDataset(GeneratedDataset):
    """Six generated categories in AutoVI's kind: names, geometry, defects, saturation rules, nuisances.

    ``scale=None`` renders the reduced default sizes (128 x 128 and 160 x 120); a float renders
    AutoVI's native sizes times ``scale`` (``scale=1.0``: 400 x 400 and 1000 x 750).
    """

    name = "synthetic_autovi"
    description = (
        "built-in synthetic stand-in for AutoVI: its six categories, defect types, saturation rules and nuisances "
        "(models, production lighting drift, items at known places, blur, flare), generated in AutoVI layout"
    )
    category_names = SYNTHETIC_AUTOVI_CATEGORIES
    version = GENERATOR_VERSION

    def __init__(self, *, scale: float | None = None, seed: int = 0, counts: SyntheticAutoVICounts | None = None) -> None:
        if scale is not None and scale <= 0:
            raise DataError(f"synthetic_autovi scale must be positive, got {scale}")
        self.scale = scale
        self.seed = seed
        self.counts = counts or SyntheticAutoVICounts()

    def native_size(self, category: str) -> tuple[int, int]:
        """(height, width) of the category's images at this provider's scale."""
        return CATEGORY_SPECS[category].native_size(self.scale)

    def generate(self, root: Path, category: str) -> Path:
        return generate_category(root, category, size=self.native_size(category), seed=self.seed, counts=self.counts)


__all__ = [
    "AUTOVI_NATIVE_SIZES",
    "CATEGORY_SPECS",
    "DEFAULT_SIZES",
    "GENERATOR",
    "GENERATOR_VERSION",
    "SYNTHETIC_AUTOVI_CATEGORIES",
    "CategorySpec",
    "DefectSpec",
    "Nuisances",
    "Rendered",
    "SyntheticAutoVICounts",
    "SyntheticAutoVIDataset",
    "generate_category",
    "image_streams",
    "plan",
    "render",
    "render_image",
    "shot_schedule",
    "write_category",
]
