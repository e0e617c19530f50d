"""``autovi report DIR --format html``: a folder with index.html and its pictures, viewable offline.

Modules, one concept each: :mod:`.data` (records, experiment files, notes), :mod:`.curves`
(ROC / precision-recall points), :mod:`.figures` (matplotlib plots), :mod:`.pictures`
(thumbnails and overlays), :mod:`.grid` (which pictures, written once each), :mod:`.page` (the
HTML) and :mod:`.build` (:func:`write_html_report`, which puts them together).

matplotlib is the optional ``report`` extra; nothing here imports it until a report is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

INSTALL_HINT = 'pip install "autovi-core[report]"'
DEFAULT_METRICS = ("image_auroc", "auc_spro.0.05", "pixel_auroc")


def require_matplotlib() -> None:
    """Raise a one-line :class:`ConfigError` when matplotlib (the ``report`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(f"--format html needs matplotlib, which is not installed: {INSTALL_HINT}") from None


def write_html_report(run_dir: Path, out_dir: Path | None = None, metrics: Any = DEFAULT_METRICS) -> Path:
    """Write the HTML report of ``run_dir`` (a run folder or its results.jsonl) into ``out_dir``
    (default ``<run folder>/report``); returns the path of its index.html."""
    require_matplotlib()
    from .build import write

    return write(Path(run_dir), None if out_dir is None else Path(out_dir), tuple(metrics))


__all__ = ["DEFAULT_METRICS", "INSTALL_HINT", "require_matplotlib", "write_html_report"]
