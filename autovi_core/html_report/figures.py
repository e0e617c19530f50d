"""The report's plots, drawn once each with matplotlib's Agg backend and saved as PNG.

Each ``draw_*`` function takes plain data (built by the ``*_data`` functions here or by
:mod:`.curves`), so that what a figure shows can be tested without looking at pixels; each
closes its figure. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .curves import ScoreCurves
from .data import LEVELS, Experiment

SPRO_LIMIT = 0.05
"""The FPR limit up to which the sPRO curve is integrated for the headline AUsPRO."""
DPI = 100
LEVEL_STYLES = {"0.99": ":", "0.95": "--", "0.9": "-."}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def method_colours(methods: list[str]) -> dict[str, tuple[float, ...]]:
    """One fixed colour per method, the same in every figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: tuple(cmap(i % cmap.N)) for i, m in enumerate(methods)}


def _line_style(supervised: bool) -> str:
    return "--" if supervised else "-"


def _save(fig: Any, path: Path) -> Path:
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- ROC / PR


def draw_roc_pr(curves: list[ScoreCurves], colours: dict[str, Any], path: Path) -> Path:
    """ROC (left) and precision-recall (right) curves of every method."""
    plt = pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    for c in curves:
        style = {"color": colours.get(c.method), "linestyle": _line_style(c.supervised), "linewidth": 1.4}
        roc.plot(c.fpr, c.tpr, label=f"{c.method} (AUROC {c.auroc * 100:.1f})", drawstyle="default", **style)
        pr.plot(c.recall, c.precision, label=f"{c.method} (AP {c.ap * 100:.1f})", drawstyle="steps-post", **style)
    roc.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
    if curves:
        pr.axhline(curves[0].prevalence, color="0.6", linewidth=0.8, linestyle=":")
    roc.set(xlabel="false positive rate (good images flagged)", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall")
    for axis in (roc, pr):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right" if axis is roc else "lower left")
    return _save(fig, path)


# --------------------------------------------------------------------------- sPRO


@dataclass(frozen=True)
class SproCurve:
    method: str
    supervised: bool
    fpr: np.ndarray
    spro: np.ndarray
    auc_limit: float | None  # the record's AUsPRO@0.05, normalised to [0, 1]


def spro_data(experiment: Experiment) -> SproCurve | None:
    curve = experiment.spro_curve()
    if curve is None:
        return None
    auc = ((experiment.record.get("metrics") or {}).get("auc_spro") or {}).get(str(SPRO_LIMIT))
    auc = float(auc) if isinstance(auc, (int, float)) and math.isfinite(auc) else None
    return SproCurve(experiment.method, experiment.supervised, curve[0], curve[1], auc)


def draw_spro(curves: list[SproCurve], colours: dict[str, Any], path: Path, limit: float = SPRO_LIMIT) -> Path:
    """sPRO against FPR: the whole curve (left) and up to 2x the integration limit (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.22)
    for axis, right in zip(axes, (1.0, 2 * limit)):
        for c in curves:
            label = c.method + (f" (AUsPRO@{limit:g} {c.auc_limit * 100:.1f})" if c.auc_limit is not None else "")
            axis.plot(c.fpr, c.spro, color=colours.get(c.method), linestyle=_line_style(c.supervised), linewidth=1.4, label=label)
        axis.axvline(limit, color="black", linewidth=1.0, linestyle="--", label=f"integration limit FPR = {limit:g}")
        axis.set(xlabel="false positive rate (pixels)", ylabel="sPRO", xlim=(0, right), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    axes[0].set_title("sPRO curve")
    axes[1].set_title(f"zoom: FPR up to {2 * limit:g}")
    axes[1].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


# --------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class ScoreHistogram:
    """Test scores of good and defective images, held-out good scores, and the thresholds drawn."""

    method: str
    supervised: bool
    seed: Any
    good: np.ndarray
    defective: np.ndarray
    calibration: np.ndarray
    thresholds: dict[str, float]


def histogram_data(experiment: Experiment) -> ScoreHistogram | None:
    _, labels, scores = experiment.images()
    if len(scores) == 0:
        return None
    return ScoreHistogram(
        method=experiment.method,
        supervised=experiment.supervised,
        seed=experiment.seed,
        good=scores[labels == 0],
        defective=scores[labels == 1],
        calibration=experiment.calibration_scores(),
        thresholds=experiment.thresholds(),
    )


def draw_histograms(histograms: list[ScoreHistogram], path: Path) -> Path:
    """One panel per method: good vs defective test scores, calibrated thresholds as vertical lines."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(histograms))
    nrows = math.ceil(len(histograms) / ncols)
    first = histograms[0]
    entries = 2 + bool(len(first.calibration)) + len(first.thresholds)
    legend_cols = min(entries, 2 * ncols)  # about two legend entries fit across one 3.6-inch panel
    legend_height = 0.2 * math.ceil(entries / legend_cols)
    height = 2.5 * nrows + 0.4 + legend_height
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, height), squeeze=False)
    top = 1 - (0.55 + legend_height) / height
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.55 / height + 0.06 / nrows, top=top, hspace=0.55, wspace=0.25)
    for axis in axes.flat[len(histograms) :]:
        axis.set_visible(False)
    for axis, h in zip(axes.flat, histograms):
        values = np.concatenate([h.good, h.defective, h.calibration, np.asarray(list(h.thresholds.values()))])
        low, high = float(values.min()), float(values.max())
        bins = np.linspace(low, high if high > low else low + 1.0, 31)
        # one polygon per histogram ("step" types), not one patch per bar: drawing stays fast
        axis.hist(h.good, bins=bins, histtype="stepfilled", color="tab:green", alpha=0.5, label="good test images")
        axis.hist(h.defective, bins=bins, histtype="stepfilled", color="tab:red", alpha=0.5, label="defective test images")
        if len(h.calibration):
            axis.hist(h.calibration, bins=bins, histtype="step", color="0.25", linewidth=1.0, label="held-out good (calibration)")
        for level, threshold in h.thresholds.items():
            axis.axvline(
                threshold, color="black", linestyle=LEVEL_STYLES.get(level, "-"), linewidth=1.1, label=f"{level_name(level)} threshold"
            )
        counts = f"{len(h.good)} good, {len(h.defective)} defective"
        axis.set_title(f"{h.method}{' [supervised]' if h.supervised and '(sup.)' not in h.method else ''}\n{counts}", fontsize=8)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=legend_cols, fontsize=8, frameon=False)
    fig.supxlabel("image score", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- timing

TIMING_PANELS = (
    ("fit_s", "fit time (s)"),
    ("predict_images_per_s", "prediction throughput (images/s)"),
    ("batch1_latency_ms", "batch-1 latency (ms)"),
    ("peak_rss_mb", "peak RSS (MB)"),
    ("peak_gpu_mb", "peak GPU memory (MB)"),
)


def timing_data(values: dict[str, dict[str, list[float]]], methods: list[str]) -> list[tuple[str, str, dict[str, float]]]:
    """Panels to draw: (timing key, title, {method: mean over experiments}); panels without values dropped."""
    panels = []
    for key, title in TIMING_PANELS:
        means = {m: float(np.mean(values[m][key])) for m in methods if values.get(m, {}).get(key)}
        if means:
            panels.append((key, title, means))
    return panels


def draw_timing(panels: list[tuple[str, str, dict[str, float]]], colours: dict[str, Any], path: Path) -> Path:
    """One horizontal bar chart per timing figure, methods as bars."""
    plt = pyplot()
    methods = sorted({m for _, _, means in panels for m in means})
    height = 0.9 + 0.32 * len(methods)
    longest = max((len(m) for m in methods), default=1)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 0.07 * longest, height), squeeze=False)
    width = 3.3 * len(panels) + 0.07 * longest
    fig.subplots_adjust(left=(0.09 * longest + 0.2) / width, right=0.98, bottom=0.45 / height, top=1 - 0.4 / height, wspace=0.12)
    for index, (axis, (_, title, means)) in enumerate(zip(axes.flat, panels)):
        y = np.arange(len(methods))
        widths = [means.get(m, 0.0) for m in methods]
        axis.barh(y, widths, color=[colours.get(m) for m in methods])
        axis.set_yticks(y, methods if index == 0 else [""] * len(methods), fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def level_name(level: str) -> str:
    """``"0.99"`` -> ``"99 %"``."""
    return f"{float(level) * 100:g} %"


__all__ = [
    "LEVELS",
    "SPRO_LIMIT",
    "ScoreHistogram",
    "SproCurve",
    "draw_histograms",
    "draw_roc_pr",
    "draw_spro",
    "draw_timing",
    "histogram_data",
    "level_name",
    "method_colours",
    "pyplot",
    "spro_data",
    "timing_data",
]
