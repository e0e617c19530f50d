"""Writing a reproduction's comparison tables: Markdown and CSV per table, one HTML page for all."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..files import atomic_write
from .compare import compare, render_csv, render_html, render_markdown
from .recipe import Recipe


def _write(path: Path, text: str) -> Path:
    with atomic_write(path) as temp:
        Path(temp).write_text(text, encoding="utf-8")
    return path


def write_comparison(
    recipe: Recipe, tables: list[str], records: Iterable[dict], run_dir: Path, *, profile: str, dataset: str, seeds: list[int]
) -> tuple[str, list[Path]]:
    """Compare ``tables`` with the paper and write them under ``run_dir/reproduce/``:
    ``tables.md`` (all of them), ``table-<id>.csv`` each and ``index.html``; returns the Markdown
    and the files written."""
    records = list(records)
    compared = [compare(recipe, table, records, profile=profile, dataset=dataset, seeds=seeds) for table in tables]
    folder = Path(run_dir) / "reproduce"
    subtitle = f"Ours: profile {profile} on dataset {dataset}."
    header = f"# {recipe.title}\n\n{subtitle} Paper's numbers: {recipe.source}.\n"
    markdown = header + "\n" + "\n".join(render_markdown(table, recipe) for table in compared)
    written = [_write(folder / "tables.md", markdown)]
    written += [_write(folder / f"table-{table.spec.id}.csv", render_csv(table)) for table in compared]
    written.append(_write(folder / "index.html", render_html(compared, recipe, subtitle)))
    return markdown, written


__all__ = ["write_comparison"]
