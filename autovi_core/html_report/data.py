"""What the HTML report is drawn from: the run's records, their experiment files, and notes on what
is missing (failed experiments, old records without an experiment file, damaged files, ...).

Nothing here draws; :mod:`.page` turns a :class:`ReportData` into the page. Per (dataset,
category, method) the *shown* experiment is the lowest seed that has a readable experiment file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..report import _column, _seed_order, latest_ok, varying_overrides
from ..results import RESULTS_FILE, load_results

LEVELS = ("0.99", "0.95", "0.9")
"""Calibration levels whose thresholds are drawn (share of held-out good images below the threshold)."""


# --------------------------------------------------------------------------- notes


class Notes:
    """What the report skipped, grouped under one heading per kind, in the order first seen."""

    MAX_ITEMS = 8

    def __init__(self) -> None:
        self._groups: dict[str, list[str]] = {}

    def add(self, heading: str, item: str | None = None) -> None:
        items = self._groups.setdefault(heading, [])
        if item is not None and item not in items:
            items.append(item)

    def lines(self) -> list[str]:
        """One line per heading: ``heading: a; b; c (+N more)``."""
        out = []
        for heading, items in self._groups.items():
            if not items:
                out.append(heading)
                continue
            shown = "; ".join(items[: self.MAX_ITEMS])
            more = f" (+{len(items) - self.MAX_ITEMS} more)" if len(items) > self.MAX_ITEMS else ""
            out.append(f"{heading}: {shown}{more}")
        return out


# --------------------------------------------------------------------------- experiment files


def read_experiment_file(run_dir: Path, record: dict) -> tuple[dict | None, str | None]:
    """The record's experiment file through :func:`autovi_core.experiment_file.read_experiment_file`
    (content, None) or (None, why it cannot be used); a file without an image list is unusable too."""
    from ..experiment_file import read_experiment_file as read

    try:
        content, reason = read(Path(run_dir), record)
    except Exception as exc:  # never stop the report for one file
        return None, f"{record.get('experiment_file')}: {type(exc).__name__}: {exc}"
    if content is not None and not isinstance(content.get("images"), list):
        return None, f"{record.get('experiment_file')}: damaged (no image list)"
    return content, (None if content is not None else str(reason or "unreadable"))


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# --------------------------------------------------------------------------- model


@dataclass
class Experiment:
    """One ok record and, when readable, its experiment file."""

    record: dict
    method: str
    file: dict | None = None
    run_dir: Path = Path(".")

    @property
    def seed(self) -> Any:
        return self.record.get("seed")

    @property
    def supervised(self) -> bool:
        return self.record.get("supervised") is True

    @property
    def label(self) -> str:
        """``detector/dataset/category/seedS [profile]``, for notes."""
        r = self.record
        return f"{r.get('detector')}/{r.get('dataset')}/{r.get('category')}/seed{r.get('seed')} [{r.get('profile')}]"

    def images(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(keys, labels, scores) of the test images with a finite score, in file order."""
        keys, labels, scores = [], [], []
        for item in (self.file or {}).get("images") or []:
            if not isinstance(item, dict):
                continue
            score = _finite(item.get("score"))
            if score is None or item.get("label") not in (0, 1) or not isinstance(item.get("key"), str):
                continue
            keys.append(item["key"])
            labels.append(int(item["label"]))
            scores.append(score)
        return keys, np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64)

    def calibration_scores(self) -> np.ndarray:
        values = [_finite(v) for v in (self.file or {}).get("calibration_scores") or []]
        return np.asarray([v for v in values if v is not None], dtype=np.float64)

    def thresholds(self) -> dict[str, float]:
        """Image-score thresholds per level: the experiment file's, else the record's calibrated ones."""
        from_file = (self.file or {}).get("thresholds")
        out: dict[str, float] = {}
        calibrated = (self.record.get("metrics") or {}).get("calibrated") or {}
        for level in LEVELS:
            value = _finite(from_file.get(level)) if isinstance(from_file, dict) else None
            if value is None and isinstance(calibrated.get(level), dict):
                value = _finite(calibrated[level].get("threshold"))
            if value is not None:
                out[level] = value
        return out

    def map_threshold(self, level: str = "0.99") -> float | None:
        thresholds = (self.file or {}).get("map_thresholds")
        return _finite(thresholds.get(level)) if isinstance(thresholds, dict) else None

    def map_range(self) -> tuple[float, float] | None:
        value = (self.file or {}).get("map_range")
        if not isinstance(value, dict):
            return None
        low, high = _finite(value.get("low")), _finite(value.get("high"))
        return (low, high) if low is not None and high is not None else None

    def spro_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(FPR, sPRO) in ascending FPR, or None when absent or malformed."""
        curve = (self.file or {}).get("spro_curve")
        if not isinstance(curve, dict):
            return None
        try:
            fpr = np.asarray(curve.get("fpr"), dtype=np.float64)
            spro = np.asarray(curve.get("spro"), dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if fpr.ndim != 1 or fpr.shape != spro.shape or len(fpr) < 2 or not (np.isfinite(fpr).all() and np.isfinite(spro).all()):
            return None
        order = np.argsort(fpr, kind="stable")
        return fpr[order], spro[order]

    def maps_dir(self) -> Path | None:
        """The folder of float maps (``<maps>/float``) named by the experiment file, if any."""
        maps = (self.file or {}).get("maps")
        return (self.run_dir / str(maps) / "float") if maps else None

    def root(self) -> str | None:
        root = (self.file or {}).get("root")
        return str(root) if root else None


@dataclass
class CategoryData:
    """The experiments of one (dataset, category), by method."""

    dataset: str
    name: str
    experiments: dict[str, list[Experiment]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.name}"

    def methods(self) -> list[str]:
        return sorted(self.experiments)

    def shown(self, method: str) -> Experiment | None:
        """The method's lowest-seed experiment with a readable file (None when it has none)."""
        with_file = [e for e in self.experiments.get(method, []) if e.file is not None]
        return with_file[0] if with_file else None

    def seeds(self, method: str) -> list[Any]:
        return [e.seed for e in self.experiments.get(method, [])]


@dataclass
class ReportData:
    """Everything the page shows."""

    run_dir: Path
    records: list[dict]
    ok: list[dict]
    methods: list[str]
    categories: list[CategoryData]
    notes: Notes
    unreadable: int = 0
    supervised: set[str] = field(default_factory=set)


def gather(run_dir: Path) -> ReportData:
    """Read ``run_dir/results.jsonl`` (or the file itself) and every ok record's experiment file."""
    run_dir = Path(run_dir)
    results = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    base = results.parent
    records, unreadable = load_results(run_dir)
    notes = Notes()
    if unreadable:
        notes.add(f"{unreadable} unreadable line(s) of {RESULTS_FILE} skipped (e.g. a half-written last line)")
    ok, _ = latest_ok(records)
    ok_keys = {_identity(r) for r in ok}
    for record in records:
        if record.get("status") != "ok" and _identity(record) not in ok_keys:
            ok_keys.add(_identity(record))  # one note per failed experiment
            error = str(record.get("error") or "no error message").strip().splitlines()
            notes.add(
                "failed experiments (not shown)",
                f"{record.get('detector')}/{record.get('dataset')}/{record.get('category')}/seed{record.get('seed')}: "
                f"{error[0][:160] if error else ''}",
            )
    several_profiles = len({str(r.get("profile")) for r in ok}) > 1
    varying = varying_overrides(ok)
    by_category: dict[tuple[str, str], CategoryData] = {}
    supervised: set[str] = set()
    for record in ok:
        method = _column(record, several_profiles, varying)
        dataset, name = str(record.get("dataset")), str(record.get("category"))
        category = by_category.setdefault((dataset, name), CategoryData(dataset, name))
        file, reason = read_experiment_file(base, record)
        experiment = Experiment(record, method, file, base)
        if file is None:
            if record.get("experiment_file"):
                notes.add("unusable experiment files (curves and pictures of these skipped)", reason)
            else:
                notes.add(
                    "records without an experiment file (results of an older autovi): only their table numbers are shown",
                    experiment.label,
                )
        category.experiments.setdefault(method, []).append(experiment)
        if experiment.supervised:
            supervised.add(method)
    for category in by_category.values():
        for experiments in category.experiments.values():
            experiments.sort(key=lambda e: _seed_order(e.seed))
    categories = [by_category[k] for k in sorted(by_category)]
    methods = sorted({m for c in categories for m in c.experiments})
    return ReportData(base, records, ok, methods, categories, notes, unreadable, supervised)


def _identity(record: dict) -> tuple[str, ...]:
    return tuple(str(record.get(k)) for k in ("detector", "dataset", "category", "seed", "profile"))


def timing_by_method(data: ReportData) -> dict[str, dict[str, list[float]]]:
    """``{method: {timing key: [finite values over its experiments]}}``, over every category."""
    out: dict[str, dict[str, list[float]]] = {}
    for category in data.categories:
        for method, experiments in category.experiments.items():
            per_key = out.setdefault(method, defaultdict(list))
            for experiment in experiments:
                timing = experiment.record.get("timing")
                for key, value in timing.items() if isinstance(timing, dict) else ():
                    number = _finite(value)
                    if number is not None:
                        per_key[key].append(number)
    return out
