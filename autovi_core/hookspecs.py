"""All hook specifications of autovi, in one place.

A plugin is a module registered under the entry-point group ``autovi``; it implements any of these
hooks with ``@autovi_core.hookimpl``. Keep the module light: import heavy libraries (torch, timm)
inside the detector's methods, so that ``autovi list`` stays fast.

Example::

    from autovi_core import hookimpl

    @hookimpl
    def autovi_register_detectors():
        from .detector import MyDetector
        return [MyDetector]
"""

from __future__ import annotations

import pluggy

PROJECT = "autovi"
ENTRY_POINT_GROUP = "autovi"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def autovi_register_detectors() -> list[type]:
    """Return the :class:`autovi_core.detector.Detector` subclasses this plugin provides."""


@hookspec
def autovi_register_datasets() -> list[object]:
    """Return :class:`autovi_core.dataset.DatasetProvider` instances this plugin provides."""


@hookspec
def autovi_register_metrics() -> list[object]:
    """Return :class:`autovi_core.metric.Metric` instances this plugin provides."""


@hookspec
def autovi_register_recipes() -> list[object]:
    """Return :class:`autovi_core.reproduce.recipe.Recipe` objects: papers ``autovi reproduce`` can re-run."""
