"""Entry-point module: registers PatchCore (heavy imports happen only when the detector is used)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import PatchCore

    return [PatchCore]
