"""Entry-point module: registers CFlow-AD (torch is imported only when the detector is used)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import CFlow

    return [CFlow]
