"""Collect ``bench_*.py`` files as test modules, so ``pytest benchmarks --benchmark-enable`` runs them."""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
