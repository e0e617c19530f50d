"""`autovi reproduce`: the recipe and the paper's numbers, the grid, and the cell-by-cell comparison."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy import stats

from autovi_core.errors import ConfigError
from autovi_core.registry import get_registry
from autovi_core.reproduce.compare import HIGHER, LOWER, Ours, compare, render_csv, render_html, render_markdown, welch_p
from autovi_core.reproduce.recipe import Published

CATEGORIES = ("engine_wiring", "pipe_clip", "pipe_staple", "tank_screw", "underbody_pipes", "underbody_screw")


@pytest.fixture(scope="module")
def recipe():
    return get_registry().recipe("autovi-paper")


def test_the_paper_recipe_covers_its_tables_with_the_papers_layout(recipe) -> None:
    assert set(recipe.tables_spec) == {"6", "7", "8", "9", "11", "12", "13"}
    assert recipe.runs_per_cell == 8 and recipe.seeds == tuple(range(8)) and "Computers in Industry" in recipe.source
    table6 = recipe.table("6")
    assert table6.columns == ("CFlow", "DRAEM", "DSR", "EfficientAD", "PaDiM", "PatchCore")
    assert [r.category for r in table6.rows] == list(CATEGORIES)
    assert {c.metric for r in table6.rows for c in r.cells} == {"image_auroc"}
    table8 = recipe.table("8")
    assert len(table8.rows) == 18 and table8.rows[0].label == "Wiring TNR 99" and table8.rows[0].cells[0].metric == "tpr_at_tnr.0.99"
    table12 = recipe.table("12")
    missing = [r.label for r in table12.rows if r.missing]
    assert missing == ["Wiring 400x480", "Wiring 640x480", "Clip 600x600", "Staple 600x600"]
    clip_200 = next(r for r in table12.rows if r.label == "Clip 200x200")
    assert {c.experiment for c in clip_200.cells} == {"window-200"} and recipe.experiments["window-200"]["options"] == {"crop": "200x200"}
    table13 = recipe.table("13")
    assert [c.experiment for c in table13.rows[0].cells] == ["whole-train-normalisation", "base"]
    # every published cell is found where the layout puts it
    for table in recipe.tables_spec:
        spec = recipe.table(table)
        for row in spec.rows:
            assert all(recipe.paper_value(table, row.label, column) is not None for column in spec.columns), (table, row.label)
    assert recipe.paper_value("6", "Mean", "PatchCore") == Published(88.4, 10.1, 8)
    assert recipe.paper_fit_seconds("draem") == 29438


@pytest.mark.parametrize("table", ["6", "7", "9"])
def test_the_papers_mean_rows_are_category_means_with_their_population_std(recipe, table) -> None:
    """The convention our mean rows follow, checked on the paper's own numbers (to its rounding)."""
    spec = recipe.table(table)
    for column in spec.columns:
        means = [recipe.paper_value(table, row.label, column).mean for row in spec.rows]
        mean = recipe.paper_value(table, "Mean", column)
        assert np.mean(means) == pytest.approx(mean.mean, abs=0.1)  # from rounded cells: within 0.1
        population, sample = abs(np.std(means) - mean.std), abs(np.std(means, ddof=1) - mean.std)
        assert population < 0.25 and population < sample  # ddof 0 (ddof 1 is off by 0.59 to 2.85)


def test_the_grid_shares_experiments_between_tables(recipe) -> None:
    assert len(recipe.plan(["6"])) == 36
    assert len(recipe.plan(["6", "7", "8", "9"])) == 36  # one run serves Tables 6-9
    everything = recipe.plan(list(recipe.tables_spec))
    assert len(everything) == 36 + 36 + 12 + 6  # + augmentation, + 200 x 200 windows, + EfficientAD normalisation
    whole = [e for e in everything if e.variant == "whole-train-normalisation"]
    assert {e.method for e in whole} == {"efficientad"} and whole[0].overrides == {"map_normalisation": "train"}
    assert len(recipe.plan(["6"], methods=["padim"], categories=["pipe_clip"])) == 1
    with pytest.raises(ConfigError, match="no method"):
        recipe.plan(["6"], methods=["nope"])
    with pytest.raises(ConfigError, match="no table"):
        recipe.table("5")


def test_welch_from_summaries_equals_scipy_on_the_samples() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(70, 3, 8), rng.normal(74, 1, 5)
    ours = Ours(float(a.mean()), float(a.std(ddof=1)), 8)
    paper = Published(float(b.mean()), float(b.std(ddof=1)), 5)
    assert welch_p(ours, paper) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert welch_p(Ours(70.0, 0.0, 1), paper) is None  # one seed: nothing to test
    assert welch_p(Ours(70.0, 0.0, 3), Published(71.0, 0.0, 8)) is None  # no spread on either side


def _record(detector: str, category: str, seed: int, auroc: float, **extra) -> dict:
    record = {
        "detector": detector,
        "dataset": "autovi",
        "category": category,
        "seed": seed,
        "profile": "paper",
        "status": "ok",
        "overrides": extra.pop("overrides", {}),
        "options": extra.pop("options", {}),
        "metrics": {"image_auroc": auroc, "tpr_at_tnr": {"0.99": 0.1, "0.95": 0.2, "0.9": 0.3}},
    }
    record.update(extra)
    return record


def test_cells_are_compared_with_the_paper_and_marked_by_direction(recipe) -> None:
    rng = np.random.default_rng(1)
    records = []
    for seed in range(8):
        records.append(_record("patchcore", "pipe_clip", seed, 0.60 + rng.normal(0, 0.01)))  # paper 73.3 ± 0.9: lower
        records.append(_record("patchcore", "pipe_staple", seed, 0.923 + rng.normal(0, 0.006)))  # paper 92.3 ± 0.6: same
        records.append(_record("padim", "underbody_screw", seed, 0.95 + rng.normal(0, 0.01)))  # paper 82.6 ± 1.7: higher
    table = compare(recipe, "6", records, profile="paper", dataset="autovi", seeds=range(8))
    cell = {(row.label, c.paper and col): c for row in table.rows for col, c in zip(table.spec.columns, row.cells)}
    assert cell[("Clip", "PatchCore")].mark == LOWER
    assert cell[("Staple", "PatchCore")].mark == ""
    assert cell[("U. screw", "PaDiM")].mark == HIGHER
    assert cell[("Clip", "PatchCore")].ours.n == 8 and cell[("Wiring", "PatchCore")].ours is None
    mean = table.rows[-1]
    assert mean.label == "Mean" and all(c.ours is None for c in mean.cells)  # not every category ran
    markdown = render_markdown(table, recipe)
    assert "| Clip |" in markdown and "PatchCore (paper)" in markdown and "73.3±0.9" in markdown and LOWER in markdown
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    clip = next(r for r in rows if r["row"] == "Clip" and r["column"] == "PatchCore")
    assert clip["mark"] == "lower" and float(clip["paper_mean"]) == 73.3 and int(clip["ours_n"]) == 8
    assert "<table>" in render_html([table], recipe) and "class='lower'" in render_html([table], recipe)


def test_variants_are_told_apart_by_options_and_overrides(recipe) -> None:
    records = []
    for seed in range(3):
        records.append(_record("efficientad", "pipe_clip", seed, 0.70 + 0.01 * seed))
        records.append(_record("efficientad", "pipe_clip", seed, 0.80 + 0.01 * seed, overrides={"map_normalisation": "train"}))
        records.append(_record("padim", "pipe_clip", seed, 0.50 + 0.01 * seed, options={"crop": "200x200"}))
        records.append(_record("padim", "pipe_clip", seed, 0.60 + 0.01 * seed))
    table13 = compare(recipe, "13", records, profile="paper", dataset="autovi", seeds=[0, 1, 2])
    clip = next(r for r in table13.rows if r.label == "Clip")
    assert [round(c.ours.mean, 6) for c in clip.cells] == [81.0, 71.0]
    table12 = compare(recipe, "12", records, profile="paper", dataset="autovi", seeds=[0, 1, 2])
    by_label = {r.label: r for r in table12.rows}
    padim = table12.spec.columns.index("PaDiM")
    assert by_label["Clip 200x200"].cells[padim].ours.mean == pytest.approx(51.0)
    assert by_label["Clip 400x400"].cells[padim].ours.mean == pytest.approx(61.0)
    assert by_label["Clip 600x600"].missing and by_label["Clip 600x600"].cells[padim].paper.mean == 53.5
    other_seeds = compare(recipe, "13", records, profile="paper", dataset="autovi", seeds=[5])
    assert all(c.ours is None for row in other_seeds.rows for c in row.cells)


def test_reproduce_runs_a_reduced_grid_on_synthetic_autovi_and_resumes(tmp_path, capsys, monkeypatch) -> None:
    """The whole command on the synthetic stand-in: experiments run, tables render with the paper's
    columns, windows larger than the images are skipped with why, and a second call resumes."""
    from tests.cli_runner import run_cli

    monkeypatch.setenv("AUTOVI_NO_PROGRESS", "1")
    out = tmp_path / "rep"
    args = ["reproduce", "autovi-paper", "--dataset", "synthetic_autovi", "--seeds", "0", "--profile", "fast", "--in-process"]
    args += ["--methods", "padim", "--categories", "pipe_clip", "--tables", "6,9,12", "--output", str(out)]
    code, dry, err = run_cli(capsys, monkeypatch, *args, "--dry-run")
    assert code == 0, err
    assert "1 of 1" in dry and "✓ backbone tf_efficientnet_lite0" in dry and not (out / "results.jsonl").exists()
    assert "window-200" in err and "uncropped originals" in err  # 200 x 200 does not fit the 128-pixel stand-in
    code, stdout, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    assert "1 experiment(s), 0 already done" in err
    tables = (out / "reproduce" / "tables.md").read_text()
    assert tables in stdout  # printed as written
    for heading in ("### Table 6: image AUROC", "### Table 9: AUsPRO up to pixel FPR 0.05", "### Table 12: image AUROC by window size"):
        assert heading in tables
    clip = next(line for line in tables.splitlines() if line.startswith("| Clip |"))
    cells = [c.strip() for c in clip.strip("|").split("|")]
    padim_ours, padim_paper = cells[9], cells[10]  # columns: label, then (ours, paper) per method
    assert padim_paper == "62.6±2.0" and float(padim_ours) > 50
    assert "Clip 600x600: needs the uncropped originals" in tables
    rows = list(csv.DictReader(io.StringIO((out / "reproduce" / "table-6.csv").read_text())))
    assert {r["column"] for r in rows} == {"CFlow", "DRAEM", "DSR", "EfficientAD", "PaDiM", "PatchCore"}
    assert "<table>" in (out / "reproduce" / "index.html").read_text()
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0 and "1 experiment(s), 1 already done" in err
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
