"""Start-up time of the command line: ``autovi list`` as a whole process, with every installed plugin.

Run:  .venv/bin/python -m pytest benchmarks/bench_cli_startup.py --benchmark-enable -s

``autovi list`` discovers every plugin, calls every registration hook and prints the table; it is
what a user runs first and what shell completion and scripts run often, so it must stay well under
a second. ``python -c pass`` is timed alongside as the floor (the interpreter's own start-up).
Each round is one fresh process; 5 rounds, the median is the number to quote (docs/performance.md).
Under ``-X importtime`` (``python -X importtime -m autovi_core.cli list``) the imports show up one
by one; ``tests/test_conformance_core.py`` checks that none of torch, scipy and numba is among them.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROUNDS = 5


def autovi_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m autovi_core.cli``."""
    script = Path(sys.executable).with_name("autovi")
    if script.exists():
        return [str(script)]
    found = shutil.which("autovi")
    return [found] if found else [sys.executable, "-m", "autovi_core.cli"]


def run_once(command: list[str]) -> None:
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)


def median_seconds(command: list[str], rounds: int = ROUNDS) -> float:
    """Median wall time of ``rounds`` fresh processes of ``command`` (for the docs' table)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run_once(command)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.parametrize(
    "name, command",
    [("python -c pass", [sys.executable, "-c", "pass"]), ("autovi list", [*autovi_command(), "list"])],
    ids=["python-floor", "autovi-list"],
)
def test_startup(benchmark, name: str, command: list[str]) -> None:
    run_once(command)  # warm the file-system cache and __pycache__ outside the timing
    benchmark.extra_info["command"] = " ".join(command)
    benchmark.pedantic(run_once, args=(command,), rounds=ROUNDS, iterations=1)


if __name__ == "__main__":  # plain medians, as recorded in docs/performance.md
    for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]), ("autovi list", [*autovi_command(), "list"])):
        run_once(cmd)
        print(f"{label:16s} median of {ROUNDS}: {median_seconds(cmd):.3f} s")
