"""The domains of the command-line options that are not hyperparameters, checked before a command
does any work (the same :mod:`autovi_core.domains` as hyperparameters; exit status 2 on a refusal).

Options whose values are names of installed things (``--dataset``, ``--category``, ``--detector``)
are checked against what is installed when the tasks are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .augmentation import RECIPES
from .detector import PROFILES
from .domains import Choice, Domain, DomainError, Float, Int, Optional, Pattern
from .errors import ConfigError
from .evaluation import SPRO_MODES
from .report import FORMATS

SEED = Int(0, 2**32 - 1)
"""Seeds seed numpy, whose generators take 0 to 2^32 - 1."""
DEVICE = Pattern(r"auto|cpu|cuda(:[0-9]+)?", "auto, cpu, cuda or cuda:N")
SPRO_MODE = Choice(*SPRO_MODES)

RUN: Mapping[str, Domain] = {
    "--seed": SEED,
    "--profile": Choice(*PROFILES),
    "--device": DEVICE,
    "--executor": Choice("local", "ray"),
    "--spro-mode": SPRO_MODE,
    "--timeout": Optional(Float(0.0, low_open=True), none_means="no limit"),
    "--memory-limit": Optional(Float(0.0, low_open=True), none_means="no cap"),
    "--ray-cpus-per-task": Float(0.0, low_open=True),
    "--ray-gpus-per-task": Optional(Float(0.0), none_means="1 if the cluster has GPUs, else 0"),
    "--augment": Optional(Choice(*RECIPES), none_means="no augmentation"),
    "--train-images": Optional(Int(1), none_means="every training image"),
    "--crop": Optional(Pattern(r"[1-9][0-9]*x[1-9][0-9]*", "WIDTHxHEIGHT in pixels, e.g. 200x200"), none_means="the whole image"),
}
EVALUATE: Mapping[str, Domain] = {"--spro-mode": SPRO_MODE}
REPORT: Mapping[str, Domain] = {"--format": Choice(*FORMATS)}


def check_options(domains: Mapping[str, Domain], values: Mapping[str, Any]) -> None:
    """Raise a one-line :class:`ConfigError` for the first option whose value is outside its domain
    (a list value, from a repeatable option, is checked item by item)."""
    for option, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            try:
                domains[option].check(item)
            except DomainError as exc:
                raise ConfigError(f"{option} {item!r} refused: {exc}") from None


__all__ = ["DEVICE", "EVALUATE", "REPORT", "RUN", "SEED", "SPRO_MODE", "check_options"]
