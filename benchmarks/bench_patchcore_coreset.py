"""PatchCore's coreset selection, ``exact`` against ``pruned``, side by side (issue #15).

pytest-benchmark (both algorithms in one run, so that background load hits both alike):

    .venv/bin/python -m pytest benchmarks/bench_patchcore_coreset.py --benchmark-enable -s

- ``test_coreset_algorithms_side_by_side``: a real bank (EfficientNet-Lite0 ``blocks.2`` + ``blocks.4``
  patch features, 152 dims, of ``AUTOVI_BENCH_IMAGES`` = 100 generated ``textured_plate`` images at
  256 px: 102,400 patches, projected to 128 dims), 10 % coreset by both algorithms: seconds, ms per
  step, the coverage radius (max over bank points of the distance to the nearest chosen point, in
  the original 152-dim feature space), the bandwidth floor of ``exact`` (bytes read per step x steps /
  the numpy-copy bandwidth measured in the same run) and how much of the bank ``pruned`` reads.
- ``test_batch1_latency``: a ``paper``-profile PatchCore (Lite0) fitted on the same images, batch-1
  latency (median of 20 single-image predictions) and images/s at batch 8.

Script modes, for what is too slow for pytest-benchmark (each run in its own process, so that the
peak RSS is that run's own):

    .venv/bin/python benchmarks/bench_patchcore_coreset.py fit --images 400 --size 256
    .venv/bin/python benchmarks/bench_patchcore_coreset.py auroc --seeds 0,1,2
    .venv/bin/python benchmarks/bench_patchcore_coreset.py precision --images 100

``fit``: the ``paper`` profile (Lite0 backbone, ``crop`` none by default: 1,024 patches per image as in
the issue's measurement) fitted on ``--images`` generated training images, once per algorithm: fit
seconds, peak RSS, coverage radius, image AUROC on the category's test set, batch-1 latency and
images/s. ``--algorithms`` and ``--projections 128,64,32`` (``coreset_projection``: fewer dims, fewer
bytes per step and a coarser distance) choose the variants, in both modes. ``auroc``: image AUROC
of the ``fast`` profile with each variant on the three synthetic categories over the seeds.
``precision``: the ``exact`` loop on a float32, bfloat16 and float16 projected bank, and 4, 16 and 64
centres per pass, beside ``pruned``, on one bank: seconds and coverage radius of each selection.
Results are printed as JSON lines (and written to ``--out`` if given).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = int(os.environ.get("AUTOVI_BENCH_IMAGES", "100"))
SIZE = int(os.environ.get("AUTOVI_BENCH_SIZE", "256"))


# --- helpers ---------------------------------------------------------------------------------------
def copy_bandwidth_gb_s(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Memory bandwidth of a numpy copy (bytes read + written / best time), in GB/s."""
    source = np.ones(n_bytes // 8)
    target = np.empty_like(source)
    best = min(_timed(np.copyto, target, source) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def read_bandwidth_gb_s(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Read-only bandwidth (a numpy sum over a float64 array), in GB/s: what a greedy step streams."""
    source = np.ones(n_bytes // 8)
    best = min(_timed(source.sum) for _ in range(repeats))
    return source.nbytes / best / 1e9


def _timed(fn, *args) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def coverage_radius(bank: np.ndarray, chosen: np.ndarray) -> float:
    """max over bank rows of the L2 distance to the nearest chosen row (exact, faiss IndexFlatL2)."""
    return radius_of_centres(bank, bank[chosen])


def radius_of_centres(bank: np.ndarray, centres: np.ndarray) -> float:
    """max over bank rows of the L2 distance to the nearest of ``centres`` (exact, faiss IndexFlatL2)."""
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    worst = 0.0
    for begin in range(0, bank.shape[0], 65536):
        squared, _ = index.search(np.ascontiguousarray(bank[begin : begin + 65536], dtype=np.float32), 1)
        worst = max(worst, float(squared.max()))
    return worst**0.5


def generated_category(root: Path, category: str, n_train: int, size: int) -> Path:
    from autovi_core.datasets.synthetic import SyntheticCounts, generate_category

    return generate_category(root, category, size=size, seed=0, counts=SyntheticCounts(train=n_train))


def load_category(path: Path) -> tuple[list, list, np.ndarray]:
    from autovi_core.datasets.autovi import read_autovi_category

    category = read_autovi_category(path, dataset="synthetic", name=path.name, native_size=None)
    test = category.test
    return category.load_images(category.train), category.load_images(test), np.array([s.label for s in test])


def crop_of(args: argparse.Namespace) -> int | None:
    """The ``--crop`` option as the paper profile's ``crop`` override ('none': the whole image)."""
    return None if args.crop == "none" else int(args.crop)


def paper_detector(seed: int = 0, **overrides):  # noqa: ANN201
    from autovi_core.registry import get_registry

    return get_registry().create_detector("patchcore", "paper", seed=seed, backbone="tf_efficientnet_lite0", **overrides)


def latency(detector, images: list, repeats: int = 20) -> dict[str, float]:  # noqa: ANN001
    """Batch-1 latency (median ms over ``repeats`` single-image predictions) and images/s at batch 8."""
    output_size = tuple(images[0].shape[:2])
    detector.predict(images[:1], output_size)  # warm-up
    single = [_timed(detector.predict, images[i % len(images) : i % len(images) + 1], output_size) for i in range(repeats)]
    batch = images[: 8 * max(1, len(images) // 8)]
    detector.predict(batch[:8], output_size)
    whole = min(_timed(detector.predict, batch, output_size) for _ in range(2))
    return {"batch1_ms": 1e3 * statistics.median(single), "img_per_s": len(batch) / whole}


def bank_of(detector, images: list) -> np.ndarray:  # noqa: ANN001
    """The full (N, D) training bank the detector's ``learn`` builds (before the coreset)."""
    bank, _ = detector._training_bank(images)
    return bank.numpy()


# --- pytest-benchmark ------------------------------------------------------------------------------
def test_coreset_algorithms_side_by_side(benchmark, tmp_path_factory) -> None:  # noqa: ANN001
    import torch
    from autovi_plugin_patchcore.coreset import coreset_indices, mean_distance_to_start_points, random_projection
    from autovi_plugin_patchcore.pruned_greedy import pruned_greedy_k_center

    root = tmp_path_factory.mktemp("synthetic")
    train, _, _ = load_category(generated_category(root, "textured_plate", IMAGES, SIZE))
    bank = bank_of(paper_detector(crop=None), train)
    n, ratio = bank.shape[0], 0.1
    n_select = round(n * ratio)
    generator = torch.Generator().manual_seed(0)
    projected = random_projection(torch.from_numpy(bank), 128, generator)
    initial = mean_distance_to_start_points(projected, 10, generator)
    pruned_greedy_k_center(projected.numpy()[:512], 4, initial.numpy()[:512])  # compile (or load the cache)

    def both() -> dict:
        rows = {}
        for algorithm in ("pruned", "exact"):
            start = time.perf_counter()
            chosen = coreset_indices(torch.from_numpy(bank), ratio, seed=0, algorithm=algorithm).numpy()
            seconds = time.perf_counter() - start
            rows[algorithm] = {"seconds": seconds, "ms_per_step": 1e3 * seconds / n_select, "chosen": chosen}
        return rows

    rows = benchmark.pedantic(both, rounds=1, iterations=1)
    _, _, work = pruned_greedy_k_center(projected.numpy(), n_select, initial.numpy())
    read_bw, copy_bw = read_bandwidth_gb_s(), copy_bandwidth_gb_s()
    step_bytes = n * 128 * 4
    info = {
        "bank": [n, bank.shape[1]],
        "n_select": n_select,
        "read_gb_s": read_bw,
        "copy_gb_s": copy_bw,
        "exact_floor_s": step_bytes * n_select / (read_bw * 1e9),
        "pruned_point_distance_fraction": work["point_distances"] / (n * n_select),
        "pruned_work": work,
        "load_avg": os.getloadavg(),
    }
    for algorithm, row in rows.items():
        info[f"{algorithm}_s"] = row["seconds"]
        info[f"{algorithm}_ms_per_step"] = row["ms_per_step"]
        info[f"{algorithm}_coverage_radius"] = coverage_radius(bank, row["chosen"])
    info["same_selection"] = bool(np.array_equal(rows["exact"]["chosen"], rows["pruned"]["chosen"]))
    info["common_fraction"] = len(np.intersect1d(rows["exact"]["chosen"], rows["pruned"]["chosen"])) / n_select
    info["speedup"] = info["exact_s"] / info["pruned_s"]
    print("\n" + json.dumps(info, indent=1))
    benchmark.extra_info.update(info)
    assert info["pruned_coverage_radius"] <= 1.05 * info["exact_coverage_radius"]


def test_batch1_latency(benchmark, tmp_path_factory) -> None:  # noqa: ANN001
    root = tmp_path_factory.mktemp("synthetic")
    train, test, _ = load_category(generated_category(root, "textured_plate", IMAGES, SIZE))
    detector = paper_detector()
    detector.fit(train)
    result = benchmark.pedantic(latency, args=(detector, test), rounds=1, iterations=1)
    result["bank"] = list(detector.memory_bank.shape)
    result["load_avg"] = os.getloadavg()
    print("\n" + json.dumps(result))
    benchmark.extra_info.update(result)


# --- script modes ---------------------------------------------------------------------------------
def _one_fit(args: argparse.Namespace) -> dict:
    """One fit in this process (``fit --one ALGORITHM``)."""
    import timm  # noqa: F401 - imports before the clock, as in bench_vs_anomalib
    from sklearn.metrics import roc_auc_score

    import autovi_core.backbones  # noqa: F401

    train, test, labels = load_category(generated_category(Path(args.data), args.category, args.images, args.size))
    crop = crop_of(args)
    detector = paper_detector(seed=0, crop=crop, coreset_algorithm=args.one, coreset_ratio=args.ratio, coreset_projection=args.projection)
    start = time.perf_counter()
    detector.fit(train)
    fit_s = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    output_size = tuple(test[0].shape[:2])
    scores = np.asarray(detector.predict(test, output_size).scores, dtype=np.float64)
    row = {
        "algorithm": args.one,
        "projection": args.projection,
        "images": len(train),
        "size": args.size,
        "crop": crop,
        "fit_s": fit_s,
        "peak_rss_mb": peak_mb,
        "memory_bank": list(detector.memory_bank.shape),
        "image_auroc": float(roc_auc_score(labels, scores)),
        **latency(detector, test),
    }
    if not args.no_radius:
        row["coverage_radius"] = radius_of_centres(bank_of(detector, train), detector.memory_bank)
    row["load_avg"] = os.getloadavg()
    return row


def _auroc(args: argparse.Namespace) -> list[dict]:
    from sklearn.metrics import roc_auc_score

    from autovi_core.datasets.synthetic_scenes import SYNTHETIC_CATEGORIES
    from autovi_core.registry import get_registry

    rows = []
    for category in SYNTHETIC_CATEGORIES:
        train, test, labels = load_category(generated_category(Path(args.data), category, 40, 128))
        output_size = tuple(test[0].shape[:2])
        for seed in [int(s) for s in args.seeds.split(",")]:
            for algorithm, projection in itertools.product(args.algorithms.split(","), map(int, args.projections.split(","))):
                detector = get_registry().create_detector(
                    "patchcore", "fast", seed=seed, coreset_algorithm=algorithm, coreset_projection=projection
                )
                start = time.perf_counter()
                detector.fit(train)
                fit_s = time.perf_counter() - start
                scores = np.asarray(detector.predict(test, output_size).scores, dtype=np.float64)
                row = {
                    "category": category,
                    "seed": seed,
                    "algorithm": algorithm,
                    "projection": projection,
                    "fit_s": fit_s,
                    "image_auroc": float(roc_auc_score(labels, scores)),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def several_centres_per_pass(points, n_select: int, initial, per_pass: int):  # noqa: ANN001, ANN201
    """Greedy k-centre that takes the ``per_pass`` farthest points at once and lowers the minima
    against all of them in one read of the bank (one matrix product): ``per_pass`` times fewer bytes
    than `exact`, but points chosen together may lie close to each other. Returns int64 indices."""
    import torch

    norms = (points * points).sum(dim=1)
    min_sq = initial.to(points.dtype).square().clone()
    chosen = torch.empty(n_select, dtype=torch.long)
    done = 0
    while done < n_select:
        take = min(per_pass, n_select - done)
        index = torch.topk(min_sq, take).indices
        chosen[done : done + take] = index
        centres = points[index]
        squared = (norms[:, None] + (centres * centres).sum(dim=1)[None, :] - 2.0 * (points @ centres.T)).clamp_(min=0.0)
        torch.minimum(min_sq, squared.min(dim=1).values, out=min_sq)
        done += take
    return chosen


def _precision(args: argparse.Namespace) -> list[dict]:
    """The issue's ways below `exact`'s bandwidth floor, on one bank: the `exact` loop on a float32,
    bfloat16 and float16 projected bank, and several centres per pass, beside `pruned`: seconds and
    coverage radius of each selection."""
    import torch
    from autovi_plugin_patchcore.coreset import coreset_indices, greedy_k_center, mean_distance_to_start_points, random_projection

    train, _, _ = load_category(generated_category(Path(args.data), args.category, args.images, args.size))
    crop = crop_of(args)
    bank = bank_of(paper_detector(crop=crop), train)
    n_select = max(1, round(bank.shape[0] * args.ratio))
    generator = torch.Generator().manual_seed(0)
    projected = random_projection(torch.from_numpy(bank), 128, generator)  # as coreset_indices does with seed 0
    initial = mean_distance_to_start_points(projected, 10, generator)
    coreset_indices(torch.from_numpy(bank[:4096]), 0.01, algorithm="pruned")  # compile (or load the numba cache)
    variants = {
        "pruned (float64 sums)": lambda: coreset_indices(torch.from_numpy(bank), args.ratio, seed=0, algorithm="pruned"),
        **{
            f"exact, {dtype} bank": (lambda dtype=dtype: greedy_k_center(projected.to(dtype).contiguous(), n_select, initial))
            for dtype in (torch.float32, torch.bfloat16, torch.float16)
        },
        **{
            f"{k} centres per pass, float32 bank": (lambda k=k: several_centres_per_pass(projected, n_select, initial, k))
            for k in (4, 16, 64)
        },
    }
    rows = []
    for name, select in variants.items():
        start = time.perf_counter()
        chosen = select().numpy()
        seconds = time.perf_counter() - start
        row = {"variant": name, "bank": list(bank.shape), "n_select": n_select, "seconds": seconds}
        row |= {"ms_per_step": 1e3 * seconds / n_select, "coverage_radius": coverage_radius(bank, chosen), "load_avg": os.getloadavg()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["fit", "auroc", "precision"])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--crop", default="none", help="the paper profile's crop override ('none': the whole 256-px image)")
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--category", default="textured_plate")
    parser.add_argument("--algorithms", default="pruned,exact")
    parser.add_argument("--projections", default="128", help="coreset_projection values to fit with (dims of the coreset distances)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--projection", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--no-radius", action="store_true", help="skip the coverage radius (one more feature pass)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "autovi-bench-patchcore"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("AUTOVI_NO_PROGRESS", "1")
    if args.mode == "auroc":
        rows = _auroc(args)
    elif args.mode == "precision":
        rows = _precision(args)
    elif args.one:
        print(json.dumps(_one_fit(args)), flush=True)
        return
    else:
        print(f"read bandwidth {read_bandwidth_gb_s():.1f} GB/s, copy {copy_bandwidth_gb_s():.1f} GB/s", flush=True)
        rows = []
        for algorithm in args.algorithms.split(","):
            for projection in args.projections.split(","):
                command = [sys.executable, __file__, "fit", "--one", algorithm, "--projection", projection, *sys.argv[2:]]
                done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode != 0 or not lines:
                    raise SystemExit(f"{algorithm} at {projection} dims failed ({done.returncode}):\n{done.stderr[-3000:]}")
                rows.append(json.loads(lines[-1]))
                print(lines[-1], flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
