"""The example plugin, installed as its own distribution when the environment lacks it; the shuffle seed in the summary."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

# examples/autovi-plugin-pixel-gaussian is what `autovi new-plugin pixel_gaussian` writes (tests/test_scaffold.py).
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "autovi-plugin-pixel-gaussian"


def _install_example_plugin() -> None:
    """Install the example plugin (a separate distribution) into this environment if absent."""
    try:
        metadata.distribution("autovi-plugin-pixel-gaussian")
        return
    except metadata.PackageNotFoundError:
        pass
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE_PLUGIN)],
        check=True,
    )
    import importlib

    importlib.invalidate_caches()
    from autovi_core.registry import get_registry

    get_registry.cache_clear()


_install_example_plugin()


@pytest.fixture(scope="session")
def example_plugin() -> Path:
    return EXAMPLE_PLUGIN


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print pytest-randomly's seed (order and seeds of this run) so that any failure can be replayed, also under -q."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order and seeds: pytest-randomly seed {seed} (replay with --randomly-seed={seed})")
