"""Root pytest configuration for the core's and every plugin's tests: quiet progress bars and a
throw-away autovi cache (synthetic data, cached teachers and stage-1 models) per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("AUTOVI_NO_PROGRESS", "1")
if "AUTOVI_CACHE_DIR" not in os.environ:
    os.environ["AUTOVI_CACHE_DIR"] = tempfile.mkdtemp(prefix="autovi-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AUTOVI_CACHE_DIR"], ignore_errors=True)
