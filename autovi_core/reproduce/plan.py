"""A recipe's grid as runnable tasks, with what each needs (weights) and how long it should take."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..experiment import Task
from ..report import metric_value
from ..run_options import check_category_options
from .recipe import Experiment, Recipe


@dataclass(frozen=True)
class Skipped:
    """An experiment of the grid that cannot run here, and why."""

    experiment: Experiment
    reason: str


@dataclass(frozen=True)
class Plan:
    tasks: list[Task]
    skipped: list[Skipped]


def build_plan(
    recipe: Recipe,
    registry: Any,
    *,
    tables: list[str],
    methods: list[str] | None,
    categories: list[str] | None,
    seeds: list[int],
    profile: str,
    dataset: str,
    root: Path | None,
    common: dict[str, Any],
) -> Plan:
    """The tasks of the chosen tables (every value checked before anything runs); experiments whose
    detector is not installed or whose window does not fit the images are skipped with the reason."""
    provider = registry.dataset(dataset)
    resolved_root = provider.resolve_root(root)
    tasks, skipped = [], []
    loaded: dict[str, Any] = {}
    for experiment in recipe.plan(tables, methods, categories):
        if experiment.method not in registry.detectors:
            hint = f"pip install autovi-plugin-{experiment.method}"
            skipped.append(Skipped(experiment, f"detector {experiment.method!r} is not installed ({hint})"))
            continue
        if experiment.category not in loaded:
            provider.check_category(resolved_root, experiment.category)
            loaded[experiment.category] = provider.load_category(resolved_root, experiment.category)
        try:
            check_category_options(loaded[experiment.category], experiment.options)
        except ConfigError as exc:
            skipped.append(Skipped(experiment, str(exc)))
            continue
        detector_cls = registry.detector_class(experiment.method)
        detector_cls.resolve_hparams(profile, experiment.overrides)  # refused here, before any experiment runs
        for seed in seeds:
            tasks.append(
                Task(
                    detector=experiment.method,
                    category=experiment.category,
                    seed=seed,
                    profile=profile,
                    dataset=dataset,
                    root=str(resolved_root),
                    overrides=dict(experiment.overrides),
                    **common,
                    **experiment.options,
                )
            )
    return Plan(tasks, skipped)


# --- what the tasks need ----------------------------------------------------------------------------
WEIGHT_FILES = {"teacher_weights": "the EfficientAD teacher", "stage1_weights": "DSR's general stage-1 VQ model"}
"""Hyperparameters naming a pretrained file other than the backbone's, and what they hold."""


def weights_needed(registry: Any, method: str, profile: str, overrides: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(what, found, where) for every pretrained file ``method`` needs under ``profile``."""
    from ..backbones.weights import locate_weights

    hparams = registry.detector_class(method).resolve_hparams(profile, overrides)
    needs = []
    if "backbone" in hparams:
        found, where = locate_weights(str(hparams["backbone"]), hparams.get("weights"))
        needs.append((f"backbone {hparams['backbone']}", found, where))
    for key, what in WEIGHT_FILES.items():
        if key in hparams:
            value = hparams[key]
            if value is None:
                needs.append((what, True, f"none given: trained in the run ({key})"))
            else:
                found = Path(str(value)).expanduser().is_file()
                needs.append((what, found, f"{value}" + ("" if found else ": no such file")))
    return needs


def expected_seconds(recipe: Recipe, records: Iterable[dict], method: str, profile: str) -> tuple[float | None, str]:
    """Expected time of one experiment of ``method``: the mean measured in ``records`` (fit plus
    prediction plus evaluation), else the paper's training time (its hardware), else unknown."""
    measured = defaultdict(list)
    for record in records:
        if record.get("status") == "ok" and record.get("profile") == profile:
            fit = metric_value(record, "timing.fit_s")
            rate = metric_value(record, "timing.predict_images_per_s")
            test = (record.get("split") or {}).get("test") or 0
            evaluate = metric_value(record, "timing.evaluate_s") or 0.0
            if fit is not None and math.isfinite(fit):
                measured[record.get("detector")].append(fit + (test / rate if rate else 0.0) + evaluate)
    if measured.get(method):
        return sum(measured[method]) / len(measured[method]), f"measured here ({len(measured[method])} experiment(s))"
    paper = recipe.paper_fit_seconds(method)
    if paper is not None:
        return paper, "the paper's training time (its GPU)"
    return None, "unknown"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


__all__ = ["Plan", "Skipped", "build_plan", "expected_seconds", "format_seconds", "weights_needed"]
