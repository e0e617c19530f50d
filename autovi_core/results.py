"""results.jsonl: one JSON object per experiment, appended as whole, flushed lines."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import DataError

RESULTS_FILE = "results.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a single ``write`` of a whole line, then flush it to disk."""
    line = (json.dumps(_clean(record), sort_keys=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_results(path: Path) -> tuple[list[dict], int]:
    """Read a run directory's ``results.jsonl`` (or the file itself).

    Returns the records and the number of unreadable lines (e.g. a truncated last line).
    Blank lines are ignored. A missing file raises :class:`DataError`.
    """
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"results file not found: {file}")
    records: list[dict] = []
    unreadable = 0
    for raw in file.read_bytes().splitlines():
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            unreadable += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            unreadable += 1
    return records, unreadable
