"""Plugin discovery, broken plugins, and the CLI contract (list, run, resume, report, evaluate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_plugins import FAULTY_DETECTORS, make_plugin

AUTOVI = [sys.executable, "-m", "autovi_core.cli"]
GOLDEN = Path(os.environ.get("AUTOVI_GOLDEN", Path(__file__).resolve().parent / "golden" / "autovi_eval"))


def autovi(*args: str, site: Path | None = None, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, AUTOVI_NO_PROGRESS="1")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    proc = subprocess.run([*AUTOVI, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"autovi {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_list_json_shows_core_datasets_metrics_and_example(example_plugin):
    entries = json.loads(autovi("list", "--json").stdout)
    assert all(set(e) == {"kind", "name", "distribution", "version", "status", "error"} for e in entries)
    by_kind = {(e["kind"], e["name"]): e for e in entries}
    for name in ("synthetic", "autovi", "mvtec_ad", "mvtec_loco", "visa", "folder"):
        assert by_kind[("dataset", name)]["distribution"] == "autovi-core"
        assert by_kind[("dataset", name)]["status"] == "ok"
    assert ("metric", "image_classification") in by_kind and ("metric", "localisation") in by_kind
    assert by_kind[("detector", "pixel_gaussian")]["distribution"] == "autovi-plugin-pixel-gaussian"


def test_broken_plugin_is_listed_not_fatal(tmp_path):
    site = make_plugin(tmp_path / "site", "autovi-broken", "broken", "autovi_broken_mod", "import no_such_module_xyz\n")
    proc = autovi("list", "--json", site=site)
    broken = [e for e in json.loads(proc.stdout) if e["name"] == "broken"]
    assert broken and broken[0]["status"] == "broken"
    assert "no_such_module_xyz" in broken[0]["error"] and broken[0]["distribution"] == "autovi-broken"
    # the table form works too, and the working plugins stay usable
    assert "broken" in autovi("list", site=site).stdout


def test_plugin_with_wrong_hook_signature_is_broken(tmp_path):
    source = "from autovi_core import hookimpl\n\n@hookimpl\ndef autovi_register_detectors(unexpected):\n    return []\n"
    site = make_plugin(tmp_path / "site", "autovi-badhook", "badhook", "autovi_badhook_mod", source)
    broken = [e for e in json.loads(autovi("list", "--json", site=site).stdout) if e["name"] == "badhook"]
    assert broken and broken[0]["status"] == "broken" and "unexpected" in broken[0]["error"]


def test_disable_plugins_environment_variable(tmp_path, monkeypatch):
    site = make_plugin(tmp_path / "site", "autovi-broken", "broken", "autovi_broken_mod2", "raise ImportError('x')\n")
    monkeypatch.setenv("AUTOVI_DISABLE_PLUGINS", "broken")
    names = {e["name"] for e in json.loads(autovi("list", "--json", site=site).stdout)}
    assert "broken" not in names and "synthetic" in names


def test_plugins_and_exclude_options(tmp_path):
    site = make_plugin(tmp_path / "site", "autovi-broken", "broken", "autovi_broken_mod3", "raise ImportError('x')\n")
    names = {e["name"] for e in json.loads(autovi("--exclude", "broken", "list", "--json", site=site).stdout)}
    assert "broken" not in names and "pixel_gaussian" in names
    names = {e["name"] for e in json.loads(autovi("--plugins", "pixel_gaussian", "list", "--json", site=site).stdout)}
    assert "broken" not in names and "pixel_gaussian" in names and "synthetic" in names


def test_killed_run_leaves_whole_lines_and_resumes(tmp_path, example_plugin):
    """SIGKILL a run while it works; every line on disk parses and --resume completes the run."""
    import signal
    import time

    out = tmp_path / "run"
    args = [*AUTOVI, "run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--output", str(out)]
    seeds = [arg for s in range(6) for arg in ("--seed", str(s))]
    proc = subprocess.Popen(
        [*args, *seeds],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, AUTOVI_NO_PROGRESS="1"),
        start_new_session=True,
    )
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _lines(results)  # every line parses
    assert 2 <= len(done) < 6
    autovi("run", "-d", "pixel_gaussian", "-c", "clip_assembly", "--output", str(out), "--resume", *seeds)
    assert sorted(r["seed"] for r in _lines(results) if r["status"] == "ok") == list(range(6))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_writes_contract_results_and_resumes(tmp_path, example_plugin):
    out = tmp_path / "run"
    proc = autovi(
        "run",
        "--detector",
        "pixel_gaussian",
        "--category",
        "clip_assembly",
        "--seed",
        "0",
        "--seed",
        "1",
        "--output",
        str(out),
        "--save-maps",
    )
    records = _lines(out / "results.jsonl")
    assert [r["seed"] for r in records] == [0, 1]
    r = records[0]
    for key in ("detector", "dataset", "category", "seed", "profile", "status", "error", "metrics", "timing", "versions", "device"):
        assert key in r
    assert r["status"] == "ok" and r["error"] is None and r["dataset"] == "synthetic" and r["device"] == "cpu"
    m = r["metrics"]
    assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["image_ap"] <= 1.0
    assert set(m["tpr_at_tnr"]) == {"0.99", "0.95", "0.9"}
    assert set(m["auc_spro"]) == {"0.01", "0.05", "0.1", "0.3", "1.0"}
    assert set(m["per_defect_type"]) == {"missing_screw", "misplaced_clip"}
    assert 0.5 < m["pixel_auroc"] <= 1.0
    timing = r["timing"]
    assert timing["fit_s"] > 0 and timing["predict_images_per_s"] > 0 and timing["peak_rss_mb"] > 10
    assert timing["batch1_latency_ms"] > 0
    assert timing["evaluate_s"] > 0  # the in-memory metric computation alone
    assert r["torch_threads"] is None or r["torch_threads"] >= 1  # null when no plugin imported torch
    assert r["versions"]["autovi-core"] and r["versions"]["plugin"] == "0.1.0"
    maps = out / "maps" / "pixel_gaussian" / "clip_assembly" / "seed0" / "test"
    assert (maps / "good").is_dir() and any((maps / "missing_screw").glob("*.png"))
    assert len(list((maps.parent / "float").rglob("*.tiff"))) == len(list(maps.rglob("*.png")))
    assert "pixel_gaussian" in proc.stdout  # summary table

    # --resume skips what is ok and runs the rest
    proc = autovi(
        "run",
        "--detector",
        "pixel_gaussian",
        "--category",
        "clip_assembly",
        "--seed",
        "0",
        "--seed",
        "1",
        "--seed",
        "2",
        "--output",
        str(out),
        "--resume",
    )
    assert "2 experiment(s) already ok, 1 to run" in proc.stderr
    assert [r["seed"] for r in _lines(out / "results.jsonl")] == [0, 1, 2]

    # the saved 8-bit maps evaluate with `autovi evaluate`
    from autovi_core.cache import cache_root

    root = cache_root() / "synthetic" / "v1"
    args = ["evaluate", "--dataset-root", str(root), "--category", "clip_assembly"]
    from_png = json.loads(autovi(*args, "--maps", str(maps)).stdout)
    from_float = json.loads(autovi(*args, "--maps", str(maps.parent / "float")).stdout)
    assert set(from_png["localization"]["auc_spro"]) == {"0.01", "0.05", "0.1", "0.3", "1.0"}
    # the float maps reproduce the run's own numbers; 8-bit quantisation moves them only slightly
    for limit, value in records[0]["metrics"]["auc_spro"].items():
        assert from_float["localization"]["auc_spro"][limit] == pytest.approx(value, abs=1e-9)
        assert from_png["localization"]["auc_spro"][limit] == pytest.approx(value, abs=0.02)
    assert from_float["classification"]["image_auroc"] == pytest.approx(records[0]["metrics"]["image_auroc"], abs=1e-9)

    report = autovi("report", str(out)).stdout
    assert "pixel_gaussian" in report and "clip_assembly" in report
    assert "clip_assembly" in autovi("report", str(out), "--format", "csv", "--metric", "auc_spro.0.05").stdout


def test_all_plugins_skips_broken_ones_with_a_warning(tmp_path, example_plugin):
    site = make_plugin(tmp_path / "site", "autovi-broken", "broken", "autovi_broken_mod4", "import no_such_module_q\n")
    out = tmp_path / "run"
    proc = autovi("--plugins", "broken,pixel_gaussian", "run", "--all-plugins", "-c", "clip_assembly", "--output", str(out), site=site)
    assert "skipping broken plugin 'broken'" in proc.stderr and "no_such_module_q" in proc.stderr
    assert {r["detector"] for r in _lines(out / "results.jsonl")} == {"pixel_gaussian"}


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_failing_plugins_fail_alone(tmp_path, example_plugin, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    site = make_plugin(tmp_path / "site", "autovi-faulty", "faulty", "autovi_faulty_mod", FAULTY_DETECTORS)
    out = tmp_path / "run"
    proc = autovi(
        "run",
        "-d",
        "raises",
        "-d",
        "crashes",
        "-d",
        "hangs",
        "-d",
        "hogs",
        "-d",
        "segfaults",
        "-d",
        "pixel_gaussian",
        "-c",
        "clip_assembly",
        "--timeout",
        "40",  # `hangs` waits for it; the others end in seconds, even on a loaded 2-core machine
        "--memory-limit",
        "3000",
        "--executor",
        executor,
        "--output",
        str(out),
        site=site,
        check=False,
    )
    assert proc.returncode == 5, proc.stderr
    records = {r["detector"]: r for r in _lines(out / "results.jsonl")}
    outcomes = {name: (r["status"], r.get("error")) for name, r in records.items()}  # shown when an assertion fails
    assert records["raises"]["status"] == "failed" and "boom in fit" in records["raises"]["error"], outcomes
    assert records["crashes"]["status"] == "failed" and "exit code 3" in records["crashes"]["error"], outcomes
    assert records["hangs"]["status"] == "failed" and "timed out" in records["hangs"]["error"], outcomes
    assert records["hogs"]["status"] == "failed" and "out of memory" in records["hogs"]["error"], outcomes
    assert records["segfaults"]["status"] == "failed" and "SIGSEGV" in records["segfaults"]["error"], outcomes
    assert records["pixel_gaussian"]["status"] == "ok", outcomes
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "-d", "nope"], "unknown detector 'nope'; valid:"),
        (["run", "-d", "pixel_gaussian", "--dataset", "nope"], "unknown dataset 'nope'; valid:"),
        (["run", "-d", "pixel_gaussian", "-c", "nope"], "unknown category 'nope'"),
        (["run", "-d", "pixel_gaussian", "--profile", "nope"], "--profile 'nope' refused: expects one of 'paper', 'fast'"),
        (["run", "-d", "pixel_gaussian", "--set", "nope=1"], "no hyperparameter 'nope'; valid:"),
        (["run"], "choose detectors with --detector NAME or --all-plugins"),
        (["report", "/nonexistent/run"], "/nonexistent/run"),
        (["run", "--no-such-option"], "No such option: --no-such-option"),
    ],
)
def test_errors_are_one_line_and_name_the_culprit(args, fragment, example_plugin, tmp_path):
    proc = autovi(*args, "--output", str(tmp_path / "o"), check=False) if args[0] == "run" else autovi(*args, check=False)
    assert proc.returncode != 0
    assert fragment in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("category", ["synth", "pipe_staple"])
def test_evaluate_golden_cases_both_modes(category):
    expected = json.loads((GOLDEN / "EXPECTED.json").read_text())[category]
    maps = GOLDEN / "anomaly_maps" / category / "test"
    args = ["evaluate", "--dataset-root", str(GOLDEN / "dataset"), "--category", category, "--maps", str(maps)]
    official = json.loads(autovi(*args, "--spro-mode", "official").stdout)
    for limit, value in expected["official_metrics_json"]["localization"]["auc_spro"].items():
        assert official["localization"]["auc_spro"][limit] == pytest.approx(value, abs=1e-9)
    exact = json.loads(autovi(*args).stdout)
    for limit, value in expected["exact_curve_auc_spro"]["auc_spro_exact"].items():
        assert exact["localization"]["auc_spro"][limit] == pytest.approx(value, abs=1e-9)
    assert exact["classification"]["image_auroc"] == pytest.approx(expected["image_auroc_all_defects_vs_good"], abs=1e-12)
    scores = {k + ".png": v for k, v in exact["image_scores"].items()}
    assert scores == pytest.approx(expected["image_scores_max"])


def test_evaluate_reports_missing_map(tmp_path):
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(GOLDEN / "anomaly_maps" / "synth" / "test", maps)
    (maps / "scratch" / "000.png").unlink()
    proc = autovi("evaluate", "--dataset-root", str(GOLDEN / "dataset"), "--category", "synth", "--maps", str(maps), check=False)
    assert proc.returncode != 0 and "scratch/000.png: missing anomaly map" in proc.stderr


def _golden_maps(tmp_path: Path) -> Path:
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(GOLDEN / "anomaly_maps" / "synth" / "test", maps)
    return maps


def _write_npy(path: Path, array) -> None:
    import numpy as np

    np.save(path, np.asarray(array))


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (
            lambda m: (m / "scratch" / "001.png").write_bytes((m / "scratch" / "000.png").read_bytes()),
            "scratch/001.png: map without a test image",
        ),
        (
            lambda m: ((m / "good" / "000.png").unlink(), (m / "good" / "000.bmp").write_bytes(b"BM")),
            "good/000.bmp: unsupported anomaly-map type",
        ),
        (
            lambda m: ((m / "good" / "001.png").unlink(), _write_npy(m / "good" / "001.npy", [[float("nan"), 1.0], [0.0, 1.0]])),
            "good/001.npy: anomaly map holds NaN or infinite values",
        ),
        (
            lambda m: ((m / "good" / "001.png").unlink(), _write_npy(m / "good" / "001.npy", [[[1.0, 2.0]] * 2] * 3)),
            "good/001.npy: an anomaly map must be 2-D",
        ),
        (lambda m: (m / "missing" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated"), "missing/000.png: cannot be read as an image"),
        (lambda m: (m / "multiple" / "000.npy").write_bytes(b"xx"), "a second map for multiple/000"),
    ],
)
def test_evaluate_rejects_bad_maps_naming_the_file(tmp_path, mutate, fragment):
    maps = _golden_maps(tmp_path)
    mutate(maps)
    proc = autovi("evaluate", "--dataset-root", str(GOLDEN / "dataset"), "--category", "synth", "--maps", str(maps), check=False)
    assert proc.returncode == 2 and fragment in proc.stderr.replace("\n", "") and "Traceback" not in proc.stderr


def test_evaluate_reads_rgb_and_float_maps_like_8_bit(tmp_path):
    import numpy as np
    from PIL import Image

    maps = _golden_maps(tmp_path)
    args = ["evaluate", "--dataset-root", str(GOLDEN / "dataset"), "--category", "synth", "--maps", str(maps)]
    reference = json.loads(autovi(*args).stdout)
    for i, png in enumerate(sorted(maps.rglob("*.png"))):
        grey = np.asarray(Image.open(png))
        png.unlink()
        if i % 2:
            Image.fromarray(np.stack([grey] * 3, axis=2)).save(png)  # RGB with equal channels
        else:
            _write_npy(png.with_suffix(".npy"), grey.astype(np.float32))
    again = json.loads(autovi(*args).stdout)
    assert again["localization"] == reference["localization"]
    assert again["classification"]["image_auroc"] == reference["classification"]["image_auroc"]


def test_death_reasons_name_the_signal_and_the_likely_cause() -> None:
    import signal

    from autovi_core.executors import death_reason

    assert death_reason(-signal.SIGKILL) == "experiment process was killed by SIGKILL (out of memory?)"
    assert death_reason(-signal.SIGABRT) == "experiment process was killed by SIGABRT"
    assert "--memory-limit 3000 MB" in death_reason(-signal.SIGABRT, 3000.0)
    assert death_reason(3) == "experiment process died (exit code 3)"


def test_ray_executor_explains_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from autovi_core.errors import ConfigError
    from autovi_core.executors import RayExecutor, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"autovi-core\[ray\]"):
        make_executor("ray", isolate=True, timeout=None).run([], lambda task, record: None)
    with pytest.raises(ConfigError, match="positive"):
        RayExecutor(cpus_per_task=0)
    with pytest.raises(ConfigError, match="valid: local, ray"):
        make_executor("dask")
