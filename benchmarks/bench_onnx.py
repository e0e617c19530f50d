"""onnxruntime against torch, side by side in one run: batch-1 latency and throughput of every exported detector.

Run:  AUTOVI_NO_PROGRESS=1 .venv/bin/python benchmarks/bench_onnx.py [--detectors padim,patchcore,efficientad,draem,cflow]
                                                                     [--size 256] [--rounds 20] [--batch 8]

Each detector is fitted with its ``fast`` profile (EfficientAD with its training steps cut: the
networks, hence the inference cost, are the fast profile's; DRAEM and CFLOW likewise) on seeded synthetic parts of
``--size`` x ``--size`` pixels, saved as a model folder, exported with ``autovi export``, and both
are timed on the same images: the torch detector's ``predict`` (what ``autovi predict`` runs on a
model folder) and the exported graph in onnxruntime (what it runs on an exported folder), both on
the CPU with their default thread counts. Batch-1 latency is the median of ``--rounds`` single-image
calls after two warm-ups; throughput is images per second over ``--rounds // 4`` (at least 3) calls of
``--batch`` images. The table (markdown) goes to stdout: docs/deploy.md quotes it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FAST_TRAINING = {
    "efficientad": {"steps": "20", "teacher_steps": "3", "teacher_views": "8"},
    "draem": {"epochs": "1", "samples_per_epoch": "8"},
    "cflow": {"meta_epochs": "1", "sub_epochs": "1", "warmup_epochs": "0"},
}


def part(seed: int, size: int, defect: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    base = np.stack([(xx * 7) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], axis=2).astype(np.float64)
    image = base + np.random.default_rng(seed).normal(0, 3, (size, size, 3))
    if defect:
        image[size // 4 : size // 4 + defect, size // 3 : size // 3 + defect] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


def median_ms(call: Callable[[], Any], rounds: int) -> float:
    for _ in range(2):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def images_per_s(call: Callable[[], Any], images: int, rounds: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(rounds):
        call()
    return images * rounds / (time.perf_counter() - start)


def bench(name: str, work: Path, size: int, rounds: int, batch: int) -> dict[str, Any]:
    from PIL import Image

    from autovi_core.deploy import fit_model
    from autovi_core.export import export_model, load_exported
    from autovi_core.model_folder import load_model_folder

    root = work / "good"
    root.mkdir(exist_ok=True)
    for i in range(10):
        Image.fromarray(part(i, size)).save(root / f"{i:02d}.png")
    model = fit_model(
        detector=name, root=root, category=None, output=work / name, overrides=FAST_TRAINING.get(name, {}), device="cpu", holdout=0.2
    )
    started = time.perf_counter()
    exported = export_model(model, output=work / f"{name}-onnx")
    export_s = time.perf_counter() - started
    torch_model, onnx_model = load_model_folder(model).detector, load_exported(exported).detector
    one, many = [part(100, size, 12)], [part(200 + i, size, 4 * i) for i in range(batch)]
    shape = (size, size)
    row = {"detector": name, "export_s": export_s}
    for label, detector in (("torch", torch_model), ("onnxruntime", onnx_model)):
        row[f"{label}_ms"] = median_ms(lambda d=detector: d.predict(one, shape), rounds)
        row[f"{label}_ips"] = images_per_s(lambda d=detector: d.predict(many, shape), batch, max(3, rounds // 4))
    size_mb = sum(p.stat().st_size for p in exported.iterdir()) / 2**20
    row["onnx_mb"] = size_mb
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="padim,patchcore,efficientad,draem,cflow")
    parser.add_argument("--size", type=int, default=256, help="side of the synthetic images (pixels)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    import onnxruntime
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.detectors.split(","):
            work = Path(folder) / name
            work.mkdir()
            rows.append(bench(name, work, args.size, args.rounds, args.batch))
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}; {args.size}x{args.size} images, fast profiles"
    )
    print()
    columns = ["torch batch-1 ms", "onnxruntime batch-1 ms", f"torch img/s (batch {args.batch})", f"onnxruntime img/s (batch {args.batch})"]
    print("| detector | " + " | ".join(columns) + " | export s | exported MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['detector']} | {r['torch_ms']:.1f} | {r['onnxruntime_ms']:.1f} | {r['torch_ips']:.1f} | {r['onnxruntime_ips']:.1f} "
            f"| {r['export_s']:.0f} | {r['onnx_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
