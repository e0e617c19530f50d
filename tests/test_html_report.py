"""`autovi report DIR --format html`: the data behind each figure, the pictures chosen, bad input, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from html_report_fixtures import LEVELS, make_experiment, make_run, write_records

pytest.importorskip("matplotlib")

from autovi_core.html_report import write_html_report  # noqa: E402
from autovi_core.html_report.curves import average_precision, precision_recall_curve, roc_curve, trapezoid_area  # noqa: E402
from autovi_core.html_report.data import gather  # noqa: E402
from autovi_core.html_report.figures import histogram_data, spro_data  # noqa: E402
from autovi_core.html_report.grid import choose_grid_keys, failure_keys  # noqa: E402


class Page(HTMLParser):
    """The parts of index.html the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.grids: list[list[str]] = []
        self.notes = ""
        self._in_notes = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        if "href" in a:
            self.links.append(a["href"])
        if tag == "table" and "data-keys" in a:
            self.grids.append(a["data-keys"].split(", "))
        if tag == "section" and a.get("class") == "notes":
            self._in_notes = 1
        elif self._in_notes and tag == "section":
            self._in_notes += 1

    def handle_endtag(self, tag: str) -> None:
        if self._in_notes and tag == "section":
            self._in_notes -= 1

    def handle_data(self, data: str) -> None:
        if self._in_notes:
            self.notes += data


def _page(index: Path) -> Page:
    page = Page(index.read_text(encoding="utf-8"))
    for image in page.images:
        assert image["src"] and not image["src"].startswith(("http:", "https:", "//", "/")), image
        assert (index.parent / image["src"]).is_file(), image["src"]
        assert image.get("alt"), image
    assert not any(link.startswith(("http:", "https:", "//")) for link in page.links)
    return page


# --------------------------------------------------------------------------- curves


@pytest.mark.parametrize("seed", range(5))
def test_curves_equal_sklearn(seed):
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    scores = np.round(rng.normal(size=n), 1)  # rounded: ties between good and defective images
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    fpr, tpr, thr = roc_curve(scores, labels)
    want = metrics.roc_curve(labels, scores, drop_intermediate=False)
    for got, expected in zip((fpr, tpr, thr), want):
        np.testing.assert_allclose(got, expected)
    precision, recall, pr_thr = precision_recall_curve(scores, labels)
    want = metrics.precision_recall_curve(labels, scores)
    for got, expected in zip((precision, recall, pr_thr), want):
        np.testing.assert_allclose(got, expected)
    assert trapezoid_area(fpr, tpr) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert average_precision(precision, recall) == pytest.approx(metrics.average_precision_score(labels, scores))


# --------------------------------------------------------------------------- data behind the figures


def test_histogram_thresholds_are_the_calibrated_ones(tmp_path):
    run = tmp_path / "run"
    _, records = make_run(run, categories=("plate",), detectors=("alpha", "beta"), seeds=(3, 1))
    data = gather(run)
    (category,) = data.categories
    for method in ("alpha", "beta"):
        experiment = category.shown(method)
        assert experiment.seed == 1  # the lowest seed is drawn
        histogram = histogram_data(experiment)
        record = next(r for r in records if r["detector"] == method and r["seed"] == 1)
        assert histogram.thresholds == {lv: record["metrics"]["calibrated"][lv]["threshold"] for lv in LEVELS}
        images = json.loads((run / record["experiment_file"]).read_text())["images"]
        assert sorted(histogram.good) == sorted(i["score"] for i in images if i["label"] == 0)
        assert sorted(histogram.defective) == sorted(i["score"] for i in images if i["label"] == 1)
        assert spro_data(experiment).auc_limit == record["metrics"]["auc_spro"]["0.05"]

    # the thresholds table of the page prints the same numbers, and names the lowest seed
    text = write_html_report(run).read_text()
    for record in (r for r in records if r["seed"] == 1):
        for lv in LEVELS:
            assert f'<td class="v">{record["metrics"]["calibrated"][lv]["threshold"]:.4g}</td>' in text
    assert "every method: seed 1 (the lowest with an experiment file, of 2 seeds in the tables)" in text


def test_thresholds_fall_back_to_the_record_when_the_file_has_none(tmp_path):
    run = tmp_path / "run"
    _, records = make_run(run, categories=("plate",), detectors=("alpha",), seeds=(0,))
    path = run / records[0]["experiment_file"]
    content = json.loads(path.read_text())
    content["thresholds"] = None
    path.write_text(json.dumps(content))
    histogram = histogram_data(gather(run).categories[0].shown("alpha"))
    assert histogram.thresholds == {lv: records[0]["metrics"]["calibrated"][lv]["threshold"] for lv in LEVELS}


# --------------------------------------------------------------------------- pictures chosen


def test_choose_grid_keys_and_failure_keys():
    a = ["good/002", "good/000", "good/001", "crack/003", "crack/001", "hole/000"]
    b = ["good/000", "good/001", "good/002", "crack/003", "hole/000"]  # crack/001 was a labelled training image
    assert choose_grid_keys([a, b], per_dir=2) == ["good/000", "good/001", "crack/003", "crack/001", "hole/000"]
    assert choose_grid_keys([]) == []
    keys = ["good/0", "good/1", "good/2", "bad/0", "bad/1", "bad/2"]
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.5, 0.9, 0.5, 0.1, 2.0, 0.1])
    assert failure_keys(keys, labels, scores, n=2) == (["good/1", "good/0"], ["bad/0", "bad/2"])


def test_grid_shows_the_images_it_says(tmp_path):
    run = tmp_path / "run"
    make_run(run, categories=("plate", "clip"), detectors=("alpha", "beta"), seeds=(0,), supervised=("beta",))
    index = write_html_report(run)
    page = _page(index)
    expected = ["good/000", "good/001", "crack/000", "crack/001", "missing/000", "missing/001"]
    assert page.grids == [expected, expected]
    text = index.read_text()
    for key in expected:  # one grid row per key in each of the two categories
        assert text.count(f'<td class="key">{key}</td>') == 2
    # one map file per (category, method, grid key), its alt text naming method and key (the galleries reuse it)
    for method in ("alpha", "beta (sup.)"):
        for key in expected:
            srcs = {i["src"] for i in page.images if i["alt"].startswith(f"{method} anomaly map over the image for {key},")}
            assert len(srcs) == 2, (method, key)
    # ground truth outlines exist for defective keys only
    outlined = {i["alt"].split()[3] for i in page.images if "ground truth of" in i["alt"]}
    assert not any(k.startswith("good/") for k in outlined) and {k for k in expected if not k.startswith("good/")} <= outlined
    # galleries: the highest-scored good and lowest-scored defective images of each method
    data = gather(run)
    for category in data.categories:
        for method in ("alpha", "beta (sup.)"):
            keys, labels, scores = category.shown(method).images()
            good, bad = failure_keys(keys, labels, scores, 4)
            for key in good + bad:
                assert any(
                    i["alt"] == f"{method} anomaly map over the image for {key}, white contour at its 99 % threshold 0.9"
                    for i in page.images
                )
    assert "supervised</span>" in text and "Dashed lines: supervised methods (beta (sup.))" in text


def test_grid_picture_is_the_map_on_its_fixed_scale(tmp_path):
    """A map thumbnail's colours come from the method's map_range, not from the picture's own range."""
    from PIL import Image

    from autovi_core.html_report import pictures

    run = tmp_path / "run"
    make_run(run, categories=("plate",), detectors=("alpha",), seeds=(0,), size=32)
    lut = pictures.colormap_lut()
    colours = pictures.colourise(np.array([0.0, 0.5, 1.0]), 0.0, 1.0, lut)
    assert (colours[0] == lut[0]).all() and (colours[2] == lut[255]).all() and (colours[1] == lut[128]).all()
    # the same value on two scales gives two colours
    assert not (pictures.colourise(np.array([0.5]), 0.0, 1.0, lut) == pictures.colourise(np.array([0.5]), 0.0, 2.0, lut)).all()
    index = write_html_report(run)
    picture = next(i for i in _page(index).images if i["alt"].startswith("alpha anomaly map over the image for good/000"))
    with Image.open(index.parent / picture["src"]) as handle:
        assert handle.size == (32, 32)  # never upscaled
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    assert pictures.boundary(mask).sum() == 12 and not pictures.boundary(mask)[2:4, 2:4].any()


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_render_and_the_notes_name_what_was_skipped(tmp_path):
    run = tmp_path / "run"
    root, records = make_run(run, categories=("plate",), detectors=("alpha", "beta", "gamma", "delta"), seeds=(0,))
    old = dict(records[0], seed=7)
    del old["experiment_file"]  # a record of an older autovi
    failed = {
        "detector": "omega",
        "dataset": "folder",
        "category": "plate",
        "seed": 0,
        "profile": "fast",
        "status": "failed",
        "error": "boom: out of memory",
    }
    (run / records[1]["experiment_file"]).unlink()  # beta: file missing
    (run / records[2]["experiment_file"]).write_text('{"format": "autovi-experiment/1", "images": [')  # gamma: damaged
    shutil.rmtree(run / "maps" / "delta")  # delta: maps folder gone
    write_records(run, [*records, old, failed], tail='{"detector": "alpha", "status": "o')  # half-written last line

    index = write_html_report(run)
    page = _page(index)
    notes = page.notes
    assert "1 unreadable line(s) of results.jsonl skipped" in notes
    assert "failed experiments (not shown): omega/folder/plate/seed0: boom: out of memory" in notes
    assert "records without an experiment file" in notes and "alpha/folder/plate/seed7" in notes
    assert "experiments/folder/plate/beta/seed0-fast.json" in notes
    assert "experiments/folder/plate/gamma/seed0-fast.json" in notes
    assert "maps folders missing" in notes and str(run / "maps" / "delta") in notes
    text = index.read_text()
    # what could be drawn was: alpha's curves and maps, delta's curves without maps
    assert "alpha anomaly map over the image" in text and "delta anomaly map" not in text
    assert "beta: not drawn (no readable experiment file)" in text
    assert "alpha: seed 0 (the lowest with an experiment file, of 2 seeds in the tables)" in text
    assert [len(g) for g in page.grids] == [6]


def test_gone_dataset_root_and_unsaved_maps_are_said(tmp_path):
    run = tmp_path / "run"
    root, records = make_run(run, categories=("plate",), detectors=("alpha",), seeds=(0,))
    records.append(make_experiment(run, root, "beta", "plate", 0, save_maps=False))
    write_records(run, records)
    text = write_html_report(run).read_text()
    assert "beta: maps not saved (run with autovi run ... --save-maps)." in text

    shutil.rmtree(root)
    index = write_html_report(run, tmp_path / "elsewhere")
    page = _page(index)
    assert f"the dataset root {root} is gone" in page.notes
    assert "image unavailable" in index.read_text()
    # the maps are still drawn, on their own
    assert any(i["alt"].startswith("alpha anomaly map (dataset image unavailable) for good/000") for i in page.images)


def test_an_old_results_folder_renders_its_tables(tmp_path):
    run = tmp_path / "run"
    _, records = make_run(run, categories=("plate",), detectors=("alpha",), seeds=(0, 1))
    shutil.rmtree(run / "experiments")
    shutil.rmtree(run / "maps")
    write_records(run, [{k: v for k, v in r.items() if k != "experiment_file"} for r in records])
    index = write_html_report(run)
    page = _page(index)
    text = index.read_text()
    assert "records without an experiment file" in page.notes
    assert "No curves" in text and "alpha" in text and "<td>image AUROC</td>" in text
    assert [i["src"] for i in page.images] == ["img/timing.png"]


def test_strings_are_escaped(tmp_path):
    run = tmp_path / "run"
    make_run(run, categories=("a&b",), detectors=("x<i>y",), seeds=(0,))
    text = write_html_report(run).read_text()
    assert "x<i>y" not in text and "x&lt;i&gt;y" in text and "a&amp;b" in text
    _page(run / "report" / "index.html")


# --------------------------------------------------------------------------- command line


def test_cli_writes_the_report_folder_and_prints_its_index(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    make_run(run, categories=("plate",), detectors=("alpha",), seeds=(0,))
    code, out, err = run_cli(capsys, monkeypatch, "report", str(run), "--format", "html")
    assert code == 0, err
    index = run / "report" / "index.html"
    assert out.strip() == str(index) and index.is_file()
    page = _page(index)
    assert len(page.images) > 10
    assert "<script" not in index.read_text() and '<link rel="stylesheet"' not in index.read_text()

    code, out, err = run_cli(
        capsys, monkeypatch, "report", str(run / "results.jsonl"), "--format", "html", "--output", str(tmp_path / "out")
    )
    assert code == 0 and out.strip() == str(tmp_path / "out" / "index.html")
    # --metric adds a summary table to the three default ones
    code, out, err = run_cli(capsys, monkeypatch, "report", str(run), "--format", "html", "--metric", "timing.fit_s")
    assert code == 0 and "<caption>timing.fit_s" in index.read_text()
    code, out, _ = run_cli(capsys, monkeypatch, "report", str(run), "--format", "md")
    assert code == 0 and out.startswith("image_auroc") and "| alpha |" in out

    (tmp_path / "file").write_text("")
    code, out, err = run_cli(capsys, monkeypatch, "report", str(run), "--format", "html", "--output", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err


def test_without_matplotlib_html_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    write_records(run, [])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run_cli(capsys, monkeypatch, "report", str(run), "--format", "html")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and 'pip install "autovi-core[report]"' in err


def test_help_imports_no_matplotlib():
    code = (
        "import sys; sys.argv = ['autovi', 'report', '--help']\n"
        "import autovi_core.html_report\n"
        "from autovi_core import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('MPL', any(m.startswith('matplotlib') for m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--format" in proc.stdout and "MPL False" in proc.stdout


# --------------------------------------------------------------------------- a real run


@pytest.mark.slow
def test_report_of_a_real_run(tmp_path, capsys, monkeypatch, example_plugin):
    out = tmp_path / "run"
    args = ["run", "-d", "pixel_gaussian", "-c", "clip_assembly", "-s", "0", "--in-process", "--save-maps", "--output", str(out)]
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["experiment_file"]
    code, stdout, err = run_cli(capsys, monkeypatch, "report", str(out), "--format", "html")
    assert code == 0, err
    index = Path(stdout.strip())
    page = _page(index)
    assert page.notes == ""
    data = gather(out)
    experiment = data.categories[0].shown("pixel_gaussian")
    assert histogram_data(experiment).thresholds == {lv: record["metrics"]["calibrated"][lv]["threshold"] for lv in LEVELS}
    keys = experiment.images()[0]
    (grid,) = page.grids
    assert grid == choose_grid_keys([keys]) and len(grid) == 2 * len({k.split("/")[0] for k in keys})
    for key in grid:
        assert any(i["alt"].startswith(f"pixel_gaussian anomaly map over the image for {key}") for i in page.images)
    for name in ("roc_pr.png", "spro.png", "histograms.png"):
        assert any(i["src"].endswith(name) for i in page.images)


# A results.jsonl line as autovi-core 0.2 wrote it: no experiment file, no provenance, no API
# version, weights_source inside hparams, timing without latency or GPU memory.
RECORD_0_2 = {
    "detector": "patchcore",
    "dataset": "autovi",
    "category": "pipe_clip",
    "seed": 0,
    "profile": "paper",
    "status": "ok",
    "error": None,
    "overrides": {},
    "supervised": False,
    "metrics": {"image_auroc": 0.733, "image_ap": 0.56, "auc_spro": {"0.05": 0.41, "1.0": 0.8}, "pixel_auroc": 0.95},
    "timing": {"fit_s": 662.0, "predict_images_per_s": 12.2, "peak_rss_mb": 2800.0},
    "hparams": {"backbone": "wide_resnet50_2", "weights_source": "timm cache"},
    "versions": {"autovi-core": "0.2.0", "plugin": "0.2.0", "torch": "2.3.0"},
    "device": "cpu",
}


def test_a_results_file_from_autovi_0_2_renders_what_it_can(tmp_path):
    lines = [json.dumps(RECORD_0_2), json.dumps(dict(RECORD_0_2, seed=1, status="failed", error="out of memory")), '{"detector": "pa']
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    index = write_html_report(tmp_path)
    page, text = _page(index), index.read_text()
    assert "73.3" in text and "41.0" in text and "95.0" in text  # the 0.2 numbers reach the tables
    assert "records without an experiment file" in page.notes and "patchcore/autovi/pipe_clip/seed0" in page.notes
    assert "out of memory" in page.notes and "unreadable" in page.notes
    assert [i["src"] for i in page.images] == ["img/timing.png"]
    assert (index.parent / "img" / "timing.png").stat().st_size > 1000
