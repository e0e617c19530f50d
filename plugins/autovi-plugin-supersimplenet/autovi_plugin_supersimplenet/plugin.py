"""Entry-point module: registers SuperSimpleNet, unsupervised and supervised (torch and timm are imported only when used)."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors() -> list[type]:
    from .detector import SuperSimpleNet
    from .supervised import SuperSimpleNetSupervised

    return [SuperSimpleNet, SuperSimpleNetSupervised]
