"""The autovi cache folder: generated datasets, distilled teachers, stage-1 models, part centroids."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$AUTOVI_CACHE_DIR``, else ``$XDG_CACHE_HOME/autovi``, else ``~/.cache/autovi``."""
    if os.environ.get("AUTOVI_CACHE_DIR"):
        return Path(os.environ["AUTOVI_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "autovi"
    return Path.home() / ".cache" / "autovi"


def cache_dir(*parts: str) -> Path:
    """``cache_root() / parts...``, created if missing (e.g. ``cache_dir("efficientad", "teachers")``)."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
