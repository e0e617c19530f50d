"""Seconds per training step, and peak memory, of every detector that trains, measured inside its real fit.

    .venv/bin/python benchmarks/training_steps.py --device cpu --size 256 --train-images 200 \
        --data /tmp/cpu_data --random-weights /tmp/rw --output /tmp/steps.md

An epoch of a ``paper`` profile takes minutes to hours on a CPU (DRAEM's 700 epochs: days), so
``gpu_measurements.py``'s difference of two whole fits is out of reach there. This script runs the
detector's own ``fit`` on the category's training split (the split ``autovi run`` trains on), so the
set-up before training (data preparation, training features) and the memory are the real ones, and
times its optimiser steps through torch's global optimiser hook:

- a step's **kind** is the optimiser and the first parameter with a gradient (DSR's stages have one
  optimiser each; CFlow's flows share one and step in turn), numbered in order of first appearance;
- each plan times one kind: the median of ``--steps`` intervals between two directly consecutive
  steps of it (each interval is one whole step: batch synthesis, forward, backward, update; on CUDA
  the hook waits for the device), then stops the fit;
- earlier stages are shrunk where a plan reaches a later one (``fixed``), or the fit runs on fewer
  images (``images``) where a step's cost does not depend on their number (CFlow's fibre batches);
- **seconds per unit** = the median step x the steps one unit (epoch) takes at the category's full
  size, counted from the plan's hyperparameters (tests check each count against a whole epoch);
- **set-up** is the end of the first step less one median step: the work before training (image
  preparation, training features); 0 when it is within a step's noise;
- **peak RSS** is the child process's at the stop (each plan runs in its own process).

What an interval leaves out is per-epoch work outside the steps (loader creation, lr updates,
checkpoints): negligible next to these steps, and the set-up column is measured once per fit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_measurements import PLANS, Data, add_data_arguments, backbone_overrides, device_name, publish  # noqa: E402


def loader_steps(samples: int, batch: int) -> int:
    """Steps of one epoch of :func:`autovi_core.training.make_loader` (it drops a last partial batch)."""
    return samples // batch if samples >= batch else 1


def draem_steps(hp: dict[str, Any], n: int, detector: Any) -> int:
    return loader_steps(hp["samples_per_epoch"] or n, hp["batch_size"])


def dsr_steps(stage: str) -> Callable[[dict[str, Any], int, Any], int]:
    return lambda hp, n, detector: loader_steps(hp[f"{stage}_samples_per_epoch"] or n, hp["batch_size"])


def glass_steps(hp: dict[str, Any], n: int, detector: Any) -> int:
    return math.ceil(n / hp["batch_size"])


def supersimplenet_steps(hp: dict[str, Any], n: int, detector: Any) -> int:
    from autovi_plugin_supersimplenet.detector import batch_bounds

    return len(batch_bounds(n, hp["batch_size"]))


def cflow_steps(layer: int) -> Callable[[dict[str, Any], int, Any], int]:
    """Steps of one layer's flow in a meta-epoch: every sub-epoch covers all its fibres in batches."""

    def steps(hp: dict[str, Any], n: int, detector: Any) -> int:
        stride = list(detector._encoder().strides.values())[layer]
        side = -(-hp["image_size"] // stride)
        return hp["sub_epochs"] * math.ceil(n * side * side / hp["fibre_batch"])

    return steps


@dataclass(frozen=True)
class StepPlan:
    """Which kind of step of which detector to time, and how many of them one unit takes."""

    detector: str
    unit: str  # what one unit is, e.g. "epoch", "stage-2 epoch"
    steps_per_unit: Callable[[dict[str, Any], int, Any], int]  # (hparams, training images, fitted detector)
    units: str  # the hyperparameter holding the profile's number of units
    kind: int = 0  # the kind of step to time, in order of first appearance
    fixed: dict[str, Any] = field(default_factory=dict)
    images: int | None = None  # fit on this many training images (the step's cost does not depend on it)
    group: str = ""  # plans whose units add up to one unit of the group (CFlow's flows: one meta-epoch)


SHRUNK_DSR_STAGES = {"stage1_epochs": 1, "stage1_samples_per_epoch": 8, "stage2_epochs": 1, "stage2_samples_per_epoch": 8}
STEP_PLANS: dict[str, StepPlan] = {
    "draem": StepPlan("draem", "epoch", draem_steps, "epochs"),
    "glass": StepPlan("glass", "epoch", glass_steps, "epochs"),
    "supersimplenet": StepPlan("supersimplenet", "epoch", supersimplenet_steps, "epochs"),
    "efficientad": StepPlan("efficientad", "training step", lambda hp, n, d: 1, "steps", kind=1, fixed=PLANS["efficientad"].fixed),
    "dsr-stage1": StepPlan("dsr", "stage-1 epoch", dsr_steps("stage1"), "stage1_epochs"),
    "dsr-stage2": StepPlan(
        "dsr", "stage-2 epoch", dsr_steps("stage2"), "stage2_epochs", kind=1, fixed={"stage1_epochs": 1, "stage1_samples_per_epoch": 8}
    ),
    "dsr-stage3": StepPlan("dsr", "stage-3 epoch", dsr_steps("stage3"), "stage3_epochs", kind=2, fixed=SHRUNK_DSR_STAGES),
    "cflow-flow1": StepPlan("cflow", "meta-epoch: first flow", cflow_steps(0), "meta_epochs", group="meta-epoch"),
    "cflow-flow2": StepPlan("cflow", "meta-epoch: second flow", cflow_steps(1), "meta_epochs", kind=1, images=16, group="meta-epoch"),
    "cflow-flow3": StepPlan("cflow", "meta-epoch: third flow", cflow_steps(2), "meta_epochs", kind=2, images=16, group="meta-epoch"),
}


class EnoughSteps(Exception):
    """Raised from the optimiser hook to stop a fit once the timed kind has taken its steps."""


class StepClock:
    """Times every optimiser step of the process (torch's global post-step hook) while in use.

    An interval is counted for a kind when a step of it directly follows another of it (no other
    kind's step between them). ``stop_after``: raise :class:`EnoughSteps` once kind ``kind`` has that
    many intervals.
    """

    def __init__(self, kind: int = 0, stop_after: int | None = None) -> None:
        self.kind, self.stop_after = kind, stop_after
        self.kinds: dict[tuple[int, int], int] = {}
        self.steps: dict[int, int] = {}  # kind: steps taken
        self.first: dict[int, float] = {}  # kind: seconds from entering the clock to the end of its first step
        self._intervals: dict[int, list[float]] = {}
        self._last: tuple[int, float] | None = None
        self.started = time.perf_counter()

    def __enter__(self) -> StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._after_step)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a step is over when the device has done it, not when it was queued
        now = time.perf_counter()
        first = next((id(p) for group in optimizer.param_groups for p in group["params"] if p.grad is not None), 0)
        kind = self.kinds.setdefault((id(optimizer), first), len(self.kinds))
        self.steps[kind] = self.steps.get(kind, 0) + 1
        self.first.setdefault(kind, now - self.started)
        if self._last is not None and self._last[0] == kind:
            self._intervals.setdefault(kind, []).append(now - self._last[1])
        self._last = (kind, now)
        if self.stop_after is not None and kind == self.kind and len(self.intervals(kind)) >= self.stop_after:
            raise EnoughSteps

    def intervals(self, kind: int) -> list[float]:
        """Seconds of each step of ``kind`` that directly followed another of it."""
        return self._intervals.get(kind, [])


def time_plan(name: str, data: Data, device: str, steps: int, random_weights: Path | None) -> dict[str, Any]:
    """Fit the plan's detector until ``steps`` intervals of its timed kind are measured; its timings."""
    from autovi_core.experiment import Task, load_data
    from autovi_core.measure import peak_rss_mb
    from autovi_core.registry import get_registry

    plan = STEP_PLANS[name]
    backbone, backbone_note = backbone_overrides(plan.detector, PLANS[plan.detector], random_weights)
    overrides = {**plan.fixed, **backbone}
    registry = get_registry()
    task = Task(detector=plan.detector, category=data.category, dataset=data.dataset, root=data.root, profile="paper")
    train = load_data(task, registry, supervised=False).train_images
    fitted_on = train[: plan.images] if plan.images else train
    detector = registry.create_detector(plan.detector, "paper", device=device, **overrides)
    with tempfile.TemporaryDirectory(prefix="autovi-step-cache-") as cache:
        os.environ["AUTOVI_CACHE_DIR"] = cache  # nothing reused from an earlier fit (DSR's stage 1, features)
        with StepClock(plan.kind, stop_after=steps) as clock:
            try:
                detector.fit(fitted_on)
            except EnoughSteps:
                pass
    intervals = clock.intervals(plan.kind)
    if len(intervals) < steps:
        raise RuntimeError(f"{name}: the fit ended after {len(intervals)} timed interval(s) of kind {plan.kind}, {steps} wanted")
    hp = dict(detector.hparams)
    per_step = statistics.median(intervals)
    per_unit_steps = plan.steps_per_unit(hp, len(train), detector)
    return {
        "plan": name,
        "detector": plan.detector,
        "unit": plan.unit,
        "group": plan.group,
        "train_images": len(train),
        "fitted_on": len(fitted_on),
        "step_s": per_step,
        "step_range_s": [min(intervals), max(intervals)],
        "intervals": len(intervals),
        "set_up_s": max(0.0, clock.first[plan.kind] - per_step) if plan.kind == 0 and not plan.images else None,
        "steps_per_unit": per_unit_steps,
        "unit_s": per_step * per_unit_steps,
        "profile_units": int(hp[plan.units]),
        "peak_rss_mb": peak_rss_mb(),
        "note": "; ".join(n for n in [backbone_note, *(f"{k}={v}" for k, v in plan.fixed.items())] if n),
    }


def time_in_child(name: str, args: argparse.Namespace, data: Data) -> dict[str, Any]:
    """:func:`time_plan` in a fresh process: its own peak RSS, nothing warm from another plan."""
    command = [sys.executable, __file__, "--child", name, "--device", args.device, "--steps", str(args.steps)]
    command += ["--data-json", json.dumps(data.__dict__)]
    if args.random_weights:
        command += ["--random-weights", str(args.random_weights)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {name}: {result['step_s']:.3f} s a step, {result['unit_s']:.1f} s per {result['unit']}", flush=True)
    return result


def report(rows: list[dict[str, Any]], device: str, data: Data, steps: int) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [
        "# Training step times",
        "",
        f"Device: {device_name(device)}. Measured {datetime.date.today().isoformat()} with `benchmarks/training_steps.py` "
        f"on synthetic `{data.category}` ({data.size} px; {rows[0]['train_images'] if rows else '-'} training images after "
        f"the calibration hold-out), profile `paper`; median of {steps} step intervals each.",
        "",
        "| detector | timed on images | s a step (range) | steps per unit | s per unit | units in the profile | "
        "set-up s | peak RSS MB | changed from the profile |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        low, high = row["step_range_s"]
        lines.append(
            f"| {row['detector']} ({row['unit']}) | {row['fitted_on']} | {row['step_s']:.3f} ({low:.3f}-{high:.3f}) | "
            f"{row['steps_per_unit']:,} | {row['unit_s']:,.1f} | {row['profile_units']:,} | {fmt(row['set_up_s'], ',.1f')} | "
            f"{row['peak_rss_mb']:,.0f} | {row['note'] or '-'} |"
        )
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["group"]:
            groups.setdefault((row["detector"], row["group"]), []).append(row)
    for (detector, group), members in groups.items():
        parts = " + ".join(format(r["unit_s"], ",.1f") for r in members)
        lines += ["", f"{detector}: {sum(r['unit_s'] for r in members):,.1f} s per {group} ({parts})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plan", action="append", choices=sorted(STEP_PLANS), help="default: all")
    parser.add_argument("--steps", type=int, default=2, help="step intervals timed per plan (default 2)")
    add_data_arguments(parser)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = time_plan(args.child, Data(**json.loads(args.data_json)), args.device, args.steps, args.random_weights)
        print(json.dumps(result))
        return ""
    with tempfile.TemporaryDirectory(prefix="autovi-step-data-") as scratch:
        data = Data.from_args(args, Path(scratch))
        rows = [time_in_child(name, args, data) for name in args.plan or list(STEP_PLANS)]
    return publish(report(rows, args.device, data, args.steps), args.output)


if __name__ == "__main__":
    main()
