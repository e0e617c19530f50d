"""The HTML report as a person sees it: a real run's report opened in headless Chromium.

Every image must decode, the console must stay silent, and the screenshot must show a page
(not a blank or an error page). Skipped, saying why, where Chromium is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser import chromium, load, screenshot
from PIL import Image

pytest.importorskip("matplotlib")


def _autovi(monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """``autovi ARGS`` in this process; its stdout (exit status 0 asserted)."""
    import contextlib
    import io
    import sys

    from autovi_core import cli

    monkeypatch.setattr(sys, "argv", ["autovi", *args])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        cli.main()
    assert not info.value.code, err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of a real two-detector, one-category run with saved maps."""
    out = tmp_path_factory.mktemp("browser-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run = ["run", "-d", "pixel_gaussian", "-d", "padim", "-c", "clip_assembly", "--save-maps", "--in-process", "--output", str(out)]
        _autovi(monkeypatch, *run)
        printed = _autovi(monkeypatch, "report", str(out), "--format", "html")
    index = out / "report" / "index.html"
    assert str(index) in printed and index.is_file()
    return index


def test_every_image_loads_and_the_console_is_silent(report: Path, tmp_path: Path) -> None:
    chromium()
    page = load(report, tmp_path)
    assert len(page.images) >= 10, f"expected the report's figures and thumbnails, the browser saw {len(page.images)} image(s)"
    broken = [src for src, state in page.images.items() if state != "loaded"]
    assert not broken, f"images that did not load: {broken}"
    assert page.console == [], page.console


def test_screenshot_shows_the_report(report: Path, tmp_path: Path) -> None:
    chromium()
    shot = np.asarray(Image.open(screenshot(report, tmp_path / "report.png", tmp_path)).convert("RGB"))
    assert shot.shape[:2] == (2000, 1280)
    colours = len(np.unique(shot.reshape(-1, 3) // 16, axis=0))
    assert colours > 50, f"the page looks blank: {colours} distinct colours"
    assert (shot.std(axis=(0, 1)) > 10).all()
