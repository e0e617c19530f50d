"""Result tables for ``autovi report``: mean ± std over seeds, best per row by Welch's t-test.

A row is a (dataset, category) pair, plus one ``mean`` row per dataset; a column is a method
(a detector, per profile when several profiles are present, suffixed " (sup.)" when supervised).
As in the AutoVI paper, the best mean of a row is marked, and so is every method whose seeds are
not significantly different from the best one's (Welch's t-test, p >= alpha).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError
from .results import load_results  # noqa: F401  (re-exported for callers of the report API)
from .run_options import options_label, options_of

MEAN_ROW = "mean"
FORMATS = ("md", "csv", "html")
SUPERVISED_SUFFIX = " (sup.)"
FLAG = "†"
# Metrics for which a smaller value is better (timings and memory).
LOWER_IS_BETTER = frozenset({"timing.fit_s", "timing.batch1_latency_ms", "timing.peak_rss_mb", "timing.peak_gpu_mb"})

Key = tuple[str, str, str, Any, str, str, str]  # (detector, dataset, category, seed, profile, options, overrides)


# --------------------------------------------------------------------------- loading


def _resolve(obj: Any, parts: list[str]) -> Any:
    """Follow dotted ``parts`` into nested dicts, trying the longest matching key first."""
    if not parts:
        return obj
    if not isinstance(obj, dict):
        return None
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in obj:
            found = _resolve(obj[key], parts[k:])
            if found is not None:
                return found
    return None


def metric_value(record: dict, metric: str) -> float | None:
    """The value of a dotted metric path, looked up in ``record["metrics"]`` then in ``record``.

    ``auc_spro.0.05`` resolves to ``metrics["auc_spro"]["0.05"]``; ``timing.fit_s`` to
    ``record["timing"]["fit_s"]``. Missing, null or non-numeric values give ``None``.
    """
    parts = metric.split(".")
    for root in (record.get("metrics"), record):
        value = _resolve(root, parts)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def metric_paths(records: Iterable[dict]) -> list[str]:
    """Every dotted path ``--metric`` can name in ``records``: the keys under ``metrics`` (``image_auroc``,
    ``auc_spro.0.05``, ...) and under ``timing`` (``timing.fit_s``), whatever their values."""
    paths: dict[str, None] = {}

    def walk(obj: Any, prefix: str) -> None:
        for key, value in obj.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, path + ".")
            else:
                paths[path] = None

    for record in records:
        if isinstance(record.get("metrics"), dict):
            walk(record["metrics"], "")
        if isinstance(record.get("timing"), dict):
            walk(record["timing"], "timing.")
    return list(paths)


def _key(record: dict) -> Key:
    return (
        str(record.get("detector")),
        str(record.get("dataset")),
        str(record.get("category")),
        record.get("seed"),
        str(record.get("profile")),
        options_label(options_of(record)),
        overrides_text(record.get("overrides")),
    )


def overrides_text(overrides: dict | None) -> str:
    """Canonical text of an experiment's hyperparameter overrides (part of its identity)."""
    return json.dumps(overrides or {}, sort_keys=True, default=str)


def varying_overrides(records: Iterable[dict]) -> dict[str, list[str]]:
    """Per detector, the overridden hyperparameters whose values differ between ``records`` (absent
    counts as a value): they tell that detector's columns apart; an override common to all its
    records is not shown."""
    by_detector: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_detector[str(record.get("detector"))].append(record.get("overrides") or {})
    out = {}
    for detector, all_overrides in by_detector.items():
        keys = sorted({key for overrides in all_overrides for key in overrides})
        out[detector] = [k for k in keys if len({overrides_text({k: o.get(k)}) for o in all_overrides}) > 1]
    return out


def latest_ok(records: Iterable[dict]) -> tuple[list[dict], int]:
    """Deduplicate by (detector, dataset, category, seed, profile): the last ok record wins.

    Returns the ok records and the number of experiments that failed and have no ok record (a
    failure later re-run successfully with ``--resume`` is not counted).
    """
    ok: dict[Key, dict] = {}
    failed: set[Key] = set()
    for record in records:
        if record.get("status") == "ok":
            ok[_key(record)] = record
        else:
            failed.add(_key(record))
    return list(ok.values()), len(failed - set(ok))


# --------------------------------------------------------------------------- table


@dataclass(frozen=True, order=True)
class Row:
    """A table row: one category of a dataset, or that dataset's mean row."""

    dataset: str
    category: str
    is_mean: bool = False


@dataclass
class Cell:
    """Statistics of one method on one row, in scaled units."""

    mean: float
    std: float | None
    n: int
    samples: tuple[float, ...] = ()  # per-seed values used by the t-test
    mark: str = ""  # "best", "tied" (not significantly different from best) or ""
    flagged: bool = False  # mean row computed from incomplete seeds

    @property
    def bold(self) -> bool:
        """True for the best and tied-best cells."""
        return bool(self.mark)


@dataclass
class Table:
    """A metric table: rows × methods, with counts of skipped input."""

    metric: str
    scale: float
    higher_is_better: bool
    alpha: float
    methods: list[str]
    rows: list[Row]
    cells: dict[tuple[Row, str], Cell]
    seeds: list[Any]
    n_failed: int = 0
    n_unreadable: int = 0
    footnotes: list[str] = field(default_factory=list)

    def cell(self, row: Row, method: str) -> Cell | None:
        """The cell of ``method`` on ``row``, or None when it has no value."""
        return self.cells.get((row, method))


def _default_scale(metric: str) -> float:
    return 1.0 if metric.startswith("timing.") else 100.0


def _column(record: dict, several_profiles: bool, varying: dict[str, list[str]] | None = None) -> str:
    """The column of ``record``: its detector, the members of a composite detector (its provenance's
    ``member_names``, e.g. ``ensemble[patchcore+padim]``), then what tells it apart from the
    detector's other columns (profile, section-6 options, and the overrides in ``varying``), then
    " (sup.)"."""
    detector = name = str(record.get("detector"))
    members = (record.get("provenance") or {}).get("member_names")
    if isinstance(members, list) and members and all(isinstance(m, str) for m in members):
        name += "[" + "+".join(members) + "]"
    if several_profiles:
        name += f" [{record.get('profile')}]"
    options = options_label(options_of(record))
    if options:
        name += f" ({options})"
    overrides = record.get("overrides") or {}
    shown = [f"{key}={overrides[key]}" for key in (varying or {}).get(detector, []) if key in overrides]
    if shown:
        name += " {" + ", ".join(shown) + "}"
    if record.get("supervised") is True:
        name += SUPERVISED_SUFFIX
    return name


def _seed_order(seed: Any) -> tuple[int, Any]:
    return (0, seed) if isinstance(seed, (int, float)) else (1, str(seed))


def _cell(samples: list[float]) -> Cell:
    std = float(np.std(samples, ddof=1)) if len(samples) > 1 else 0.0
    return Cell(mean=float(np.mean(samples)), std=std, n=len(samples), samples=tuple(samples))


def _not_different(best: Cell, other: Cell, alpha: float) -> bool:
    """Whether ``other`` ties ``best``: Welch's p >= alpha; exact equality when untestable."""
    if other.mean == best.mean:
        return True
    a, b = best.samples, other.samples
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from scipy import stats  # imported when a table is built: `autovi report --help` stays fast

        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return bool(np.isfinite(p) and p >= alpha)


def _mark_row(cells: list[Cell], higher_is_better: bool, alpha: float) -> None:
    """Mark the best cell(s) of a row and those not significantly different from it."""
    candidates = [c for c in cells if not c.flagged] or cells
    if not candidates:
        return
    pick: Callable[..., Cell] = max if higher_is_better else min
    best = pick(candidates, key=lambda c: c.mean)
    for c in candidates:
        if c.mean == best.mean:
            c.mark = "best"
        elif _not_different(best, c, alpha):
            c.mark = "tied"


def build_table(
    records: Iterable[dict],
    metric: str = "image_auroc",
    *,
    scale: float | None = None,
    higher_is_better: bool | None = None,
    alpha: float = 0.05,
    unreadable: int = 0,
) -> Table:
    """Build the per-category table of ``metric`` from result records.

    ``scale`` defaults to 100 for score metrics and 1 for ``timing.*``; ``higher_is_better``
    defaults to False for fit time and peak memory. Failed rows are counted, not used;
    duplicated experiments keep their last ok record; records without the metric are skipped.
    """
    if scale is None:
        scale = _default_scale(metric)
    if higher_is_better is None:
        higher_is_better = metric not in LOWER_IS_BETTER
    ok, failed = latest_ok(records)
    several_profiles = len({str(r.get("profile")) for r in ok}) > 1
    varying = varying_overrides(ok)

    # values[(dataset, category, method)][seed] = scaled value
    values: dict[tuple[str, str, str], dict[Any, float]] = defaultdict(dict)
    for record in ok:
        value = metric_value(record, metric)
        if value is None or not math.isfinite(value):
            continue
        _, dataset, category, seed, *_ = _key(record)
        values[(dataset, category, _column(record, several_profiles, varying))][seed] = value * scale

    methods = sorted({m for _, _, m in values})
    datasets = sorted({d for d, _, _ in values})
    rows: list[Row] = []
    cells: dict[tuple[Row, str], Cell] = {}
    footnotes: list[str] = []
    for dataset in datasets:
        categories = sorted({c for d, c, _ in values if d == dataset})
        for category in categories:
            row = Row(dataset, category)
            rows.append(row)
            for method in methods:
                per_seed = values.get((dataset, category, method))
                if per_seed:
                    seeds = sorted(per_seed, key=_seed_order)
                    cells[(row, method)] = _cell([per_seed[s] for s in seeds])
        mean_row = Row(dataset, MEAN_ROW, is_mean=True)
        rows.append(mean_row)
        for method in methods:
            cell = _mean_cell(values, dataset, categories, method)
            if cell is None:
                continue
            cells[(mean_row, method)] = cell
            if cell.flagged:
                footnotes.append(
                    f"{FLAG} {method} on {dataset}: some seeds lack categories; mean of the "
                    f"available category means ({cell.n} of {len(categories)} categories), "
                    "not tested for ties."
                )

    for row in rows:
        _mark_row([cells[(row, m)] for m in methods if (row, m) in cells], higher_is_better, alpha)

    seeds_seen = sorted({s for per_seed in values.values() for s in per_seed}, key=_seed_order)
    return Table(
        metric=metric,
        scale=scale,
        higher_is_better=higher_is_better,
        alpha=alpha,
        methods=methods,
        rows=rows,
        cells=cells,
        seeds=seeds_seen,
        n_failed=failed,
        n_unreadable=unreadable,
        footnotes=footnotes,
    )


def _mean_cell(
    values: dict[tuple[str, str, str], dict[Any, float]],
    dataset: str,
    categories: list[str],
    method: str,
) -> Cell | None:
    """The mean-row cell: over seeds of the per-seed category mean, or a flagged fallback."""
    per_category = {c: values[(dataset, c, method)] for c in categories if (dataset, c, method) in values}
    if not per_category:
        return None
    seeds = sorted({s for per_seed in per_category.values() for s in per_seed}, key=_seed_order)
    if all(s in per_seed for s in seeds for per_seed in per_category.values()) and len(per_category) == len(categories):
        return _cell([float(np.mean([per_category[c][s] for c in categories])) for s in seeds])
    category_means = [float(np.mean([v[s] for s in sorted(v, key=_seed_order)])) for v in per_category.values()]
    return Cell(mean=float(np.mean(category_means)), std=None, n=len(category_means), flagged=True)


# --------------------------------------------------------------------------- rendering


def _digits(table: Table) -> int:
    return 1 if table.scale == 100.0 else 2


def _format_cell(table: Table, cell: Cell | None, n_max: int) -> str:
    """``mean ± std`` text of a cell (no bold), with the seed count when it is not the usual."""
    if cell is None:
        return "–"
    d = _digits(table)
    text = f"{cell.mean:.{d}f}"
    if cell.flagged:
        return text + FLAG
    if cell.n > 1:  # one seed has no spread: "± 0.0" would read as a measured zero
        text += f" ± {cell.std:.{d}f}"
    if cell.n != n_max:
        text += f" (n={cell.n})"
    return text


def _n_max(table: Table) -> int:
    return max((c.n for c in table.cells.values() if not c.flagged), default=0)


def _row_label(row: Row) -> tuple[str, str]:
    return row.dataset, row.category


def _caption(table: Table) -> str:
    """One line: the metric, scale, what bold means, and the seeds."""
    scale = f"×{table.scale:g}" if table.scale != 1.0 else "unscaled"
    direction = "higher" if table.higher_is_better else "lower"
    seeds = ", ".join(str(s) for s in table.seeds) or "none"
    spread = "mean ± std" if _n_max(table) > 1 else "one value per cell (no spread)"
    return (
        f"{table.metric} ({scale}, {direction} is better): {spread} over {len(table.seeds)} "
        f"seed(s) [{seeds}], (n=k) where a cell has fewer; bold = best or not significantly different from the best "
        f"(Welch's t-test, {table.alpha * 100:g}%)."
    )


def _notes(table: Table) -> list[str]:
    notes = list(table.footnotes)
    if table.n_failed:
        notes.append(f"{table.n_failed} failed run(s) ignored.")
    if table.n_unreadable:
        notes.append(f"{table.n_unreadable} unreadable line(s) skipped.")
    return notes


def render_markdown(table: Table) -> str:
    """A Markdown table; best and tied-best cells in bold."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    n_max = _n_max(table)
    lines = [_caption(table), ""]
    if not table.methods:
        lines.append("No results for this metric.")
    else:
        lines.append("| " + " | ".join(["dataset", "category", *map(esc, table.methods)]) + " |")
        lines.append("|" + "---|---|" + "---:|" * len(table.methods))
        for row in table.rows:
            texts = []
            for method in table.methods:
                cell = table.cell(row, method)
                text = esc(_format_cell(table, cell, n_max))
                texts.append(f"**{text}**" if cell is not None and cell.bold else text)
            label = [esc(row.dataset), f"**{MEAN_ROW}**" if row.is_mean else esc(row.category)]
            lines.append("| " + " | ".join([*label, *texts]) + " |")
    notes = _notes(table)
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """Long-format CSV: dataset, category, method, mean, std, n, best (``best``/``tied``/empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "category", "method", "mean", "std", "n", "best"])
    for row in table.rows:
        for method in table.methods:
            cell = table.cell(row, method)
            if cell is None:
                continue
            std = "" if cell.std is None else repr(cell.std)
            writer.writerow([*_row_label(row), method, repr(cell.mean), std, cell.n, cell.mark])
    return out.getvalue()


def render_html_table(table: Table, rows: Iterable[Row] | None = None) -> str:
    """The table alone (an HTML ``<table>`` plus its notes), for embedding; ``rows`` picks rows (default all)."""
    e = html.escape
    n_max = _n_max(table)
    parts = [
        "<table>",
        f"<caption>{e(_caption(table))}</caption>",
        "<tr><th>dataset</th><th>category</th>" + "".join(f"<th>{e(m)}</th>" for m in table.methods) + "</tr>",
    ]
    for row in table.rows if rows is None else rows:
        label = f"<b>{MEAN_ROW}</b>" if row.is_mean else e(row.category)
        tds = []
        for method in table.methods:
            cell = table.cell(row, method)
            text = e(_format_cell(table, cell, n_max))
            if cell is not None and cell.bold:
                text = f"<b>{text}</b>"
            tds.append(f'<td class="v">{text}</td>')
        parts.append(f"<tr><td>{e(row.dataset)}</td><td>{label}</td>{''.join(tds)}</tr>")
    parts.append("</table>")
    parts.extend(f"<p>{e(note)}</p>" for note in _notes(table))
    return "\n".join(parts)


def render_html(table: Table) -> str:
    """A minimal self-contained HTML page with the table; best and tied-best cells in <b>."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{html.escape(table.metric)}</title>",
        "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}td.v{text-align:right}</style>",
        "</head><body>",
        render_html_table(table),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


RENDERERS: dict[str, Callable[[Table], str]] = {
    "md": render_markdown,
    "csv": render_csv,
    "html": render_html,
}


def render(records: Iterable[dict], metric: str = "image_auroc", fmt: str = "md", *, unreadable: int = 0) -> str:
    """Build the table of ``metric`` and render it as ``md``, ``csv`` or ``html``."""
    renderer = RENDERERS.get(fmt)
    if renderer is None:
        raise ConfigError(f"unknown report format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return renderer(build_table(records, metric, unreadable=unreadable))
