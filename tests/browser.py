"""Headless Chromium (Debian's package, installed by ``make install``) looking at a local page as a person would."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Appended to a copy of the page: after the load event, each <img> says whether it decoded.
_IMAGE_PROBE = (
    "<script>window.addEventListener('load', function () {"
    "document.querySelectorAll('img').forEach(function (i) {"
    "i.setAttribute('data-probe', i.complete && i.naturalWidth > 0 ? 'loaded' : 'broken'); }); });</script>"
)
_CONSOLE = re.compile(r":(INFO|WARNING|ERROR):CONSOLE[^\]]*\] (.*)")


@dataclass
class PageLoad:
    """What the browser saw: every image's src and whether it decoded, and the console's messages."""

    images: dict[str, str]
    console: list[str]


def chromium() -> str:
    """The Chromium executable, or skip the test saying how to get one."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("headless Chromium not found: `make install` installs Debian's chromium where it runs as root with apt")
    return path


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def load(page: Path, tmp_path: Path) -> PageLoad:
    """Open ``page`` (from a copy beside it, with an image probe added) and read back the DOM and console."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", _IMAGE_PROBE + "</body>"), encoding="utf-8")
    try:
        done = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    images = dict(re.findall(r'<img[^>]*?src="([^"]+)"[^>]*?data-probe="(\w+)"', done.stdout))
    console = [m.group(2) for m in _CONSOLE.finditer(done.stderr)]
    return PageLoad(images, console)


def screenshot(page: Path, out: Path, tmp_path: Path, size: tuple[int, int] = (1280, 2000)) -> Path:
    """A PNG of the page's first ``size`` pixels as Chromium renders it."""
    done = _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.as_uri()], tmp_path / "profile")
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    return out
