"""The per-experiment file: what one ``autovi run`` experiment keeps beside ``results.jsonl``.

Every ok experiment of a run with an output folder writes one small JSON file,
``experiments/<dataset>/<category>/<detector>/seed<SEED>-<profile>.json`` under the run folder,
and its results.jsonl record names it in ``"experiment_file"`` (the relative path, forward
slashes). The file holds what the record's summary numbers were computed from, so a report can
redraw ROC and sPRO curves and set thresholds without rerunning anything::

    {
      "format": "autovi-experiment/1",
      "detector": str, "dataset": str, "category": str, "seed": int, "profile": str,
      "supervised": bool,
      "root": str,                        # resolved dataset root (to reload images and masks)
      "images": [{"key": "good/000", "label": 0, "score": 0.12}, ...],  # test split, in order
      "calibration_scores": [float, ...], # held-out good training images' scores ([] if none)
      "thresholds": {"0.99": t, "0.95": t, "0.9": t} | null,      # = metrics.calibrated[*].threshold
      "map_thresholds": {"0.99": t, "0.95": t, "0.9": t} | null,  # same quantiles of the calibration maps' maxima
      "map_range": {"low": float, "high": float},                 # min and max over all test maps
      "spro_curve": {"fpr": [...], "spro": [...], "mode": "exact"} | null,  # null without masks
      "maps": "maps/<detector>/<category>/seed<S>" | null         # the --save-maps folder, if saved
    }

NaN and infinities are written as ``null``. The file is written atomically (a temporary file in
the same folder, fsync, ``os.replace``), so a reader sees the old file or the new one, never half
of one; a re-run experiment (``--resume``) replaces its file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from .files import atomic_write
from .metrics.classification import TNR_LEVELS, calibrated_thresholds
from .results import _clean

FORMAT = "autovi-experiment/1"
EXPERIMENTS_DIR = "experiments"
RECORD_KEY = "experiment_file"
"""The results.jsonl record's key naming the file (absent on failed records)."""

IDENTITY = ("detector", "dataset", "category", "seed", "profile")
KEYS = (
    "format",
    *IDENTITY,
    "supervised",
    "root",
    "images",
    "calibration_scores",
    "thresholds",
    "map_thresholds",
    "map_range",
    "spro_curve",
    "maps",
)


def experiment_path(dataset: str, category: str, detector: str, seed: int, profile: str, options: Mapping[str, Any] | None = None) -> str:
    """The file's path relative to the run folder, with forward slashes (``options``: the run's
    section-6 options that are set, :func:`~autovi_core.run_options.options_of`)."""
    from .run_options import options_slug

    return f"{EXPERIMENTS_DIR}/{dataset}/{category}/{detector}/seed{int(seed)}-{profile}{options_slug(options or {})}.json"


def map_range(maps: Sequence[np.ndarray]) -> tuple[float, float]:
    """(min, max) over all maps: the range ``--save-maps`` scales the 8-bit PNGs to."""
    return min(float(np.min(m)) for m in maps), max(float(np.max(m)) for m in maps)


def build_content(
    *,
    detector: str,
    dataset: str,
    category: str,
    seed: int,
    profile: str,
    supervised: bool,
    root: str | Path,
    keys: Sequence[str],
    labels: Sequence[int],
    scores: Sequence[float],
    calibration_scores: Sequence[float] | None,
    calibration_map_maxima: Sequence[float] | None,
    test_map_range: tuple[float, float],
    spro_curve: Mapping[str, Any] | None,
    maps: str | None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The file's content (see the module docstring) from one experiment's predictions.

    ``thresholds`` are computed from ``calibration_scores`` exactly as the ``calibrated`` metric
    does and ``map_thresholds`` the same way from ``calibration_map_maxima`` (the maximum of each
    calibration image's map); both are ``None`` without calibration images.
    """
    if not len(keys) == len(labels) == len(scores):
        raise ValueError(f"{len(keys)} keys, {len(labels)} labels and {len(scores)} scores")
    cal = [] if calibration_scores is None else [float(s) for s in calibration_scores]
    cal_maxima = [] if calibration_map_maxima is None else [float(s) for s in calibration_map_maxima]
    return {
        "format": FORMAT,
        "detector": str(detector),
        "dataset": str(dataset),
        "category": str(category),
        "seed": int(seed),
        "profile": str(profile),
        "supervised": bool(supervised),
        "root": str(root),
        "images": [{"key": str(k), "label": int(y), "score": float(s)} for k, y, s in zip(keys, labels, scores)],
        "calibration_scores": cal,
        "thresholds": calibrated_thresholds(cal, TNR_LEVELS) if cal else None,
        "map_thresholds": calibrated_thresholds(cal_maxima, TNR_LEVELS) if cal_maxima else None,
        "map_range": {"low": float(test_map_range[0]), "high": float(test_map_range[1])},
        "spro_curve": None
        if spro_curve is None
        else {"fpr": [float(x) for x in spro_curve["fpr"]], "spro": [float(y) for y in spro_curve["spro"]], "mode": spro_curve["mode"]},
        "maps": maps,
        "options": dict(options or {}),
    }


def write_experiment_file(run_dir: str | Path, content: Mapping[str, Any]) -> str:
    """Write ``content`` (from :func:`build_content`) atomically under ``run_dir``; returns the
    relative path for the record's ``"experiment_file"``. An existing file is replaced."""
    missing = [k for k in KEYS if k not in content]
    if missing:
        raise ValueError(f"experiment file content lacks {', '.join(missing)}")
    relative = experiment_path(*(content[k] for k in ("dataset", "category", "detector", "seed", "profile")), content.get("options"))
    data = json.dumps(_clean(dict(content)), allow_nan=False, separators=(",", ":")).encode()
    with atomic_write(Path(run_dir) / relative) as temp, open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())  # on disk before the rename makes it the file
    return relative


class ExperimentFileRead(NamedTuple):
    """What :func:`read_experiment_file` found: the content, or ``None`` and the reason why not."""

    content: dict[str, Any] | None
    reason: str | None


def read_experiment_file(run_dir: str | Path, record: Mapping[str, Any]) -> ExperimentFileRead:
    """The experiment file a results.jsonl ``record`` names, read from the run folder ``run_dir``
    (or from the folder of the results file given instead). Never raises for a missing, damaged,
    foreign or unsafe file: returns ``(None, reason)`` then, else ``(content, None)``."""
    relative = record.get(RECORD_KEY)
    if not isinstance(relative, str) or not relative:
        return ExperimentFileRead(None, "the record names no experiment file (failed experiment or older run)")
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts or "\\" in relative:
        return ExperimentFileRead(None, f"{relative}: not a path inside the run folder")
    base = Path(run_dir)
    if base.is_file():
        base = base.parent
    path = base / relative
    try:
        content = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return ExperimentFileRead(None, f"{relative}: file not found")
    except OSError as error:
        return ExperimentFileRead(None, f"{relative}: cannot read it ({error.strerror or error})")
    except (UnicodeDecodeError, ValueError):
        return ExperimentFileRead(None, f"{relative}: damaged (not valid JSON)")
    if not isinstance(content, dict):
        return ExperimentFileRead(None, f"{relative}: damaged (not a JSON object)")
    if content.get("format") != FORMAT:
        return ExperimentFileRead(None, f"{relative}: format {content.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in KEYS if k not in content]
    if missing:
        return ExperimentFileRead(None, f"{relative}: damaged (lacks {', '.join(missing)})")
    other = [k for k in IDENTITY if k in record and record[k] != content[k]]
    if other:
        return ExperimentFileRead(None, f"{relative}: belongs to another experiment ({other[0]} {content[other[0]]!r})")
    return ExperimentFileRead(content, None)
