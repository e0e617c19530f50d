"""The picture sections of a category: the heatmap grid (AutoVI paper, Fig. 3) and the failure galleries.

Which images are shown is decided from the experiment files alone (:func:`choose_grid_keys`,
:func:`failure_keys`); then each needed test image, mask and map file is read once, reduced to a
thumbnail and written as PNG, so a picture shown in both the grid and a gallery is one file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..run_options import Window, options_of
from . import pictures
from .data import CategoryData, Experiment, Notes

GOOD = "good"
MAP_SUFFIXES = (".tiff", ".tif")
SAVE_MAPS_HINT = "autovi run ... --save-maps"


def defect_dir(key: str) -> str:
    return key.split("/", 1)[0]


def choose_grid_keys(key_sets: Sequence[Iterable[str]], per_dir: int = 2) -> list[str]:
    """The grid's images: per defect folder (``good`` first, then by name) the first ``per_dir`` keys
    in sorted order, preferring keys that every method was tested on."""
    sets = [set(keys) for keys in key_sets]
    if not sets:
        return []
    common = set.intersection(*sets)
    by_dir: dict[str, list[str]] = defaultdict(list)
    for key in set.union(*sets):
        by_dir[defect_dir(key)].append(key)
    chosen: list[str] = []
    for folder in sorted(by_dir, key=lambda d: (d != GOOD, d)):
        chosen += sorted(by_dir[folder], key=lambda k: (k not in common, k))[:per_dir]
    return chosen


def failure_keys(keys: Sequence[str], labels: np.ndarray, scores: np.ndarray, n: int = 4) -> tuple[list[str], list[str]]:
    """(highest-scored good keys, lowest-scored defective keys), ``n`` each; ties broken by key."""
    good = sorted((i for i in range(len(keys)) if labels[i] == 0), key=lambda i: (-scores[i], keys[i]))
    defective = sorted((i for i in range(len(keys)) if labels[i] == 1), key=lambda i: (scores[i], keys[i]))
    return [keys[i] for i in good[:n]], [keys[i] for i in defective[:n]]


def slug(text: str) -> str:
    """A file-name-safe form of ``text`` (letters, digits, ``-``, ``_``, ``.``)."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)
    return out.strip(".") or "_"


# --------------------------------------------------------------------------- results


@dataclass
class Picture:
    """One picture on the page (``src`` relative to the report folder; None: nothing to show)."""

    src: str | None
    alt: str
    caption: str = ""


@dataclass
class MethodScale:
    """How a method's maps are coloured: its fixed range, the colour bar and the contour threshold."""

    method: str
    supervised: bool
    seed: Any
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    bar: Picture | None = None
    has_maps: bool = False
    why_not: str = ""


@dataclass
class GridRow:
    key: str
    image: Picture
    ground_truth: Picture
    maps: dict[str, Picture] = field(default_factory=dict)


@dataclass
class Grid:
    scales: list[MethodScale] = field(default_factory=list)
    rows: list[GridRow] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass
class GalleryItem:
    key: str
    label: int
    score: float
    image: Picture
    overlay: Picture | None


@dataclass
class Gallery:
    method: str
    supervised: bool
    seed: Any
    false_alarms: list[GalleryItem]
    misses: list[GalleryItem]
    message: str = ""


# --------------------------------------------------------------------------- building


class _Category:
    """The dataset category behind a report category, loaded once (None with a reason when unavailable)."""

    def __init__(self, category: CategoryData, experiments: list[Experiment]) -> None:
        self.samples: dict[str, Any] = {}
        self.loaded: Any = None
        self.reason = ""
        roots = [e.root() for e in experiments if e.root()]
        if not roots:
            self.reason = "the experiment files do not name the dataset root"
            return
        root = Path(roots[0])
        if not root.is_dir():
            self.reason = f"the dataset root {root} is gone"
            return
        try:
            from ..registry import get_registry

            provider = get_registry().dataset(category.dataset)
            self.loaded = provider.load_category(root, category.name)
        except Exception as exc:  # a missing plugin or a changed folder: show the rest
            self.reason = f"cannot read category {category.name!r} of {category.dataset!r} at {root} ({exc})"
            return
        self.samples = {s.key: s for s in self.loaded.test}


class PictureWriter:
    """Writes the thumbnails of one category under ``out_dir / rel``; each file read at most once."""

    def __init__(self, out_dir: Path, rel: str, notes: Notes, lut: np.ndarray, size: int = pictures.THUMB) -> None:
        self.out_dir, self.rel, self.notes, self.lut, self.size = out_dir, rel, notes, lut, size
        self._images: dict[tuple[str, str], tuple[Picture, Picture, np.ndarray] | None] = {}
        self._maps: dict[tuple[str, str], Picture | None] = {}

    def _write(self, rgb: np.ndarray, name: str) -> str:
        src = f"{self.rel}/{name}"
        pictures.save_png(rgb, self.out_dir / src)
        return src

    def image(self, dataset: _Category, key: str, window: Window | None = None) -> tuple[Picture, Picture, np.ndarray] | None:
        """(plain picture, picture with the ground-truth outline, the plain thumbnail) of a test image,
        or of its centred ``window`` (an experiment run with ``--crop``: its maps cover that window)."""
        cache_key = (str(window or ""), key)
        if cache_key in self._images:
            return self._images[cache_key]
        result = None
        sample = dataset.samples.get(key)
        if sample is None:
            if dataset.loaded is not None:
                self.notes.add("test images named by experiment files but not in the dataset", f"{dataset.loaded.name}/{key}")
        else:
            try:
                from ..image_io import read_rgb

                full = read_rgb(sample.path)
                if window is not None:
                    full = window.cut(full)
                size = pictures.thumb_size(full.shape[:2], self.size)
                thumb = pictures.thumbnail_rgb(full, size)
                del full
                name = slug(key) + (f"-{window}" if window else "")
                within = f" (centred {window} window)" if window else ""
                plain = Picture(self._write(thumb, f"images/{name}.png"), f"test image {key}{within}", key)
                outline = Picture(plain.src, f"test image {key}{within}: good, no defect outline", "good: no defect")
                if sample.channels:
                    mask = np.zeros((size[1], size[0]), dtype=bool)
                    for channel, _ in dataset.loaded.load_channels(sample):
                        mask |= pictures.thumbnail_mask(window.cut(channel) if window else channel, size)
                    drawn = pictures.draw(thumb, pictures.boundary(mask, 2), pictures.GT_COLOUR)
                    src = self._write(drawn, f"ground_truth/{name}.png")
                    outline = Picture(src, f"ground truth of {key}{within} outlined in green", key)
                result = (plain, outline, thumb)
            except Exception as exc:
                self.notes.add("test images or masks that could not be read", f"{sample.path}: {exc}")
        self._images[cache_key] = result
        return result

    def overlay(self, scale: MethodScale, maps_dir: Path, key: str, image: np.ndarray | None) -> Picture | None:
        """The method's map of ``key`` over the image thumbnail (or alone), with its threshold contour."""
        cache_key = (scale.method, key)
        if cache_key in self._maps:
            return self._maps[cache_key]
        result = None
        folder, _, stem = key.partition("/")
        path = next((maps_dir / folder / f"{stem}{s}" for s in MAP_SUFFIXES if (maps_dir / folder / f"{stem}{s}").is_file()), None)
        if path is None:
            self.notes.add("map files missing", f"{maps_dir / folder / stem}.tiff")
        else:
            try:
                from ..image_io import read_map

                amap = read_map(path).astype(np.float32, copy=False)
                size = (image.shape[1], image.shape[0]) if image is not None else pictures.thumb_size(amap.shape, self.size)
                small = pictures.thumbnail_map(amap, size)
                contour = None
                if scale.threshold is not None:
                    contour = pictures.boundary(pictures.thumbnail_mask(amap > scale.threshold, size), 1)
                del amap
                if image is None:
                    rgb = pictures.colourise(small, scale.low, scale.high, self.lut)
                else:
                    rgb = pictures.overlay(image, small, scale.low, scale.high, self.lut)
                if contour is not None:
                    rgb = pictures.draw(rgb, contour, pictures.CONTOUR_COLOUR)
                src = self._write(rgb, f"maps/{slug(scale.method)}/{slug(key)}.png")
                what = "map over the image" if image is not None else "map (dataset image unavailable)"
                contour_text = "" if scale.threshold is None else f", white contour at its 99 % threshold {scale.threshold:.4g}"
                result = Picture(src, f"{scale.method} anomaly {what} for {key}{contour_text}", key)
            except Exception as exc:
                self.notes.add("map files that could not be read", f"{path}: {exc}")
        self._maps[cache_key] = result
        return result

    def bar(self, scale: MethodScale) -> Picture:
        src = self._write(pictures.colour_bar(self.lut, self.size, 10), f"scales/{slug(scale.method)}.png")
        return Picture(src, f"colour scale of {scale.method}: {scale.low:.4g} (blue) to {scale.high:.4g} (red)")


def build_pictures(
    category: CategoryData, out_dir: Path, rel: str, notes: Notes, lut: np.ndarray, *, per_dir: int = 2, per_gallery: int = 4
) -> tuple[Grid, list[Gallery]]:
    """Write the category's thumbnails and describe the grid and the galleries."""
    shown = {m: e for m in category.methods() if (e := category.shown(m)) is not None}
    grid = Grid()
    if not shown:
        grid.messages.append("No method of this category has a readable experiment file, so no pictures can be shown.")
        return grid, []
    images = {m: e.images() for m, e in shown.items()}
    dataset = _Category(category, list(shown.values()))
    if dataset.loaded is None:
        grid.messages.append(f"Pictures skipped: {dataset.reason}.")
        notes.add("pictures skipped", f"{category.label}: {dataset.reason}")
    writer = PictureWriter(out_dir, rel, notes, lut)

    for method, experiment in shown.items():
        scale = MethodScale(method, experiment.supervised, experiment.seed, threshold=experiment.map_threshold("0.99"))
        maps_dir = experiment.maps_dir()
        value_range = experiment.map_range()
        if maps_dir is None:
            scale.why_not = f"maps not saved (run with {SAVE_MAPS_HINT})"
        elif not maps_dir.is_dir():
            scale.why_not = f"maps folder {maps_dir} is missing"
            notes.add("maps folders missing (their pictures skipped)", str(maps_dir))
        elif value_range is None:
            scale.why_not = "the experiment file has no map_range"
        else:
            scale.low, scale.high, scale.has_maps = value_range[0], value_range[1], True
            scale.bar = writer.bar(scale)
        grid.scales.append(scale)
    if not any(s.has_maps for s in grid.scales):
        grid.messages.append(f"No saved anomaly maps: run the experiments with `{SAVE_MAPS_HINT}` to see them here.")

    scales = {s.method: s for s in grid.scales}
    windows = {m: Window.parse(crop) if (crop := options_of(e.record).get("crop")) else None for m, e in shown.items()}

    def overlay_for(method: str, key: str) -> Picture | None:
        scale = scales[method]
        if not scale.has_maps or key not in images[method][0]:
            return None
        base = writer.image(dataset, key, windows[method]) if dataset.loaded is not None else None
        return writer.overlay(scale, shown[method].maps_dir(), key, base[2] if base else None)

    if dataset.loaded is not None or any(s.has_maps for s in grid.scales):
        for key in choose_grid_keys([keys for keys, _, _ in images.values()], per_dir):
            base = writer.image(dataset, key) if dataset.loaded is not None else None
            missing = Picture(None, f"test image {key} unavailable", "image unavailable")
            row = GridRow(key, base[0] if base else missing, base[1] if base else missing)
            for method in shown:
                if scales[method].has_maps:
                    tested = key in images[method][0]
                    row.maps[method] = overlay_for(method, key) or Picture(
                        None, f"no {method} map for {key}", "map unavailable" if tested else "not in this method's test set"
                    )
            grid.rows.append(row)

    galleries = []
    for method, experiment in shown.items():
        keys, labels, scores = images[method]
        score_of = dict(zip(keys, scores.tolist()))
        label_of = dict(zip(keys, labels.tolist()))
        false_alarms, misses = failure_keys(keys, labels, scores, per_gallery)
        items: dict[str, list[GalleryItem]] = {"fa": [], "miss": []}
        for group, chosen in (("fa", false_alarms), ("miss", misses)):
            for key in chosen:
                base = writer.image(dataset, key, windows[method]) if dataset.loaded is not None else None
                image = base[1] if base else Picture(None, f"test image {key} unavailable", "image unavailable")
                items[group].append(GalleryItem(key, label_of[key], score_of[key], image, overlay_for(method, key)))
        message = "" if scales[method].has_maps else scales[method].why_not
        galleries.append(Gallery(method, experiment.supervised, experiment.seed, items["fa"], items["miss"], message))
    return grid, galleries
