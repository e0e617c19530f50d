"""Entry-point module: registers GLASS (torch and timm are imported only when it is used)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors() -> list[type]:
    from .detector import GLASS

    return [GLASS]
