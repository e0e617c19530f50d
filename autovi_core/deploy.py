"""From a benchmark to the line: ``autovi fit`` (one model from a folder of good images) and
``autovi predict`` (scores, verdicts and maps for a camera's images), around model folders
(:mod:`autovi_core.model_folder`). See docs/deploy.md.

Both take the same path as a run: images are read with :func:`autovi_core.image_io.read_rgb`
(grey replicated, alpha dropped, 16 bit scaled), handed to the detector at their own size (the
detector resizes them to its working size, as in training) and their maps come back at that size;
thresholds are the run's calibrated ones.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .dataset import KeyedImages
from .detector import Detector
from .domains import Choice, Float, Int
from .errors import AutoviError, ConfigError, DataError
from .files import IMAGE_SUFFIXES, atomic_write, is_image_file
from .image_io import read_rgb, write_float_tiff, write_png8
from .model_folder import CALIBRATION_FILE, ModelFolder, calibration_section, geometry_section, save_model_folder
from .options import DEVICE, SEED
from .progress import track
from .run_options import Window

Log = Callable[[str], None]

MAP_KINDS = ("tiff", "png", "overlay")
MAPS_CHOICE = Choice("none", *MAP_KINDS, "all")
FIT_OPTIONS = {"--seed": SEED, "--profile": Choice("paper", "fast"), "--device": DEVICE, "--holdout": Float(0.0, 1.0, high_open=True)}
PREDICT_OPTIONS = {"--maps": MAPS_CHOICE, "--batch-size": Int(1), "--device": DEVICE}
PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_CSV = "predictions.csv"
CSV_COLUMNS = ("path", "score", "verdict", "threshold", "error", "notes")


def _quiet(message: str) -> None:
    return None


# --- fit ---------------------------------------------------------------------------------------------
def training_paths(root: Path, category: str | None, registry: Any) -> tuple[list[Path], Path, dict[str, Any]]:
    """The good images to fit on: ``train/good`` of a ``folder``-layout category (``--category``, or
    ``root`` itself when it holds ``train/good``), else every image under ``root``. Returns the
    paths (sorted), the folder they are keyed relative to, and a description of the source."""
    from .datasets.layout import good_samples, unnest

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--root {root}: not a folder")
    if category is not None or (root / "train" / "good").is_dir():
        provider = registry.dataset("folder")
        if category is None:
            category = root.name
        provider.check_category(root, category)
        category_dir = root if (root / "train" / "good").is_dir() else unnest(root / category)
        paths = [s.path for s in good_samples(category_dir / "train" / "good", "train")]
        return paths, category_dir, {"layout": "folder", "root": str(root), "category": category}
    layout_categories = provider_categories(root, registry)
    if layout_categories:
        raise ConfigError(f"--root {root} holds the folder-layout categories {', '.join(layout_categories)}: choose one with --category")
    paths = folder_images(root)
    if not paths:
        raise DataError(f"--root {root}: holds no images (no {', '.join(IMAGE_SUFFIXES)} file in it or below)")
    return paths, root, {"layout": "images", "root": str(root), "category": None}


def provider_categories(root: Path, registry: Any) -> list[str]:
    try:
        return registry.dataset("folder").categories(root)
    except AutoviError:
        return []


def folder_images(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files in ``folder`` and below, sorted; hidden files and folders (and ``exclude``) skipped."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not is_image_file(path) or not path.is_file():
            continue
        if exclude is not None and _inside(path, exclude):
            continue
        found.append(path)
    return found


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def holdout_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(fit indices, held-out indices): a seeded ``fraction`` of ``n`` images held out for calibration,
    at least one when there are two or more (and ``fraction`` > 0), never all of them. The same
    permutation as a run's hold-out."""
    if n < 2 or fraction <= 0:
        return list(range(n)), []
    n_hold = min(max(1, int(round(n * fraction))), n - 1)
    held = set(np.random.default_rng(seed).permutation(n)[:n_hold].tolist())
    return [i for i in range(n) if i not in held], sorted(held)


def check_model_output(output: Path) -> None:
    """Refuse an ``--output`` that is a file, or a non-empty folder that is not a model folder."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not (output / CALIBRATION_FILE).is_file():
        raise ConfigError(f"--output {output}: a non-empty folder that is not a model folder; choose a new folder")


def predict_grouped(detector: Detector, images: Sequence[np.ndarray], keys: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scores and maps of ``images``, maps at each image's own size; images of one size in one call."""
    shapes = [tuple(int(v) for v in image.shape[:2]) for image in images]
    scores = np.zeros(len(images))
    maps: list[np.ndarray] = [np.empty(0, np.float32)] * len(images)
    for shape in dict.fromkeys(shapes):
        index = [i for i, s in enumerate(shapes) if s == shape]
        group = KeyedImages([images[i] for i in index], [keys[i] for i in index])
        prediction = detector.predict(group, output_size=shape)
        for j, i in enumerate(index):
            scores[i], maps[i] = prediction.scores[j], prediction.maps[j]
    return scores, maps


def fit_model(
    *,
    detector: str,
    root: Path,
    category: str | None,
    output: Path,
    profile: str = "fast",
    overrides: dict[str, str] | None = None,
    seed: int = 0,
    device: str = "auto",
    holdout: float = 0.1,
    registry: Any = None,
    log: Log = _quiet,
) -> Path:
    """Fit one detector on good images and write a model folder (``autovi fit``); everything is
    checked before the first image is decoded."""
    from .device import resolve_device
    from .options import check_options
    from .registry import get_registry
    from .seeding import seed_everything

    check_options(FIT_OPTIONS, {"--seed": seed, "--profile": profile, "--device": device, "--holdout": holdout})
    registry = registry or get_registry()
    cls = registry.detector_class(detector)
    own = cls.parse_overrides(overrides or {})
    cls.resolve_hparams(profile, own)
    if cls.capabilities.supervised:
        raise ConfigError(
            f"detector {detector!r} is supervised: it needs labelled defective images, and autovi fit trains on good images only; "
            "fit it with autovi run --save-models"
        )
    resolved = resolve_device(device)
    check_model_output(output)
    paths, base, source = training_paths(root, category, registry)
    fit_index, held_index = holdout_split(len(paths), holdout, seed)
    if held_index:
        log(f"holding out {len(held_index)} of {len(paths)} good images for calibration (seed {seed}, --holdout {holdout:g})")
    elif len(paths) < 2:
        log(f"only {len(paths)} image: nothing held out, so no calibrated thresholds; give autovi predict --threshold SCORE")
    else:
        log("--holdout 0: nothing held out, so no calibrated thresholds; give autovi predict --threshold SCORE")
    keys = [p.relative_to(base).as_posix() for p in paths]
    loaded = {i: read_image(paths[i])[0] for i in track(fit_index + held_index, "loading good images")}  # all read before fitting
    train = KeyedImages([loaded[i] for i in fit_index], [keys[i] for i in fit_index])

    seed_everything(seed)
    model = cls(profile, seed=seed, device=resolved, **own)
    seed_everything(seed)  # again, now that the detector may have imported torch
    log(f"fitting {detector} ({profile}) on {len(train)} images on {resolved}")
    model.fit(train)

    scores: list[float] = []
    maps: list[np.ndarray] = []
    for i in track(held_index, "calibrating"):
        score, amap = predict_grouped(model, [loaded.pop(i)], [keys[i]])
        scores.append(float(score[0]))
        maps.append(amap[0])
    calibration = calibration_section(scores, maps, [keys[i] for i in held_index])
    geometry = geometry_section([image.shape for image in train], [image.shape[:2] for image in train])
    training = {
        "command": "autovi fit",
        **source,
        "images": len(fit_index),
        "held_out": len(held_index),
        "holdout": holdout,
        "overrides": own,
    }
    return save_model_folder(output, model, calibration=calibration, geometry=geometry, training=training, registry=registry)


# --- predict -----------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """What ``autovi predict``'s IMAGES arguments found: (path, key) pairs and warnings."""

    items: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def expand_inputs(arguments: Sequence[str], exclude: Path | None = None) -> Inputs:
    """Files, folders (searched recursively) and glob patterns (``**`` included) as (path, key): the
    key is the path under the folder given (for a pattern, under its part before the first
    wildcard), or a file's name; it names the image's map files.
    A file found twice is predicted once; images under ``exclude`` (the output folder) are skipped."""
    found = Inputs()
    seen: set[Path] = set()
    used: set[str] = set()

    def add(path: Path, key: str) -> None:
        real = path.resolve()
        if real in seen:
            return
        seen.add(real)
        stem = Path(key).with_suffix("").as_posix()
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}~{n}"
        used.add(candidate)
        found.items.append((path, candidate + Path(key).suffix))

    for argument in arguments:
        path = Path(argument).expanduser()
        if any(c in argument for c in "*?[") and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(argument), recursive=True))]
            images = [m for m in matches if m.is_file() and is_image_file(m)]
            for folder in (m for m in matches if m.is_dir()):
                images += folder_images(folder, exclude)
            images = [m for m in images if exclude is None or not _inside(m, exclude)]
            if not images:
                found.warnings.append(f"{argument}: pattern matched no image")
            base = _pattern_base(argument)
            for image in images:
                add(image, _relative_key(image, base))
        elif path.is_dir():
            images = folder_images(path, exclude)
            if not images:
                found.warnings.append(f"{path}: folder holds no images")
            for image in images:
                add(image, image.relative_to(path).as_posix())
        elif path.is_file():
            add(path, path.name)
        else:
            found.warnings.append(f"{path}: no such file or folder")
    return found


def _pattern_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard (``cam/**/*.png`` -> ``cam``)."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = parts[: next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))]
    return Path(*fixed) if fixed else Path(".")


def _relative_key(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.name


MODE_NOTES = {
    "1": "1-bit image: converted to RGB",
    "L": "grayscale image: converted to RGB (grey replicated)",
    "LA": "grayscale image with alpha: alpha dropped, grey replicated to RGB",
    "P": "palette image: converted to RGB",
    "PA": "palette image with alpha: converted to RGB, alpha dropped",
    "RGBA": "RGBA image: alpha dropped",
    "RGBX": "RGBX image: padding channel dropped",
    "I;16": "16-bit grayscale image: scaled to 8 bits, converted to RGB",
    "I;16B": "16-bit grayscale image: scaled to 8 bits, converted to RGB",
    "I;16L": "16-bit grayscale image: scaled to 8 bits, converted to RGB",
    "I": "32-bit integer image: scaled to 8 bits, converted to RGB",
}


def read_image(path: Path) -> tuple[np.ndarray, list[str]]:
    """The image as the runner reads it (:func:`read_rgb`), with notes on what was converted."""
    from PIL import Image

    mode = None
    try:
        with Image.open(path) as image:
            mode = image.mode
    except Exception:  # noqa: BLE001 - read_rgb below names the file and the reason
        pass
    try:
        array = read_rgb(path)
    except AutoviError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. Pillow's decompression-bomb guard
        raise DataError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    return array, [MODE_NOTES[mode]] if mode in MODE_NOTES else []


JET = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 128, 255], [0, 255, 255], [128, 255, 128], [255, 255, 0], [255, 128, 0], [255, 0, 0], [128, 0, 0]],
    dtype=np.float64,
)
"""Colour stops (blue, through cyan, green and yellow, to dark red) of the overlay's colour scale."""


def colourise(unit: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] as (H, W, 3) float RGB through the :data:`JET` stops."""
    position = np.clip(unit, 0.0, 1.0) * (len(JET) - 1)
    low = np.floor(position).astype(int).clip(0, len(JET) - 2)
    frac = (position - low)[..., None]
    return JET[low] * (1.0 - frac) + JET[low + 1] * frac


def overlay(image: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The image with the map's colours blended over it, more opaque where the map is higher."""
    alpha = (0.15 + 0.55 * np.clip(unit, 0.0, 1.0))[..., None]
    blended = image.astype(np.float64) * (1.0 - alpha) + colourise(unit) * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_rgb_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_write(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


@dataclass
class PredictSummary:
    images: int = 0
    defective: int = 0
    good: int = 0
    errors: int = 0
    first_error: str | None = None


class _Sink:
    """``predictions.jsonl`` and ``predictions.csv``, one line per image, flushed as it is written."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl: TextIO = open(out / PREDICTIONS_JSONL, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.csv_file: TextIO = open(out / PREDICTIONS_CSV, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(CSV_COLUMNS)
        self.csv_file.flush()

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self.jsonl.flush()
        row = [record["path"], "" if record["score"] is None else repr(record["score"]), record["verdict"] or "", record["threshold"]]
        self.csv.writerow([*row, record["error"] or "", "; ".join(record["notes"])])
        self.csv_file.flush()

    def close(self) -> None:
        self.jsonl.close()
        self.csv_file.close()


@dataclass
class _Entry:
    path: Path
    key: str
    image: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    score: float | None = None
    amap: np.ndarray | None = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    return message if isinstance(exc, AutoviError) else f"{type(exc).__name__}: {message}"


def predict_folder(
    model: ModelFolder,
    inputs: Iterable[tuple[Path, str]] | Sequence[tuple[Path, str]],
    out: Path,
    *,
    threshold: float,
    maps: Sequence[str] = (),
    batch_size: int = 8,
    log: Log = _quiet,
) -> PredictSummary:
    """Predict every (path, key) of ``inputs`` in batches of ``batch_size`` images (at most that many
    decoded at once), writing ``OUT/predictions.jsonl`` and ``OUT/predictions.csv`` line by line and
    the requested ``maps`` (``tiff``, ``png``, ``overlay``) under ``OUT/<kind>/<key>``. An image that
    cannot be read or predicted gets its one-line error in its record (and through ``log``); the
    others go on."""
    items = list(inputs)
    sink = _Sink(out)
    summary = PredictSummary()
    train_sizes = model.train_sizes()
    low, high = model.calibration.get("map_min"), model.calibration.get("map_max")
    detector = model.detector
    window = Window.parse(model.crop_window()) if model.crop_window() else None

    def finish(batch: list[_Entry]) -> None:
        ready = [e for e in batch if e.image is not None]
        if ready:
            try:
                scores, amaps = predict_grouped(detector, [e.image for e in ready], [e.key for e in ready])  # type: ignore[misc]
                for e, s, m in zip(ready, scores, amaps):
                    e.score, e.amap = float(s), m
            except Exception:  # noqa: BLE001 - isolate the image at fault: predict one at a time
                for e in ready:
                    try:
                        s, m = predict_grouped(detector, [e.image], [e.key])  # type: ignore[list-item]
                        e.score, e.amap = float(s[0]), m[0]
                    except Exception as exc:  # noqa: BLE001
                        e.error = f"{e.path}: prediction failed: {_one_line(exc)}"
        for e in batch:
            if e.score is not None and not np.isfinite(e.score):
                e.error, e.score, e.amap = f"{e.path}: the detector returned a non-finite score ({e.score})", None, None
            written: dict[str, str] = {}
            if e.error is None and e.amap is not None:
                try:
                    written = _write_maps(out, e, maps, low, high)
                except (OSError, ValueError) as exc:
                    e.notes.append(f"maps not written: {exc}")
            if e.error is not None:
                log(e.error)
                summary.errors += 1
                summary.first_error = summary.first_error or e.error
            verdict = None if e.score is None else ("defective" if e.score > threshold else "good")
            if verdict == "defective":
                summary.defective += 1
            elif verdict == "good":
                summary.good += 1
            summary.images += 1
            record = {
                "path": str(e.path),
                "score": e.score,
                "verdict": verdict,
                "threshold": threshold,
                "error": e.error,
                "notes": e.notes,
                "maps": written,
            }
            sink.write(record)
            e.image = e.amap = None

    try:
        batch: list[_Entry] = []
        decoded = 0
        for path, key in track(items, "predicting", total=len(items)):
            entry = _Entry(path, key)
            try:
                entry.image, entry.notes = read_image(path)
                decoded += 1
                if window is not None and entry.image.shape[:2] != (window.height, window.width):
                    window.check_fits(entry.image.shape[:2], str(path))
                    entry.image = window.cut(entry.image)
                    entry.notes.append(f"cut to the centred {window} window the model was trained on (autovi run --crop)")
                size = entry.image.shape[:2]
                if train_sizes and size not in train_sizes:
                    trained = ", ".join(f"{w}x{h}" for h, w in train_sizes)
                    entry.notes.append(
                        f"image is {size[1]}x{size[0]}, the model was trained on {trained} images: resized by the detector "
                        f"to its working size as in training; map at {size[1]}x{size[0]}"
                    )
            except (DataError, ConfigError) as exc:
                entry.error, entry.image = str(exc), None
            batch.append(entry)
            if decoded >= batch_size:
                finish(batch)
                batch, decoded = [], 0
        finish(batch)
    finally:
        sink.close()
    return summary


def _write_maps(out: Path, entry: _Entry, kinds: Sequence[str], low: float | None, high: float | None) -> dict[str, str]:
    """Write the entry's map in the requested forms; returns {kind: path relative to ``out``}."""
    amap = entry.amap
    assert amap is not None
    written: dict[str, str] = {}
    stem = Path(entry.key).with_suffix("")
    if "tiff" in kinds:
        target = Path("tiff") / stem.with_suffix(".tiff")
        write_float_tiff(out / target, amap)
        written["tiff"] = target.as_posix()
    if "png" in kinds or "overlay" in kinds:
        if low is None or high is None:
            low_i, high_i = float(amap.min()), float(amap.max())
            entry.notes.append("no saved map normalisation (nothing held out): map scaled by its own min/max")
        else:
            low_i, high_i = float(low), float(high)
        unit = (amap.astype(np.float64) - low_i) / (high_i - low_i) if high_i > low_i else np.zeros(amap.shape)
        if "png" in kinds:
            target = Path("png") / stem.with_suffix(".png")
            write_png8(out / target, unit * 255.0)
            written["png"] = target.as_posix()
        if "overlay" in kinds and entry.image is not None:
            target = Path("overlay") / stem.with_suffix(".png")
            write_rgb_png(out / target, overlay(entry.image, unit))
            written["overlay"] = target.as_posix()
    return written


def map_kinds(choice: str) -> list[str]:
    """``--maps`` as the list of map files to write."""
    if choice == "all":
        return list(MAP_KINDS)
    return [] if choice == "none" else [choice]


__all__ = [
    "FIT_OPTIONS",
    "PREDICT_OPTIONS",
    "Inputs",
    "PredictSummary",
    "expand_inputs",
    "fit_model",
    "holdout_split",
    "map_kinds",
    "predict_folder",
    "read_image",
    "training_paths",
]
