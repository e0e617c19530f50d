"""Entry-point module: registers the ensemble (its members are found through the registry at run time)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import Ensemble

    return [Ensemble]
