"""The example plugin, installed as its own distribution when the environment lacks it; the shuffle seed in the summary."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

# examples/autovi-plugin-pixel-gaussian is what `autovi new-plugin pixel_gaussian` writes (tests/test_scaffold.py).
EXAMPLE_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "autovi-plugin-pixel-gaussian"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import ``benchmarks/<name>.py`` (not a package) as module ``name``."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load
