"""Memory readings shared by both peer runners (standard library only: it is imported in the
autovi venv and in the anomalib venv alike; each runner finds it next to itself on ``sys.path``)."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """The current resident set size in MB (from /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
