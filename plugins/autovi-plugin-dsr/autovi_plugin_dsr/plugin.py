"""Entry-point module: registers DSR through the ``autovi_register_detectors`` hook."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .detector import DSR

    return [DSR]
