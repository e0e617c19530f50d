"""File helpers shared by the core and the plugins: which files are images, and atomic writes.

Torch-free and import-light: the core imports it at start-up.

- :data:`IMAGE_SUFFIXES` / :func:`is_image_file`: the image files autovi reads (dataset folders,
  texture folders, teacher pools, part-map image roots), matched case-insensitively; hidden files
  (``.name``, e.g. temporary files of a concurrent writer) are never images.
- :func:`atomic_write`: write under a temporary name next to the target, then rename it into place
  with :func:`os.replace`, so that readers (and later runs after a crash) never see half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Suffixes of image files (lower case; compare ``path.suffix.lower()``, or use :func:`is_image_file`)."""


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image file by its suffix (any case); hidden files are not images.

    Only the name is looked at: check ``path.is_file()`` separately where directories may match.
    """
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def temporary_sibling(path: str | os.PathLike[str]) -> Path:
    """A hidden, unique temporary name next to ``path`` keeping its suffix (``np.save`` and format
    detection by suffix keep working), e.g. ``.model.tmp1234-1a2b3c4d.pt`` for ``model.pt``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_write(target) as tmp: write(tmp)``: the file (or folder) written at ``tmp`` becomes
    ``target`` when the block ends without error; on error ``tmp`` is removed and ``target`` is left
    as it was. The parent folder is created. A folder replaces an existing ``target`` folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


__all__ = ["IMAGE_SUFFIXES", "atomic_write", "is_image_file", "temporary_sibling"]
