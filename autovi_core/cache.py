"""The autovi cache folder: generated datasets, distilled teachers, stage-1 models, part centroids.

- :func:`cache_root` / :func:`cache_dir`: where cached things live.
- :func:`load_or_build`: the artifact cached at a path keyed by a fingerprint (of the settings and
  training data that determine it; :func:`autovi_core.training.run_fingerprint` hashes the usual
  ones), else built, saved atomically and returned. A cache entry that cannot be read is rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .files import atomic_write

T = TypeVar("T")


def cache_root() -> Path:
    """``$AUTOVI_CACHE_DIR``, else ``$XDG_CACHE_HOME/autovi``, else ``~/.cache/autovi``."""
    if os.environ.get("AUTOVI_CACHE_DIR"):
        return Path(os.environ["AUTOVI_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "autovi"
    return Path.home() / ".cache" / "autovi"


def cache_dir(*parts: str) -> Path:
    """``cache_root() / parts...``, created if missing (e.g. ``cache_dir("my-method", "teachers")``)."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_or_build(
    path: str | os.PathLike[str],
    build: Callable[[], T],
    *,
    load: Callable[[Path], T],
    save: Callable[[T, Path], None],
    use_cache: bool = True,
) -> tuple[T, bool]:
    """``(artifact, True)`` when ``load(path)`` reads the cache entry at ``path``, else
    ``(build(), False)`` after ``save(artifact, tmp)`` wrote it to a temporary file renamed to
    ``path`` (so concurrent runs and crashes never leave half an entry).

    ``path`` should name the fingerprint of everything the artifact depends on. An entry that
    ``load`` fails to read (corrupt, from an older format) is rebuilt and overwritten.
    ``use_cache=False`` builds without reading or writing the cache.
    """
    path = Path(path)
    if use_cache and path.is_file():
        try:
            return load(path), True
        except Exception:  # noqa: BLE001, S110 - an unreadable entry only means "build it again"
            pass
    artifact = build()
    if use_cache:
        with atomic_write(path) as tmp:
            save(artifact, tmp)
    return artifact, False


__all__ = ["cache_dir", "cache_root", "load_or_build"]
