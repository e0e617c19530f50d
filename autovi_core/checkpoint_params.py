"""The two hyperparameters of a resumable training loop (:class:`autovi_core.training.Checkpointer`),
declared once for every plugin that trains, and their combination rule. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .domains import Int, Optional, Param, Text
from .errors import ConfigError


def checkpoint_params(unit: str, files: str = "training checkpoints") -> dict[str, Param]:
    """``checkpoint_every`` (``unit``s between checkpoints) and ``checkpoint_dir`` (the folder of
    ``files``), both off in the ``paper`` and ``fast`` profiles. A folder alone resumes without saving."""
    return {
        "checkpoint_every": Param(
            Optional(Int(1), none_means="no periodic checkpoints"),
            paper=None,
            fast=None,
            meaning=f"{unit}s between checkpoints written to checkpoint_dir",
            source="autovi",
        ),
        "checkpoint_dir": Param(
            Optional(Text("a folder path"), none_means="no checkpoints, no resuming"),
            paper=None,
            fast=None,
            meaning=f"folder of {files}; a fit with the same data and hyperparameters resumes from it",
            source="autovi",
        ),
    }


def check_checkpoint_params(detector: str, hparams: Mapping[str, Any]) -> None:
    """Refuse ``checkpoint_every`` without ``checkpoint_dir``: nothing would be written."""
    every = hparams["checkpoint_every"]
    if every is not None and hparams["checkpoint_dir"] is None:
        raise ConfigError(f"detector {detector!r}: checkpoint_every={every} refused: checkpoint_dir is none, so nothing would be written")


__all__ = ["check_checkpoint_params", "checkpoint_params"]
