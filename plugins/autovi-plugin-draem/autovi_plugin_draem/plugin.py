"""Entry-point module: registers DRAEM through the ``autovi_register_detectors`` hook."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import DRAEM

    return [DRAEM]
