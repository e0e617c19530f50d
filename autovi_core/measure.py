"""Measuring an experiment: wall time, peak host memory, peak GPU memory, library versions."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from .device import resolve_device  # noqa: F401 - re-exported: its home is autovi_core.device


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    result = {"s": 0.0}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["s"] = time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def reset_peak_gpu() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gpu_mb() -> float | None:
    """Peak CUDA memory allocated by torch in this process, in MiB (None without CUDA)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / (1024.0 * 1024.0)


def torch_threads() -> int | None:
    """Threads torch computes with in this process (None when torch was never imported). Trained
    detectors' results depend on it: float sums are ordered differently with other thread counts."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def distribution_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
