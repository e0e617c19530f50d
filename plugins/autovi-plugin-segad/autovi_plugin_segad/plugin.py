"""Entry-point module: registers SegAD (its base detectors are found through the registry at run time)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import SegAD

    return [SegAD]
