"""Reproduction recipes: a paper's grid (methods, categories, seeds, profile, experiments) and the
layout of its tables, read from a JSON file, next to the paper's published numbers.

A recipe file names:

- ``methods`` and ``categories``: the paper's column and row labels, mapped to detector and
  category names;
- ``experiments``: named variants of a run, each with section-6 ``options`` (:mod:`..run_options`)
  and per-detector hyperparameter ``overrides``;
- ``tables``: per table, the ``metric`` (a results.jsonl metric path) and ``experiment`` of its
  cells, with optional ``rows`` (templated by ``{category}``) or ``columns`` that change either,
  and rows the data cannot reproduce (``missing``, with the reason);
- ``results``: the file of the paper's numbers (mean ± std over ``runs_per_cell`` runs) beside it.

Plugins add recipes with the ``autovi_register_recipes`` hook (a list of :class:`Recipe`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

DATA = Path(__file__).with_name("data")
"""The recipes that ship with autovi-core, and their papers' numbers."""


@dataclass(frozen=True)
class Published:
    """A number of the paper: mean ± std (in the paper's units) over ``n`` runs."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class CellSpec:
    """What one table cell compares: our ``metric`` of ``method`` on ``category`` in ``experiment``."""

    column: str
    method: str
    category: str
    experiment: str
    metric: str


@dataclass(frozen=True)
class RowSpec:
    """A table row: its cells, or the reason it cannot be reproduced (``missing``)."""

    label: str
    category: str | None
    cells: tuple[CellSpec, ...]
    missing: str | None = None


@dataclass(frozen=True)
class TableSpec:
    id: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[RowSpec, ...]
    mean_row: str | None = None


@dataclass(frozen=True)
class Experiment:
    """One experiment of the grid, before seeds: a method on a category in a named variant."""

    method: str
    category: str
    variant: str
    options: dict[str, Any] = field(hash=False, compare=False)
    overrides: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class Recipe:
    """A paper's reproduction grid and tables (see the module docstring)."""

    name: str
    title: str
    dataset: str
    profile: str
    seeds: tuple[int, ...]
    methods: dict[str, str]
    categories: dict[str, str]
    experiments: dict[str, dict[str, Any]]
    tables_spec: dict[str, dict[str, Any]]
    published: dict[str, Any]
    runs_per_cell: int
    source: str
    training_time_table: str | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a recipe file and the results file it names; a one-line error names what is wrong."""
        path = Path(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            results = json.loads((path.parent / spec["results"]).read_text(encoding="utf-8"))
            recipe = cls(
                name=spec["name"],
                title=spec["title"],
                dataset=spec["dataset"],
                profile=spec["profile"],
                seeds=tuple(int(s) for s in spec["seeds"]),
                methods=dict(spec["methods"]),
                categories=dict(spec["categories"]),
                experiments=dict(spec["experiments"]),
                tables_spec=dict(spec["tables"]),
                published=results["tables"],
                runs_per_cell=int(results["runs_per_cell"]),
                source=results["source"],
                training_time_table=spec.get("training_time_table"),
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a valid recipe ({type(exc).__name__}: {exc})") from None
        for table in recipe.tables_spec:
            recipe.table(table)  # every table resolves, or the recipe is refused here
        return recipe

    # --- the paper's numbers --------------------------------------------------------------------
    def paper_value(self, table: str, row: str, column: str) -> Published | None:
        for entry in self.published.get(table, {}).get("rows", []):
            if entry["label"] == row:
                cell = entry["cells"].get(column)
                return None if cell is None else Published(float(cell["mean"]), float(cell["std"]), self.runs_per_cell)
        return None

    def paper_fit_seconds(self, method: str) -> float | None:
        """The paper's mean training time of ``method`` (a detector name), when it publishes one."""
        if self.training_time_table is None:
            return None
        label = {v: k for k, v in self.methods.items()}.get(method)
        rows = self.published.get(self.training_time_table, {}).get("rows", [])
        cell = rows[0]["cells"].get(label) if rows and label else None
        return None if cell is None else float(cell["mean"])

    # --- tables -------------------------------------------------------------------------------------
    def table(self, table_id: str) -> TableSpec:
        """The layout of table ``table_id``: rows, columns and what each cell compares."""
        if table_id not in self.tables_spec:
            raise ConfigError(f"recipe {self.name!r} has no table {table_id!r}; tables: {', '.join(self.tables_spec)}")
        spec, published = self.tables_spec[table_id], self.published.get(table_id, {})
        columns = spec.get("columns") or {label: {"method": name} for label, name in self.methods.items()}
        rows = []
        for label, row in self._row_specs(spec):
            if "missing" in row:
                rows.append(RowSpec(label, None, (), row["missing"]))
                continue
            cells = []
            for column, col in columns.items():
                experiment = col.get("experiment") or row.get("experiment") or spec.get("experiment", "base")
                metric = row.get("metric") or spec.get("metric")
                if experiment not in self.experiments or not metric:
                    raise ConfigError(
                        f"recipe {self.name!r} table {table_id} row {label!r}: unknown experiment {experiment!r} or no metric"
                    )
                cells.append(CellSpec(column, col["method"], row["category"], experiment, metric))
            rows.append(RowSpec(label, row["category"], tuple(cells)))
        return TableSpec(table_id, published.get("title", ""), tuple(columns), tuple(rows), spec.get("mean_row"))

    def _row_specs(self, spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(label, row) pairs: explicit rows, rows templated by ``{category}``, or one per category."""
        explicit = spec.get("rows")
        if not explicit:
            return [(label, {"category": name}) for label, name in self.categories.items()]
        if all("{category}" in label for label in explicit):
            return [
                (template.format(category=label), {"category": name, **row})
                for label, name in self.categories.items()
                for template, row in explicit.items()
            ]
        return list(explicit.items())

    # --- the grid -----------------------------------------------------------------------------------
    def plan(self, tables: list[str], methods: list[str] | None = None, categories: list[str] | None = None) -> list[Experiment]:
        """Every distinct experiment the chosen tables need, narrowed to ``methods`` / ``categories``
        (detector and category names), in table order."""
        for name, known, kind in ((methods, self.methods.values(), "method"), (categories, self.categories.values(), "category")):
            unknown = sorted(set(name or ()) - set(known))
            if unknown:
                raise ConfigError(f"recipe {self.name!r} has no {kind} {', '.join(unknown)}; valid: {', '.join(known)}")
        seen: dict[tuple[str, str, str], Experiment] = {}
        for table in tables:
            for row in self.table(table).rows:
                for cell in row.cells:
                    if (methods and cell.method not in methods) or (categories and cell.category not in categories):
                        continue
                    key = (cell.method, cell.category, cell.experiment)
                    if key not in seen:
                        variant = self.experiments[cell.experiment]
                        overrides = dict(variant.get("overrides", {}).get(cell.method, {}))
                        seen[key] = Experiment(cell.method, cell.category, cell.experiment, dict(variant.get("options", {})), overrides)
        return list(seen.values())


def builtin_recipes() -> list[Recipe]:
    """The recipes that ship with autovi-core (registered by its built-in plugin)."""
    return [Recipe.load(path) for path in sorted(DATA.glob("*.recipe.json"))]


__all__ = ["CellSpec", "Experiment", "Published", "Recipe", "RowSpec", "TableSpec", "builtin_recipes"]
