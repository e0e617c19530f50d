"""Putting the report together: tables, figures and pictures per category, timing, the notes box."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConfigError
from ..files import atomic_write
from ..progress import track
from ..report import Row, Table, _format_cell, _n_max, build_table, render_html_table
from . import figures, page, pictures
from .curves import score_curves
from .data import LEVELS, CategoryData, ReportData, gather, timing_by_method
from .grid import build_pictures, slug

MARKER = ".autovi-html-report"
"""Written into the report folder; only a folder holding it has its ``img/`` cleared on rewrite."""
METRIC_TITLES = {"image_auroc": "image AUROC", "auc_spro.0.05": "AUsPRO@0.05", "pixel_auroc": "pixel AUROC"}


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir}: is a file; the HTML report is a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output {out_dir}: cannot write there ({exc.strerror or exc})") from None
    if (out_dir / MARKER).is_file() and (out_dir / "img").is_dir():
        shutil.rmtree(out_dir / "img")  # pictures of an earlier report of this folder
    (out_dir / MARKER).write_text(json.dumps({"generator": "autovi report --format html", "version": __version__}) + "\n")


def _seeds_text(category: CategoryData, methods: list[str]) -> str:
    """Which seed each method's curves come from: the lowest with an experiment file."""

    def one(method: str) -> str:
        shown, seeds = category.shown(method), category.seeds(method)
        if shown is None:
            return "not drawn (no readable experiment file)"
        if len(seeds) > 1:
            return f"seed {shown.seed} (the lowest with an experiment file, of {len(seeds)} seeds in the tables)"
        return f"seed {shown.seed}"

    texts = {method: one(method) for method in methods}
    if len(methods) > 1 and len(set(texts.values())) == 1:
        return f"every method: {texts[methods[0]]}"
    return "; ".join(f"{method}: {text}" for method, text in texts.items())


def _metrics_table(tables: dict[str, Table], category: CategoryData) -> str:
    row = Row(category.dataset, category.name)
    methods = category.methods()
    rows = []
    for metric, table in tables.items():
        n_max = _n_max(table)
        cells = []
        for method in methods:
            cell = table.cell(row, method)
            text = page.e(_format_cell(table, cell, n_max))
            cells.append(f"<b>{text}</b>" if cell is not None and cell.bold else text)
        rows.append([page.e(METRIC_TITLES.get(metric, metric)), *cells])
    rows.append(["seeds", *(page.e(_seed_count(category.seeds(m))) for m in methods)])
    return page.simple_table(
        ["metric (×100)", *methods],
        rows,
        "Mean ± std over seeds (a single seed's value has no spread); bold = best, or not significantly different from the best "
        "(Welch's t-test, 5 %). The last row gives each method's number of seeds and which.",
    )


def _seed_count(seeds: list[Any]) -> str:
    """``n = 3 (0, 1, 2)``: how many seeds a column's cells average, and which."""
    return f"n = {len(seeds)} ({', '.join(map(str, seeds))})"


def _per_defect_table(category: CategoryData, limit: str = "0.05") -> str:
    """AUsPRO@limit per defect type (rows) and method (columns): mean ± std over seeds, best mean bold."""
    values: dict[str, dict[str, list[float]]] = {}
    for method, experiments in category.experiments.items():
        for experiment in experiments:
            per_type = (experiment.record.get("metrics") or {}).get("per_defect_type")
            for name, aucs in per_type.items() if isinstance(per_type, dict) else ():
                value = aucs.get(limit) if isinstance(aucs, dict) else None
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values.setdefault(str(name), {}).setdefault(method, []).append(100.0 * float(value))
    if not values:
        return page.message("No per-defect-type AUsPRO in these records (no pixel-level ground truth, or an old record).")
    methods = category.methods()
    rows = []
    for name in sorted(values):
        means = {m: float(np.mean(v)) for m, v in values[name].items()}
        best = max(means.values())
        cells = []
        for method in methods:
            v = values[name].get(method)
            if not v:
                cells.append("–")
                continue
            text = f"{np.mean(v):.1f}" + (f" ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else "")
            cells.append(f"<b>{page.e(text)}</b>" if means[method] == best else page.e(text))
        rows.append([page.e(name), *cells])
    return page.simple_table(
        ["defect type", *methods], rows, f"AUsPRO@{limit} (×100) per defect type: mean ± std over seeds (one seed: its value); bold = best."
    )


def _thresholds_table(histograms: list[figures.ScoreHistogram]) -> str:
    rows = []
    for h in histograms:
        rows.append(
            [page.e(h.method), page.e(h.seed), *(page.e(f"{h.thresholds[lv]:.4g}") if lv in h.thresholds else "–" for lv in LEVELS)]
        )
    return page.simple_table(
        ["method", "seed", *(f"{figures.level_name(lv)} threshold" for lv in LEVELS)],
        rows,
        "Image-score thresholds calibrated on held-out good training images (the vertical lines above): "
        "an image scoring above the q % threshold is flagged, q % of good images scoring at or below it.",
    )


def _category_section(
    category: CategoryData, index: int, out_dir: Path, tables: dict[str, Table], colours: dict[str, Any], data: ReportData, lut: np.ndarray
) -> page.Section:
    anchor = f"c{index}"
    rel = f"img/{index:02d}-{slug(category.dataset)}-{slug(category.name)}"
    methods = category.methods()
    shown = {m: e for m in methods if (e := category.shown(m)) is not None}
    seeds = _seeds_text(category, methods)
    title = f"{category.dataset} / {category.name}"
    sup = [m for m in methods if m in data.supervised]
    sup_text = f" Dashed lines: supervised methods ({', '.join(sup)})." if sup else ""
    children = [page.Section(f"{anchor}-tables", "Metrics", _metrics_table(tables, category))]

    curves = []
    for method, experiment in shown.items():
        _, labels, scores = experiment.images()
        if (curve := score_curves(method, experiment.seed, experiment.supervised, scores, labels)) is not None:
            curves.append(curve)
    if curves:
        src = f"{rel}/roc_pr.png"
        figures.draw_roc_pr(curves, colours, out_dir / src)
        body = page.figure(
            src,
            f"ROC and precision-recall curves of {len(curves)} method(s) on {title}",
            f"Image-level ROC (left; dotted: chance) and precision-recall (right; dotted: share of defective images) "
            f"curves from the test images' scores. Curves from: {seeds}.{sup_text}",
        )
    else:
        body = page.message("No curves: no method has an experiment file with both good and defective test images.")
    children.append(page.Section(f"{anchor}-roc", "ROC and precision-recall", body))

    spro = [s for e in shown.values() if (s := figures.spro_data(e)) is not None]
    if spro:
        src = f"{rel}/spro.png"
        figures.draw_spro(spro, colours, out_dir / src)
        body = page.figure(
            src,
            f"sPRO against false positive rate for {len(spro)} method(s) on {title}, integration limit 0.05 marked",
            f"Saturated per-region overlap against the pixel false positive rate on good pixels, whole curve (left) and "
            f"zoomed (right); the dashed vertical line is the integration limit FPR = {figures.SPRO_LIMIT:g} of AUsPRO@0.05. "
            f"Curves from: {seeds}.{sup_text}",
        )
    else:
        body = page.message("No sPRO curves: the experiment files hold none (no pixel ground truth, or old records).")
    children.append(page.Section(f"{anchor}-spro", "sPRO curves", body))

    histograms = [h for e in shown.values() if (h := figures.histogram_data(e)) is not None]
    if histograms:
        src = f"{rel}/histograms.png"
        figures.draw_histograms(histograms, out_dir / src)
        body = page.figure(
            src,
            f"Score histograms of good and defective test images for {len(histograms)} method(s) on {title}",
            "Per method: test-image scores of good (green) and defective (red) images, held-out good training images "
            "(grey outline), and the calibrated 99 % (dotted), 95 % (dashed) and 90 % (dash-dotted) thresholds. "
            f"From: {seeds}.",
        ) + _thresholds_table(histograms)
    else:
        body = page.message("No histograms: no method has an experiment file with image scores.")
    children.append(page.Section(f"{anchor}-hist", "Score histograms and thresholds", body))
    children.append(page.Section(f"{anchor}-defects", "AUsPRO per defect type", _per_defect_table(category)))

    grid, galleries = build_pictures(category, out_dir, rel, data.notes, lut)
    intro = page.message(
        "Two test images per defect folder (the first in sorted order, good included). Columns: the image, its ground "
        "truth outlined in green, then each method's anomaly map over the image on that method's own fixed colour scale "
        "(the range of its maps over the whole test set, blue low, red high), with a white contour where the map exceeds "
        "its calibrated 99 % pixel threshold."
    )
    children.append(page.Section(f"{anchor}-maps", "Anomaly maps", (intro if grid.rows else "") + page.grid_html(grid, anchor)))
    gallery_body = page.galleries_html(galleries) if galleries else page.message("No gallery: no readable experiment file.")
    children.append(
        page.Section(
            f"{anchor}-failures",
            "Failure gallery",
            page.message("Per method: the highest-scored good images and the lowest-scored defective images, score below.") + gallery_body,
        )
    )
    return page.Section(anchor, title, children=children)


def _timing_section(data: ReportData, colours: dict[str, Any], out_dir: Path) -> page.Section:
    values = timing_by_method(data)
    panels = figures.timing_data(values, data.methods)
    if not panels:
        return page.Section("timing", "Timing and memory", page.message("No timing figures in these records."))
    src = "img/timing.png"
    figures.draw_timing(panels, colours, out_dir / src)
    keys = [(key, title) for key, title, _ in panels]
    rows = []
    for method in data.methods:
        n = max((len(v) for v in values.get(method, {}).values()), default=0)
        cells = [page.e(f"{np.mean(values[method][k]):.4g}") if values.get(method, {}).get(k) else "–" for k, _ in keys]
        rows.append([page.e(method), page.e(n), *cells])
    body = page.figure(
        src,
        "Bar charts of fit time, throughput, batch-1 latency and peak memory per method",
        "Mean over each method's experiments (all categories and seeds). Lower is better except for throughput.",
    ) + page.simple_table(["method", "experiments", *(t for _, t in keys)], rows, "The numbers behind the bars (means).")
    return page.Section("timing", "Timing and memory", body)


def write(run_dir: Path, out_dir: Path | None, metrics: tuple[str, ...]) -> Path:
    data = gather(run_dir)
    out_dir = out_dir if out_dir is not None else data.run_dir / "report"
    _prepare(out_dir)
    colours = figures.method_colours(data.methods)
    lut = pictures.colormap_lut()
    tables = {m: build_table(data.records, m, unreadable=data.unreadable) for m in metrics}

    summary = "".join(render_html_table(t) for t in tables.values()) if data.ok else page.message("No successful experiment.")
    sections = [page.Section("summary", "Summary tables", summary)]
    for index, category in enumerate(track(data.categories, "report: categories", total=len(data.categories))):
        sections.append(_category_section(category, index, out_dir, tables, colours, data, lut))
    sections.append(_timing_section(data, colours, out_dir))

    by_dataset: dict[str, list[tuple[str, str]]] = {}
    for index, category in enumerate(data.categories):
        by_dataset.setdefault(category.dataset, []).append((f"c{index}", category.name))
    contents = page.toc(
        [("summary", "Summary tables", [])]
        + [(cats[0][0], f"dataset {dataset}", cats) for dataset, cats in by_dataset.items()]
        + [("timing", "Timing and memory", [])]
    )
    meta = (
        f"Run folder {data.run_dir.resolve()}: {len(data.ok)} successful experiment(s), "
        f"{len(data.methods)} method(s), {len(data.categories)} categor{'y' if len(data.categories) == 1 else 'ies'}. "
        f"Written by autovi-core {__version__}."
    )
    text = page.document(f"autovi report: {data.run_dir.resolve().name}", meta, data.notes.lines(), contents, sections)
    index_path = out_dir / "index.html"
    with atomic_write(index_path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return index_path
