"""``autovi`` run in the test's own process (faster than a subprocess; the same exit status and output)."""

from __future__ import annotations

import sys

import pytest


def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """``autovi ARGS`` in this process: (exit status, stdout, stderr)."""
    from autovi_core import cli

    monkeypatch.setattr(sys, "argv", ["autovi", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err
