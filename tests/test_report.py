"""Tests for autovi_core.report: loading results, dotted metrics, Welch marking and rendering."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from autovi_core.errors import ConfigError, DataError
from autovi_core.report import (
    MEAN_ROW,
    Row,
    build_table,
    load_results,
    metric_value,
    render,
    render_csv,
    render_html,
    render_markdown,
)


def rec(
    detector: str,
    category: str,
    seed: int,
    auroc: float | None,
    *,
    dataset: str = "autovi",
    profile: str = "paper",
    status: str = "ok",
    supervised: bool = False,
    **metrics: object,
) -> dict:
    """A hand-made results.jsonl record."""
    return {
        "detector": detector,
        "dataset": dataset,
        "category": category,
        "seed": seed,
        "profile": profile,
        "status": status,
        "error": None if status == "ok" else "boom",
        "supervised": supervised,
        "metrics": {
            "image_auroc": auroc,
            "image_ap": 0.5,
            "tpr_at_tnr": {"0.99": 0.1, "0.95": 0.2, "0.9": 0.3},
            "auc_spro": {"0.01": 0.01, "0.05": 0.05, "0.1": 0.1, "0.3": 0.3, "1.0": 1.0},
            "pixel_auroc": None,
            **metrics,
        },
        "timing": {"fit_s": 12.5, "predict_images_per_s": 40.0, "peak_rss_mb": 900.0},
    }


def write(tmp_path: Path, records: list[dict], tail: str = "") -> Path:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


ROW = Row("autovi", "pipe_staple")


# --------------------------------------------------------------------------- loading


def test_load_truncated_last_line_skipped(tmp_path: Path) -> None:
    write(tmp_path, [rec("a", "c", 0, 0.9), rec("a", "c", 1, 0.8)], tail='{"detector": "a", "cat')
    records, unreadable = load_results(tmp_path)  # the run directory
    assert len(records) == 2 and unreadable == 1
    records2, unreadable2 = load_results(tmp_path / "results.jsonl")  # the file itself
    assert records2 == records and unreadable2 == 1
    out = render(records, "image_auroc", "md", unreadable=unreadable)
    assert "1 unreadable line(s) skipped" in out


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="results.jsonl"):
        load_results(tmp_path)


# --------------------------------------------------------------------------- metrics


def test_dotted_metric_paths() -> None:
    r = rec("a", "c", 0, 0.9)
    assert metric_value(r, "image_auroc") == 0.9
    assert metric_value(r, "auc_spro.0.05") == 0.05
    assert metric_value(r, "auc_spro.1.0") == 1.0
    assert metric_value(r, "tpr_at_tnr.0.9") == 0.3
    assert metric_value(r, "tpr_at_tnr.0.99") == 0.1
    assert metric_value(r, "timing.fit_s") == 12.5
    assert metric_value(r, "timing.predict_images_per_s") == 40.0
    assert metric_value(r, "pixel_auroc") is None
    assert metric_value(r, "auc_spro.0.2") is None
    assert metric_value(r, "nope.x") is None


def test_dotted_metric_in_table_and_timing_defaults() -> None:
    table = build_table([rec("a", "c", 0, 0.9)], "auc_spro.0.05")
    assert table.cell(Row("autovi", "c"), "a").mean == pytest.approx(5.0)
    fit = build_table([rec("a", "c", 0, 0.9), rec("b", "c", 0, 0.9)], "timing.fit_s")
    assert fit.scale == 1.0 and fit.higher_is_better is False
    assert fit.cell(Row("autovi", "c"), "a").mean == 12.5


def test_lower_is_better_marks_smallest() -> None:
    a, b = rec("a", "c", 0, 0.9), rec("b", "c", 0, 0.9)
    b["timing"]["fit_s"] = 3.0
    table = build_table([a, b], "timing.fit_s")
    row = Row("autovi", "c")
    assert table.cell(row, "b").mark == "best" and table.cell(row, "a").mark == ""
    assert build_table([a, b], "timing.batch1_latency_ms").higher_is_better is False


# --------------------------------------------------------------------------- statistics


def test_mean_std_match_numpy() -> None:
    vals = [0.91, 0.87, 0.95]
    table = build_table([rec("a", "pipe_staple", s, v) for s, v in enumerate(vals)])
    cell = table.cell(ROW, "a")
    scaled = np.array(vals) * 100
    assert cell.mean == pytest.approx(scaled.mean())
    assert cell.std == pytest.approx(scaled.std(ddof=1))
    assert cell.n == 3


def test_single_seed_std_zero_and_only_exact_ties() -> None:
    records = [rec("a", "pipe_staple", 0, 0.9), rec("b", "pipe_staple", 0, 0.9), rec("c", "pipe_staple", 0, 0.8999)]
    table = build_table(records)
    assert table.cell(ROW, "a").std == 0.0
    assert [table.cell(ROW, m).mark for m in "abc"] == ["best", "best", ""]


def test_zero_variance_both_groups_no_tie() -> None:
    records = [rec("a", "pipe_staple", s, 0.9) for s in range(3)]
    records += [rec("b", "pipe_staple", s, 0.89) for s in range(3)]
    table = build_table(records)
    assert table.cell(ROW, "a").mark == "best" and table.cell(ROW, "b").mark == ""


@pytest.mark.parametrize(
    ("best", "other", "tied"),
    [
        ([0.90, 0.91, 0.92], [0.70, 0.71, 0.72], False),  # clearly different
        ([0.90, 0.95, 0.85], [0.88, 0.93, 0.86], True),  # overlapping
    ],
)
def test_welch_marking_matches_scipy(best: list[float], other: list[float], tied: bool) -> None:
    p = stats.ttest_ind(np.array(best) * 100, np.array(other) * 100, equal_var=False).pvalue
    assert bool(p >= 0.05) is tied  # the case is what it claims to be
    records = [rec("a", "pipe_staple", s, v) for s, v in enumerate(best)]
    records += [rec("b", "pipe_staple", s, v) for s, v in enumerate(other)]
    table = build_table(records)
    assert table.cell(ROW, "a").mark == "best"
    assert table.cell(ROW, "b").mark == ("tied" if tied else "")
    other_text = f"{np.mean(other) * 100:.1f} ± {np.std(other, ddof=1) * 100:.1f}"
    md = render_markdown(table)
    assert (f"**{other_text}**" in md) is tied and other_text in md


def test_failed_rows_ignored_but_counted() -> None:
    records = [rec("a", "pipe_staple", 0, 0.9), rec("a", "pipe_staple", 1, 0.1, status="failed")]
    table = build_table(records)
    assert table.cell(ROW, "a").n == 1 and table.cell(ROW, "a").mean == pytest.approx(90.0)
    assert table.n_failed == 1
    assert "1 failed run(s) ignored" in render_markdown(table)


def test_failure_resumed_successfully_is_not_counted() -> None:
    records = [rec("a", "pipe_staple", 0, 0.1, status="failed"), rec("a", "pipe_staple", 0, 0.9)]
    table = build_table(records)
    assert table.n_failed == 0 and table.cell(ROW, "a").mean == pytest.approx(90.0)


def test_duplicates_last_ok_wins() -> None:
    records = [
        rec("a", "pipe_staple", 0, 0.5),
        rec("a", "pipe_staple", 0, 0.7),
        rec("a", "pipe_staple", 0, 0.1, status="failed"),  # a failed retry does not override
    ]
    cell = build_table(records).cell(ROW, "a")
    assert cell.n == 1 and cell.mean == pytest.approx(70.0)


def test_supervised_suffix_and_profiles() -> None:
    records = [rec("a", "c", 0, 0.9), rec("segad", "c", 0, 0.95, supervised=True)]
    assert build_table(records).methods == ["a", "segad (sup.)"]
    records = [rec("a", "c", 0, 0.9), rec("a", "c", 0, 0.8, profile="fast")]
    assert build_table(records).methods == ["a [fast]", "a [paper]"]


def test_composite_detectors_name_their_members_in_the_column() -> None:
    fused = rec("ensemble", "c", 0, 0.9)
    fused["provenance"] = {"member_names": ["patchcore", "padim"]}
    other = rec("ensemble", "c", 0, 0.8)
    other["overrides"] = {"fusion": "max"}
    other["provenance"] = {"member_names": ["patchcore", "padim"]}
    assert build_table([fused, rec("a", "c", 0, 0.7)]).methods == ["a", "ensemble[patchcore+padim]"]
    methods = build_table([fused, other]).methods
    assert methods == ["ensemble[patchcore+padim]", "ensemble[patchcore+padim] {fusion=max}"], methods
    fused["provenance"] = {"member_names": "not a list"}
    assert build_table([fused]).methods == ["ensemble"]


def test_null_metric_skipped() -> None:
    table = build_table([rec("a", "c", 0, 0.9)], "pixel_auroc")
    assert table.methods == [] and "No results" in render_markdown(table)


# --------------------------------------------------------------------------- mean row


def test_mean_row_over_per_seed_means() -> None:
    vals = {("c1", 0): 0.9, ("c2", 0): 0.7, ("c1", 1): 0.8, ("c2", 1): 0.8}
    records = [rec("a", c, s, v) for (c, s), v in vals.items()]
    table = build_table(records)
    assert [r.category for r in table.rows] == ["c1", "c2", MEAN_ROW]
    cell = table.cell(Row("autovi", MEAN_ROW, True), "a")
    per_seed = [(90 + 70) / 2, (80 + 80) / 2]
    assert cell.mean == pytest.approx(np.mean(per_seed))
    assert cell.std == pytest.approx(np.std(per_seed, ddof=1))
    assert not cell.flagged and cell.n == 2


def test_mean_row_incomplete_is_flagged() -> None:
    records = [rec("a", "c1", 0, 0.9), rec("a", "c2", 0, 0.7), rec("a", "c1", 1, 0.8)]
    records += [rec("b", "c1", 0, 0.6), rec("b", "c2", 0, 0.6)]
    table = build_table(records)
    mean_row = Row("autovi", MEAN_ROW, True)
    cell = table.cell(mean_row, "a")
    assert cell.flagged and cell.mean == pytest.approx((85 + 70) / 2)
    assert table.cell(mean_row, "b").mark == "best"  # flagged cells do not compete
    assert table.footnotes and "†" in render_markdown(table)


# --------------------------------------------------------------------------- rendering


def test_csv_parses_back() -> None:
    records = [rec("a", "c1", s, 0.9 + s / 100) for s in range(2)] + [rec("b", "c1", 0, 0.5)]
    table = build_table(records)
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    assert list(rows[0]) == ["dataset", "category", "method", "mean", "std", "n", "best"]
    first = rows[0]
    assert first["method"] == "a" and first["best"] == "best" and int(first["n"]) == 2
    assert float(first["mean"]) == pytest.approx(90.5)
    assert {r["category"] for r in rows} == {"c1", MEAN_ROW}
    assert render(records, "image_auroc", "csv") == render_csv(table)


def test_html_escapes() -> None:
    records = [rec("<script>x</script>", "a&b", 0, 0.9)]
    out = render_html(build_table(records))
    assert out == render(records, "image_auroc", "html")
    assert "<script>x" not in out and "&lt;script&gt;" in out and "a&amp;b" in out
    assert "<b>90.0</b>" in out and "±" not in out and out.startswith("<!DOCTYPE html>")


def test_markdown_header() -> None:
    md = render([rec("a", "c", s, 0.9) for s in range(3)], "image_auroc", "md")
    header = md.splitlines()[0]
    assert "image_auroc" in header and "×100" in header and "Welch" in header
    assert "5%" in header and "3 seed(s)" in header
    assert "**90.0 ± 0.0**" in md  # three seeds that agree: a measured zero spread


def test_one_seed_has_no_spread() -> None:
    md = render([rec("a", "c", 0, 0.9), rec("b", "c", 0, 0.8)], "image_auroc", "md")
    assert "±" not in md.split("\n", 1)[1] and "**90.0**" in md and "| 80.0 |" in md
    assert "one value per cell (no spread) over 1 seed(s)" in md.splitlines()[0]


def test_unknown_format() -> None:
    with pytest.raises(ConfigError, match="md, csv, html"):
        render([], "image_auroc", "pdf")


# --------------------------------------------------------------------------- property

score = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
experiments = st.dictionaries(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["c1", "c2"]), st.integers(0, 2)),
    score,
    min_size=1,
    max_size=18,
)


@settings(max_examples=60, deadline=None)
@given(experiments, st.randoms(use_true_random=False))
def test_record_order_never_changes_table(exps: dict, rnd) -> None:
    records = [rec(d, c, s, v) for (d, c, s), v in exps.items()]
    shuffled = records[:]
    rnd.shuffle(shuffled)
    assert build_table(records) == build_table(shuffled)
    assert render_csv(build_table(records)) == render_csv(build_table(shuffled))
