"""Entry-point module: registers the detector through the ``autovi_register_detectors`` hook."""

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors():
    from .pixel_gaussian import PixelGaussian

    return [PixelGaussian]
