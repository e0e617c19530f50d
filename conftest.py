"""Root pytest configuration for the core's and every plugin's tests: quiet progress bars and a
throw-away autovi cache (synthetic data, cached teachers and stage-1 models) per session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import zlib

os.environ.setdefault("AUTOVI_NO_PROGRESS", "1")
# `make test` runs the suite in pytest-xdist workers (one per core): each worker, and every process a test
# starts, gets its share of the cores, so torch's thread pools do not fight over them. The cache below is
# made once by the controller, before the workers start, so they share it (its writes are atomic).
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))
if "AUTOVI_CACHE_DIR" not in os.environ:
    os.environ["AUTOVI_CACHE_DIR"] = tempfile.mkdtemp(prefix="autovi-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUTOVI_CACHE_DIR"], ignore_errors=True)


# --- varied seeds, torch included --------------------------------------------------------------------
# pytest-randomly (in the test extra) shuffles the test order and, before each test's setup, call and
# teardown, reseeds `random` and numpy's global state from a seed that changes from run to run (shown in
# the header as --randomly-seed=N: pass that option to repeat a run's order and draws). It leaves torch alone;
# the hooks below reseed torch's global generator alongside it, with the same per-test offsets. This is
# no substitute for seeding: every test seeds what it draws, and a test that does not gets a different
# draw on every run instead of one fixed by the order of the tests before it.
def _reseed_torch(item, offset: int) -> None:
    seed = getattr(item.config.option, "randomly_seed", None)
    if not isinstance(seed, int) or not getattr(item.config.option, "randomly_reset_seed", False):
        return  # pytest-randomly absent or disabled (-p no:randomly, --randomly-dont-reset-seed)
    torch = sys.modules.get("torch")  # imported by the test modules that use it; not imported here for the rest
    if torch is None:
        return
    torch.manual_seed((seed + zlib.crc32(item.nodeid.encode("utf-8", "surrogatepass")) + offset) % 2**63)


def pytest_runtest_setup(item) -> None:
    _reseed_torch(item, -1)


def pytest_runtest_call(item) -> None:
    _reseed_torch(item, 0)


def pytest_runtest_teardown(item) -> None:
    _reseed_torch(item, 1)
