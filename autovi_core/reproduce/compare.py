"""Our results beside the paper's, cell by cell, with Welch's t-test at 5 %.

A cell holds ours (mean ± std over our seeds, in percent) and the paper's (mean ± std over its
runs). Welch's t-test, computed from both sides' mean, std and count, marks the cells where ours
differ significantly: ``▲`` ours higher, ``▼`` ours lower. With a single seed of ours there is no
spread to test and the cell says so. A mean row (as in the paper: the mean of the category means
± their standard deviation over categories, ddof 0) is tested the same way with the number of
categories as the count.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..report import latest_ok, metric_value
from ..run_options import options_of
from .recipe import Published, Recipe, TableSpec

ALPHA = 0.05
HIGHER, LOWER = "▲", "▼"


@dataclass(frozen=True)
class Ours:
    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Compared:
    """One cell: ours, the paper's, and Welch's p-value (None when it cannot be computed)."""

    ours: Ours | None
    paper: Published | None
    p: float | None

    @property
    def mark(self) -> str:
        if self.p is None or self.p >= ALPHA or self.ours is None or self.paper is None:
            return ""
        return HIGHER if self.ours.mean > self.paper.mean else LOWER


@dataclass(frozen=True)
class ComparedRow:
    label: str
    cells: tuple[Compared, ...]
    missing: str | None = None


@dataclass(frozen=True)
class ComparedTable:
    spec: TableSpec
    rows: tuple[ComparedRow, ...]
    seeds: tuple[int, ...]


def welch_p(a: Ours | Published, b: Ours | Published) -> float | None:
    """Two-sided Welch's t-test from summary statistics; None when either side has fewer than 2 runs
    or neither has any spread."""
    if a.n < 2 or b.n < 2 or (a.std == 0 and b.std == 0):
        return None
    from scipy import stats

    p = float(stats.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def _summarise(values: list[float]) -> Ours | None:
    if not values:
        return None
    return Ours(float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))


def _overridden_keys(recipe: Recipe, method: str) -> set[str]:
    return {key for variant in recipe.experiments.values() for key in variant.get("overrides", {}).get(method, {})}


def compare(recipe: Recipe, table_id: str, records: Iterable[dict], *, profile: str, dataset: str, seeds: Iterable[int]) -> ComparedTable:
    """Table ``table_id`` of ``recipe`` filled from results ``records`` (the latest ok record per
    experiment) of ``profile`` on ``dataset`` over ``seeds``."""
    spec = recipe.table(table_id)
    wanted = set(seeds)
    ok, _ = latest_ok(records)
    ok = [r for r in ok if r.get("profile") == profile and r.get("dataset") == dataset and r.get("seed") in wanted]

    def values(method: str, category: str, experiment: str, metric: str) -> list[float]:
        variant = recipe.experiments[experiment]
        options, overrides = variant.get("options", {}), variant.get("overrides", {}).get(method, {})
        keys = _overridden_keys(recipe, method)
        out = []
        for record in sorted(ok, key=lambda r: r.get("seed")):
            if record.get("detector") != method or record.get("category") != category or options_of(record) != options:
                continue
            given = record.get("overrides") or {}
            if any(given.get(key) != overrides.get(key) for key in keys):
                continue
            value = metric_value(record, metric)
            if value is not None and math.isfinite(value):
                out.append(100.0 * value)
        return out

    rows, per_column_means = [], {column: [] for column in spec.columns}
    for row in spec.rows:
        if row.missing is not None:
            paper = tuple(Compared(None, recipe.paper_value(table_id, row.label, c), None) for c in spec.columns)
            rows.append(ComparedRow(row.label, paper, row.missing))
            continue
        cells = []
        for cell in row.cells:
            ours = _summarise(values(cell.method, cell.category, cell.experiment, cell.metric))
            paper = recipe.paper_value(table_id, row.label, cell.column)
            cells.append(Compared(ours, paper, welch_p(ours, paper) if ours and paper else None))
            if ours is not None:
                per_column_means[cell.column].append(ours.mean)
        rows.append(ComparedRow(row.label, tuple(cells)))
    if spec.mean_row:
        cells = []
        n_rows = sum(1 for r in spec.rows if r.missing is None)
        for column in spec.columns:
            means = per_column_means[column]
            ours = Ours(float(np.mean(means)), float(np.std(means)), len(means)) if len(means) == n_rows and means else None
            paper = recipe.paper_value(table_id, spec.mean_row, column)
            paper = Published(paper.mean, paper.std, n_rows) if paper else None
            cells.append(Compared(ours, paper, welch_p(ours, paper) if ours and paper else None))
        rows.append(ComparedRow(spec.mean_row, tuple(cells)))
    return ComparedTable(spec, tuple(rows), tuple(sorted(wanted)))


# --- rendering ----------------------------------------------------------------------------------------
def _ours_text(cell: Compared) -> str:
    if cell.ours is None:
        return "not run"
    text = f"{cell.ours.mean:.1f}" if cell.ours.n == 1 else f"{cell.ours.mean:.1f}±{cell.ours.std:.1f}"
    return f"{text} {cell.mark}".strip()


def _paper_text(cell: Compared) -> str:
    return "—" if cell.paper is None else f"{cell.paper.mean:.1f}±{cell.paper.std:.1f}"


def caption(table: ComparedTable, recipe: Recipe) -> str:
    spec = table.spec
    return (
        f"Table {spec.id}: {spec.title}. Ours: mean ± std over seeds {list(table.seeds)} (%); paper: mean ± std over "
        f"{recipe.runs_per_cell} runs. {HIGHER}/{LOWER}: ours significantly higher/lower than the paper's "
        f"(Welch's t-test, {ALPHA:.0%}); cells of one seed are not tested."
    )


def render_markdown(table: ComparedTable, recipe: Recipe) -> str:
    spec = table.spec
    header = "| | " + " | ".join(f"{c} (ours) | {c} (paper)" for c in spec.columns) + " |"
    lines = [f"### Table {spec.id}: {spec.title}", "", caption(table, recipe), "", header, "|---|" + "---:|---:|" * len(spec.columns)]
    for row in table.rows:
        label = f"**{row.label}**" if row.label == spec.mean_row else row.label
        if row.missing:
            lines.append(f"| {label} | " + " | ".join(f"— | {_paper_text(c)}" for c in row.cells) + " |")
        else:
            lines.append(f"| {label} | " + " | ".join(f"{_ours_text(c)} | {_paper_text(c)}" for c in row.cells) + " |")
    notes = [f"{row.label}: {row.missing}" for row in table.rows if row.missing]
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def render_csv(table: ComparedTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["table", "row", "column", "ours_mean", "ours_std", "ours_n", "paper_mean", "paper_std", "paper_n", "welch_p", "mark", "note"]
    )
    for row in table.rows:
        for column, cell in zip(table.spec.columns, row.cells):
            ours, paper = cell.ours, cell.paper
            writer.writerow(
                [
                    table.spec.id,
                    row.label,
                    column,
                    *(("", "", "") if ours is None else (f"{ours.mean:.4f}", f"{ours.std:.4f}", ours.n)),
                    *(("", "", "") if paper is None else (paper.mean, paper.std, paper.n)),
                    "" if cell.p is None else f"{cell.p:.4g}",
                    {HIGHER: "higher", LOWER: "lower"}.get(cell.mark, ""),
                    row.missing or "",
                ]
            )
    return buffer.getvalue()


def render_html(tables: list[ComparedTable], recipe: Recipe, subtitle: str = "") -> str:
    """One self-contained page with every table (no scripts, no external files); ``subtitle`` says
    what was run (profile, dataset)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(recipe.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
        ".higher{background:#dff0d8}.lower{background:#f8d7da}.paper,.none{color:#777}caption{text-align:left;max-width:60em}</style>",
        f"</head><body><h1>{html.escape(recipe.title)}</h1><p>{html.escape(subtitle)}</p>",
        f"<p>Source of the paper's numbers: {html.escape(recipe.source)}</p>",
    ]
    for table in tables:
        spec = table.spec
        parts.append(f"<h2>Table {html.escape(spec.id)}: {html.escape(spec.title)}</h2>")
        parts.append(f"<table><caption>{html.escape(caption(table, recipe))}</caption>")
        parts.append(
            "<tr><th></th>" + "".join(f"<th>{html.escape(c)} (ours)</th><th>{html.escape(c)} (paper)</th>" for c in spec.columns) + "</tr>"
        )
        for row in table.rows:
            cells = []
            for cell in row.cells:
                css = {HIGHER: " class='higher'", LOWER: " class='lower'"}.get(cell.mark, "" if cell.ours else " class='none'")
                ours = "—" if row.missing else _ours_text(cell)
                cells.append(f"<td{css}>{html.escape(ours)}</td><td class='paper'>{html.escape(_paper_text(cell))}</td>")
            title = f" title='{html.escape(row.missing)}'" if row.missing else ""
            label = f"<b>{html.escape(row.label)}</b>" if row.label == spec.mean_row else html.escape(row.label)
            parts.append(f"<tr><td{title}>{label}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
        parts += [f"<p>{html.escape(row.label)}: {html.escape(row.missing)}</p>" for row in table.rows if row.missing]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = ["Compared", "ComparedTable", "Ours", "compare", "render_csv", "render_html", "render_markdown", "welch_p"]
