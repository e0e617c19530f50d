"""Model folders: a fitted detector together with the calibration it is used with on the line.

A model folder is what ``autovi fit`` and ``autovi run --save-models`` write and what
``autovi predict`` reads::

    <model>/config.json        the detector's own save (hyperparameters, provenance, versions)
    <model>/state.npz          its learned arrays (no pickle)
    <model>/...                files a detector writes in ``save_extra`` (composed detectors)
    <model>/calibration.json   thresholds, map normalisation, geometry, versions (this module)

``calibration.json`` holds the image-score thresholds at the 99/95/90 % levels, set on held-out
good images exactly as a run calibrates (``np.quantile(scores, level, method="higher")``; an
image is flagged when its score is strictly greater), the held-out scores themselves, the
normalisation used for 8-bit maps (min/max over the held-out images' maps) with pixel thresholds
(the same quantiles of the maps' maxima), the input geometry the detector was trained at, the
autovi-core version and contract API, the plugin (name, distribution, version) and the provenance.

:func:`load_model_folder` refuses, with one line naming the folder, a folder from another API
major version, a detector whose plugin is not installed (naming the distribution to install), and
a missing or damaged file.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detector import Detector, json_default
from .errors import ConfigError, DataError, PluginError
from .files import atomic_write

CALIBRATION_FILE = "calibration.json"
FORMAT = "autovi-model"
FORMAT_VERSION = 1
LEVELS = (0.99, 0.95, 0.9)
"""The calibrated levels: a threshold at level q lets about (1 - q) of good parts be flagged."""
THRESHOLD_RULE = 'flagged when score > threshold; threshold = numpy.quantile(held-out good scores, level, method="higher")'


def level_key(level: float) -> str:
    """``0.9`` -> ``"0.9"``: the key of a level in thresholds dicts (as results.jsonl's ``calibrated``)."""
    return str(float(level))


def quantile_thresholds(values: Sequence[float] | np.ndarray) -> dict[str, float] | None:
    """Per level, ``np.quantile(values, level, method="higher")``; None without values."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        return None
    return {level_key(level): float(np.quantile(array, level, method="higher")) for level in LEVELS}


def calibration_section(scores: Sequence[float] | np.ndarray, maps: Sequence[np.ndarray], paths: Sequence[str] = ()) -> dict[str, Any]:
    """The ``calibration`` object of ``calibration.json`` from the held-out good images' scores and maps."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    maxima = [float(np.max(m)) for m in maps]
    return {
        "images": int(scores.size),
        "paths": list(paths),
        "scores": [float(s) for s in scores],
        "thresholds": quantile_thresholds(scores),
        "rule": THRESHOLD_RULE,
        "map_min": float(min(float(np.min(m)) for m in maps)) if maps else None,
        "map_max": float(max(maxima)) if maps else None,
        "map_maxima": maxima,
        "pixel_thresholds": quantile_thresholds(maxima),
    }


def geometry_section(train_shapes: Sequence[tuple[int, ...]], output_shapes: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """The input geometry: every training image size (H, W) with its count, the most common one,
    and the map size (H, W) the detector was asked for (the run's ``output_size``)."""
    sizes = Counter((int(s[0]), int(s[1])) for s in train_shapes)
    outputs = Counter((int(s[0]), int(s[1])) for s in output_shapes)
    common = sizes.most_common(1)[0][0] if sizes else None
    output = outputs.most_common(1)[0][0] if outputs else common
    return {
        "image_size": list(common) if common else None,
        "train_sizes": [{"size": list(size), "images": n} for size, n in sorted(sizes.items())],
        "output_size": list(output) if output else None,
        "maps_at": "each image's own size (H, W), as in a run",
    }


def save_model_folder(
    path: str | os.PathLike[str],
    detector: Detector,
    *,
    calibration: dict[str, Any],
    geometry: dict[str, Any],
    training: dict[str, Any],
    registry: Any = None,
) -> Path:
    """Write ``detector`` (its own :meth:`~autovi_core.detector.Detector.save`) and ``calibration.json``
    into the folder ``path``, atomically: the folder appears whole or not at all."""
    from . import API_VERSION
    from .plugins import core_version
    from .registry import get_registry

    registry = registry or get_registry()
    target = Path(path)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "detector": detector.name,
        "profile": detector.profile,
        "seed": detector.seed,
        "plugin": {
            "name": detector.name,
            "distribution": registry.distribution_of("detector", detector.name),
            "version": registry.version_of("detector", detector.name),
        },
        "autovi_core": core_version(),
        "api_version": API_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "provenance": dict(detector.provenance),
        "geometry": geometry,
        "training": training,
        "calibration": calibration,
    }
    text = json.dumps(info, indent=2, default=json_default, allow_nan=False)
    with atomic_write(target) as tmp:
        detector.save(tmp)
        (tmp / CALIBRATION_FILE).write_text(text + "\n", encoding="utf-8")
    return target


@dataclass
class ModelFolder:
    """A loaded model folder: the detector, its ``calibration.json`` and notes about the loading."""

    path: Path
    detector: Detector
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def calibration(self) -> dict[str, Any]:
        return self.info.get("calibration") or {}

    @property
    def geometry(self) -> dict[str, Any]:
        return self.info.get("geometry") or {}

    def crop_window(self) -> str | None:
        """The ``--crop WxH`` window the model was trained and calibrated on (``autovi run --crop``), if any."""
        options = (self.info.get("training") or {}).get("options") or {}
        return options.get("crop")

    def train_sizes(self) -> list[tuple[int, int]]:
        """The (H, W) sizes of the training images."""
        return [(int(e["size"][0]), int(e["size"][1])) for e in self.geometry.get("train_sizes") or []]

    def threshold(self, choice: str) -> tuple[float, str]:
        """``--threshold`` as (value, description): a calibrated level (``0.99``, ``0.95``, ``0.9``,
        also written ``99%``) or any other number, taken as an image-score threshold."""
        text = str(choice).strip()
        level = _level_of(text)
        if level is not None:
            thresholds = self.calibration.get("thresholds")
            if not thresholds or level_key(level) not in thresholds:
                raise ConfigError(
                    f"--threshold {text}: {self.path} has no calibrated thresholds (no good image was held out when it was "
                    "fitted); give a score threshold, e.g. --threshold 1.5, or refit with --holdout"
                )
            return float(
                thresholds[level_key(level)]
            ), f"{level:.0%} level, calibrated on {self.calibration.get('images', 0)} good image(s)"
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--threshold {text!r} refused: expects 0.99, 0.95, 0.9 (calibrated levels) or a score threshold") from None
        if not np.isfinite(value):
            raise ConfigError(f"--threshold {text!r} refused: expects a finite number")
        return value, "score threshold given on the command line"


def _level_of(text: str) -> float | None:
    for level in LEVELS:
        if text in (level_key(level), f"{level * 100:g}%"):
            return level
    return None


def load_model_folder(path: str | os.PathLike[str], *, device: str = "cpu", registry: Any = None) -> ModelFolder:
    """Read a model folder written by :func:`save_model_folder`.

    A missing folder or file, a damaged ``calibration.json``/``config.json``/``state.npz``, a model
    saved under another contract major version, and a detector whose plugin is not installed (or is
    broken) are one-line :class:`~autovi_core.errors.DataError` / :class:`PluginError` s naming the folder.
    """
    from . import API_VERSION
    from .plugins import core_version
    from .registry import get_registry

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: model folder not found" if not path.exists() else f"{path}: not a model folder (a file)")
    info_path = path / CALIBRATION_FILE
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            f"{info_path}: not found; {path} is not a model folder (written by autovi fit or autovi run --save-models)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{info_path}: damaged ({exc})") from None
    missing = [key for key in ("detector", "api_version", "calibration", "geometry") if not isinstance(info, dict) or key not in info]
    if missing:
        raise DataError(f"{info_path}: not a model's calibration file (no {', '.join(missing)})")
    saved_api = str(info["api_version"])
    if saved_api.split(".")[0] != API_VERSION.split(".")[0]:
        raise DataError(
            f"{path}: saved by autovi-core {info.get('autovi_core', '?')} (contract API {saved_api}); this autovi-core "
            f"{core_version()} speaks API {API_VERSION}: refit the model with this version, "
            f"or predict with autovi-core {saved_api.split('.')[0]}.x"
        )
    registry = registry or get_registry()
    name = str(info["detector"])
    plugin = info.get("plugin") or {}
    distribution = plugin.get("distribution") or f"autovi-plugin-{name.replace('_', '-')}"
    if distribution in ("?", "autovi-core"):
        distribution = f"autovi-plugin-{name.replace('_', '-')}"
    version = plugin.get("version")
    if name not in registry.detectors:
        for record in registry.records:
            if record.name == name and record.status != "ok":
                raise PluginError(
                    f"{path}: its detector {name!r} comes from {distribution}, which is {record.status} here "
                    f"({record.distribution} {record.version}: {record.error}); see autovi list"
                )
        wanted = f"{distribution}=={version}" if version and version != "?" else distribution
        raise PluginError(f"{path}: its detector {name!r} is not installed: pip install {wanted}")
    detector = registry.detector_class(name).load(path, device=device)
    notes = []
    installed = registry.version_of("detector", name)
    if version and installed and version != installed:
        notes.append(f"{path}: fitted with {distribution} {version}, predicting with {installed}")
    calibration = info["calibration"]
    if not isinstance(calibration, dict) or not isinstance(info["geometry"], dict):
        raise DataError(f"{info_path}: damaged (calibration and geometry must be objects)")
    thresholds = calibration.get("thresholds")
    if thresholds is not None and (
        not isinstance(thresholds, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in thresholds.values())
    ):
        raise DataError(f"{info_path}: damaged (thresholds must map levels to numbers)")
    return ModelFolder(path=path, detector=detector, info=info, notes=notes)


def save_run_model(task: Any, detector: Detector, data: Any, calibration: dict[str, Any], registry: Any) -> str:
    """``autovi run --save-models``: write the experiment's fitted detector with the calibration the
    run evaluated it with (``calibration``, from its own predictions of the hold-out) into
    ``DIR/models/<dataset>/<category>/<detector>/seed<S>-<profile>/``; returns that folder relative
    to ``DIR`` (the record's ``model_dir``)."""
    from .run_options import options_of, options_slug

    category = data.category
    variant = f"seed{task.seed}-{task.profile}{options_slug(options_of(task))}"
    relative = Path("models") / task.dataset / task.category / task.detector / variant
    geometry = geometry_section([image.shape for image in data.train_images], [category.ground_truth_shape(s) for s in data.train])
    training = {
        "command": "autovi run --save-models",
        "dataset": task.dataset,
        "root": task.root,
        "category": task.category,
        "images": len(data.train),
        "held_out": len(data.calibration),
        "holdout": task.calibration_holdout,
        "labelled_defects": len(data.labelled_samples),
        "overrides": dict(task.overrides),
        "options": options_of(task),
    }
    save_model_folder(
        Path(task.output_dir or ".") / relative, detector, calibration=calibration, geometry=geometry, training=training, registry=registry
    )
    return relative.as_posix()


__all__ = [
    "CALIBRATION_FILE",
    "LEVELS",
    "ModelFolder",
    "calibration_section",
    "geometry_section",
    "load_model_folder",
    "quantile_thresholds",
    "save_model_folder",
    "save_run_model",
]
