"""Entry-point module: registers AnomalyDINO (torch, timm and scipy are imported only when it is used)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors() -> list[type]:
    from .detector import AnomalyDINO

    return [AnomalyDINO]
