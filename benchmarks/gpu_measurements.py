"""Training and inference timings of every detector's ``paper`` profile, written as a Markdown report.

    python benchmarks/gpu_measurements.py --device cuda --size 256 --train-images 200 --random-weights /tmp/rw \
        --output docs/gpu-measurements.md
    .venv/bin/python benchmarks/gpu_measurements.py --device cpu --quick     # the same code, small, on the CPU

For each detector (``--detector``, default all of :data:`PLANS`) on one synthetic category:

- **training time per epoch** (per step for EfficientAD): after a warm-up run, the experiment is run
  twice with the epoch count at ``low`` and at ``high`` and everything else equal, so ``(fit_high - fit_low) /
  (high - low)`` is the cost of one epoch without the fixed costs (data preparation, stage-1 or
  teacher set-up); each run gets an empty cache, so nothing is reused between them;
- **inference**: ``autovi run``'s own timings of the ``low`` run: images/s over the test split,
  batch-1 latency (median of 10 single images, maps included) and peak GPU memory;
- for PatchCore, PaDiM and AnomalyDINO, which do not train, the whole fit (feature extraction,
  coreset or Gaussian estimation) and the same inference timings;
- for EfficientAD also the fused PDN-S forward at 256 x 256, batch 1, mixed precision: the number
  the paper's 2.2 ms latency is about (weights do not change it).

What is changed from the ``paper`` profiles, and why, is printed in the report. No paper backbone
has weights offline: by default the detectors that need one run on Lite0; with ``--random-weights DIR``
they run on the paper's architecture with a seeded random initialisation saved in DIR (timings do
not depend on the weights; the scores of such runs mean nothing). EfficientAD's teacher is distilled
for only a few steps (its cost is not what is measured). The built-in category has 40 training images
at 128 px; ``--size`` and ``--train-images`` generate a bigger one (DSR's stage 3 draws a fixed 8000
samples per epoch whatever the size).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Plan:
    """How to time one detector: which epoch counts to vary, and fixed overrides."""

    knobs: tuple[tuple[str, str], ...]  # (hyperparameter, what one unit of it is); none: time the whole fit
    fixed: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    scale: int = 1  # the knob runs at scale * low and scale * high units (steps are too short to time one by one)
    quick: dict[str, Any] = field(default_factory=dict)  # also fixed in --quick mode: smaller fixed costs
    lite0: bool = False  # the paper backbone has no offline weights: Lite0 instead, or (--random-weights) the paper's, untrained


LITE0 = {"backbone": "tf_efficientnet_lite0"}
LITE0_NOTE = "Lite0 backbone instead of the paper's (no weights offline)"
PLANS: dict[str, Plan] = {
    "patchcore": Plan((), lite0=True),
    "padim": Plan((), lite0=True),
    "anomalydino": Plan((), lite0=True),
    "draem": Plan((("epochs", "epoch"),)),
    "dsr": Plan(
        (("stage1_epochs", "stage-1 epoch"), ("stage2_epochs", "stage-2 epoch"), ("stage3_epochs", "stage-3 epoch")),
        note="stage 1 trained on the category's images (the paper's uses ImageNet)",
    ),
    "efficientad": Plan(
        (("steps", "training step"),),
        fixed={"model_size": "small", "teacher_steps": 10},
        note="EfficientAD-S (the latency target's model); teacher distilled for 10 steps only",
        scale=100,
        quick={"teacher_views": 16},
    ),
    "cflow": Plan((("meta_epochs", "meta-epoch"),), lite0=True),
    "glass": Plan((("epochs", "epoch"),), lite0=True),
    "supersimplenet": Plan((("epochs", "epoch"),), lite0=True),
}
QUICK = {"profile": "fast", "low": 1, "high": 5, "max_scale": 10}  # EfficientAD: 10 and 50 steps
FULL = {"profile": "paper", "low": 1, "high": 3, "max_scale": None}


def paper_backbone(detector: str) -> str:
    """The backbone of ``detector``'s paper profile (EfficientAD: the CNN its teacher is distilled from)."""
    from autovi_core.registry import get_registry

    return str(get_registry().detectors[detector].params["backbone"].paper)


def random_weights_file(backbone: str, folder: Path) -> Path:
    """A state dict of ``backbone`` at a seeded random initialisation: the paper's architecture, costs and all.

    Timings do not depend on the weights' values, so this measures the paper profiles exactly where no
    ImageNet weights can be had offline; the scores of such a run mean nothing and are not reported.
    """
    import timm
    import torch

    path = folder / f"{backbone.replace('/', '_')}-random.pth"
    if not path.exists():
        torch.manual_seed(20261204)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(timm.create_model(backbone, pretrained=False).state_dict(), path)
    return path


def backbone_overrides(name: str, plan: Plan, random_weights: Path | None) -> tuple[dict[str, Any], str]:
    """Overrides and note for the detector's backbone: Lite0, the paper's untrained, or nothing to change."""
    if random_weights is not None and (plan.lite0 or name == "efficientad"):
        backbone = paper_backbone(name)
        weights = str(random_weights_file(backbone, random_weights))
        return {"backbone": backbone, "weights": weights}, f"paper backbone {backbone}, untrained (timing only)"
    if plan.lite0:
        return LITE0, LITE0_NOTE
    return {}, ""


@dataclass(frozen=True)
class Data:
    """Where the measured category comes from: the built-in ``synthetic`` dataset, or one generated bigger."""

    category: str
    dataset: str = "synthetic"
    root: str | None = None
    size: int = 128
    train: int = 40

    @classmethod
    def generate(cls, category: str, size: int, train: int, folder: Path) -> Data:
        """A synthetic category of ``train`` training images at ``size`` px in ``folder`` (reused when it is there)."""
        from autovi_core.datasets.synthetic import SyntheticCounts, generate_category

        generate_category(folder, category, size=size, seed=0, counts=SyntheticCounts(train=train))
        return cls(category, "folder", str(folder), size, train)

    @classmethod
    def from_args(cls, args: argparse.Namespace, scratch: Path) -> Data:
        """The category of :func:`add_data_arguments`' options: the built-in one at its defaults, else generated."""
        if (args.size, args.train_images) == (128, 40):
            return cls(args.category)
        return cls.generate(args.category, args.size, args.train_images, args.data or scratch)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the measured category and backbones, and ``--output`` (read by :meth:`Data.from_args`)."""
    parser.add_argument("--category", default="textured_plate")
    parser.add_argument("--size", type=int, default=128, help="image side of the generated category (default 128: the built-in one)")
    parser.add_argument("--train-images", type=int, default=40, help="training images of the generated category (default 40)")
    parser.add_argument("--data", type=Path, help="folder for a generated category (default: a temporary one)")
    parser.add_argument(
        "--random-weights",
        type=Path,
        metavar="DIR",
        help="use the paper backbones with untrained weights saved in DIR instead of Lite0 (timings only: scores are meaningless)",
    )
    parser.add_argument("--output", type=Path)


def run_once(detector: str, data: Data, profile: str, overrides: dict[str, Any], device: str) -> dict[str, Any]:
    """One in-process ``autovi run`` experiment with a fresh, empty cache; returns its record."""
    from autovi_core.experiment import Task, run_task

    with tempfile.TemporaryDirectory(prefix="autovi-gpu-measure-") as cache:
        previous = os.environ.get("AUTOVI_CACHE_DIR")
        os.environ["AUTOVI_CACHE_DIR"] = cache
        try:
            task = Task(
                detector=detector,
                category=data.category,
                dataset=data.dataset,
                root=data.root,
                profile=profile,
                overrides=overrides,
                device=device,
            )
            record = run_task(task)
        finally:
            if previous is None:
                os.environ.pop("AUTOVI_CACHE_DIR", None)
            else:
                os.environ["AUTOVI_CACHE_DIR"] = previous
    timing = record["timing"]
    knobs = " ".join(f"{k}={v}" for k, v in overrides.items() if k not in ("backbone", "weights"))
    print(f"  {detector} [{knobs}]: fit {timing['fit_s']:.2f} s, {timing['predict_images_per_s']:.1f} img/s", flush=True)
    return record


def measure_detector(
    name: str, data: Data, device: str, settings: dict[str, Any], random_weights: Path | None = None
) -> list[dict[str, Any]]:
    """One row per knob: seconds per unit, and the low run's inference timings."""
    plan = PLANS[name]
    scale = min(plan.scale, settings["max_scale"] or plan.scale)
    low, high = scale * settings["low"], scale * settings["high"]
    quick = plan.quick if settings["profile"] == "fast" else {}
    backbone, backbone_note = backbone_overrides(name, plan, random_weights)
    note = "; ".join(n for n in [backbone_note, plan.note, *(f"{key}={value}" for key, value in quick.items())] if n)
    base = {**plan.fixed, **backbone, **quick, **{knob: low for knob, _ in plan.knobs}}
    if settings.get("one_run"):  # units too long for the budget: one run, its whole fit bounds one unit
        only = run_once(name, data, settings["profile"], base, device)
        units = ", ".join(f"{low} {unit}" for _, unit in plan.knobs) or "its only setting"
        print(f"{name}: whole fit {only['timing']['fit_s']:.3f} s at {units}", flush=True)
        return [
            {
                "detector": name,
                "unit": f"whole fit at {units} (no warm-up)",
                "per_unit_s": only["timing"]["fit_s"],
                "record": only,
                "note": note,
            }
        ]
    run_once(name, data, settings["profile"], base, device)  # warm-up: imports, kernels, cuDNN autotuning
    if not plan.knobs:
        again = run_once(name, data, settings["profile"], base, device)
        print(f"{name}: fit {again['timing']['fit_s']:.3f} s", flush=True)
        return [{"detector": name, "unit": "whole fit", "per_unit_s": again["timing"]["fit_s"], "record": again, "note": note}]
    rows = []
    for knob, unit in plan.knobs:
        first = run_once(name, data, settings["profile"], base, device)
        second = run_once(name, data, settings["profile"], {**base, knob: high}, device)
        per_unit = (second["timing"]["fit_s"] - first["timing"]["fit_s"]) / (high - low)
        if per_unit <= 0:  # the extra units cost less than the fixed costs' noise: no number, not a negative one
            per_unit = None
            note = "; ".join([note] * bool(note) + [f"{high - low} more {unit}s were lost in the timing noise"])
        rows.append({"detector": name, "unit": unit, "per_unit_s": per_unit, "record": first, "note": note})
        print(f"{name}: {'-' if per_unit is None else f'{per_unit:.3f}'} s per {unit}", flush=True)
    return rows


def fused_efficientad_latency_ms(device: str, rounds: int, warm_up: int = 10) -> float:
    """Median batch-1 latency of EfficientAD-S's fused forward at 256 px (untrained weights)."""
    import torch
    from autovi_plugin_efficientad.inference import FusedEfficientAD
    from autovi_plugin_efficientad.networks import Autoencoder, pdn

    torch.manual_seed(0)
    model = FusedEfficientAD(pdn("small", 384), pdn("small", 768), Autoencoder(384, 256)).to(device).prepare_inference()
    image = torch.rand(1, 3, 256, 256, device=device)
    for _ in range(warm_up):
        model.anomaly_grid(image)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.anomaly_grid(image)  # returns a CPU tensor: the device work is finished
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch {torch.__version__})"


def report(rows: list[dict[str, Any]], fused_ms: float | None, device: str, data: Data, settings: dict[str, Any]) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    step_scale = min(PLANS["efficientad"].scale, settings["max_scale"] or PLANS["efficientad"].scale)
    if settings.get("one_run"):
        timed = f"one run per detector at {settings['low']} unit(s), no warm-up: the whole fit bounds one unit"
    else:
        timed = f"per-unit times from runs at {settings['low']} and {settings['high']} units"
    lines = [
        "# Training and inference timings",
        "",
        f"Device: {device_name(device)}. Measured {datetime.date.today().isoformat()} with "
        f"`benchmarks/gpu_measurements.py` on synthetic `{data.category}` ({data.train} training images, {data.size} px), "
        f"profile `{settings['profile']}`; {timed} (x{step_scale} for EfficientAD's steps).",
        "",
        "| detector | per | seconds | predict img/s | batch-1 ms | peak GPU MB | peak RSS MB | changed from the profile |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        timing = row["record"]["timing"]
        lines.append(
            f"| {row['detector']} | {row['unit']} | {fmt(row['per_unit_s'], '.3f')} | {fmt(timing['predict_images_per_s'], '.1f')} | "
            f"{fmt(timing['batch1_latency_ms'], '.2f')} | {fmt(timing['peak_gpu_mb'], '.0f')} | {fmt(timing['peak_rss_mb'], '.0f')} | "
            f"{row['note'] or '-'} |"
        )
    if fused_ms is not None:
        lines += ["", f"EfficientAD-S fused forward, 256 x 256, batch 1: **{fused_ms:.2f} ms** median (paper: 2.2 ms)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--detector", action="append", choices=sorted(PLANS), help="default: all")
    parser.add_argument("--quick", action="store_true", help="fast profiles, 1 vs 5 units (to check the script on a CPU)")
    parser.add_argument("--high", type=int, help="units of the second run (default: 3, quick: 5)")
    parser.add_argument(
        "--one-run",
        action="store_true",
        help="one run at the low unit count, no warm-up (also for detectors that do not train): its whole fit bounds one unit",
    )
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    settings = {**(QUICK if args.quick else FULL), **({"high": args.high} if args.high else {}), "one_run": args.one_run}
    with tempfile.TemporaryDirectory(prefix="autovi-gpu-data-") as scratch:
        data = Data.from_args(args, Path(scratch))
        names = args.detector or sorted(PLANS)
        rows = [row for name in names for row in measure_detector(name, data, args.device, settings, args.random_weights)]
    fused = None
    if "efficientad" in names:
        fused = fused_efficientad_latency_ms(args.device, rounds=3 if args.quick else 500, warm_up=1 if args.quick else 10)
    return publish(report(rows, fused, args.device, data, settings), args.output)


def publish(text: str, output: Path | None) -> str:
    """Print a report, write it to ``output`` when given (``--output``), and return it."""
    if output:
        output.write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
