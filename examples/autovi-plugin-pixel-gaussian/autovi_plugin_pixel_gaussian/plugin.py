"""Entry-point module (``[project.entry-points.autovi]`` in pyproject.toml): registers the detector.

Every ``autovi`` command imports this module and calls its hooks, ``autovi list`` included, so keep
it and the detector module light: import heavy libraries (torch, timm) inside the detector's
methods, never at module level.
"""

from __future__ import annotations

from autovi_core import hookimpl


@hookimpl
def autovi_register_detectors() -> list[type]:
    """The detector classes this plugin provides."""
    from .detector import PixelGaussian

    return [PixelGaussian]
