"""The example plugin, installed as its own distribution when the environment lacks it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

EXAMPLE_PLUGIN = Path(__file__).parent / "example_plugin"


def _install_example_plugin() -> None:
    """Install tests/example_plugin (a separate distribution) into this environment if absent."""
    try:
        metadata.distribution("autovi-example-detector")
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
