"""Progress bars (rich) for every long step; silent when AUTOVI_NO_PROGRESS is set or not a TTY."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    if os.environ.get("AUTOVI_NO_PROGRESS"):
        return False
    import sys

    return sys.stderr.isatty()


def track(items: Sequence[T] | Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """Iterate over ``items`` showing a rich progress bar on stderr."""
    if not progress_enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, console=Console(stderr=True), transient=True)
