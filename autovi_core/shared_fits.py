"""Fitted detectors shared within one run: a fit the run needs twice is done once.

An ensemble fits its members on the training images it is given; when the same ``autovi run`` also
evaluates a member on its own, with the same category, seed, options, device and hyperparameters,
the two fits are one computation. The runner gives such experiments one folder
(:attr:`autovi_core.experiment.Task.shared_fits`, see :func:`plan_shared_fits`); inside
:func:`sharing_fits`, :func:`fit_shared` saves each detector it fits there under a key of everything
the fit depends on, and loads the saved detector instead of fitting when the key is already there.
Outside such a folder it simply fits.

The key (:func:`fit_key`) is a SHA-256 of the detector's name, resolved hyperparameters, seed and
device and of the training images' bytes. Every fit through :func:`fit_shared` starts from the
seed's global random state (:func:`autovi_core.seeding.seed_everything`), so a member fitted inside
an ensemble is the same model as the member fitted alone, whichever of the two ran first.
"""

from __future__ import annotations

import contextlib
import contextvars
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .detector import Detector, LabelledDefects

SHARED_FITS_FOLDER = "shared-fits"
"""The folder of a run's shared fits inside its output folder (removed when the run ends)."""

_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("autovi_shared_fits", default=None)


@contextlib.contextmanager
def sharing_fits(folder: str | Path | None) -> Iterator[None]:
    """Within the block, :func:`fit_shared` saves fits to and loads them from ``folder`` (None: no sharing)."""
    token = _FOLDER.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def fit_key(detector: Detector, images: Sequence[np.ndarray]) -> str:
    """SHA-256 (hex) of what ``detector.fit(images)`` depends on: name, hyperparameters, seed, device, image bytes."""
    from .training import run_fingerprint

    settings = {"detector": detector.name, "device": str(detector.device), "hparams": dict(detector.hparams)}
    return run_fingerprint(settings, detector.seed, images)


def fit_shared(
    detector: Detector,
    images: Sequence[np.ndarray],
    labelled: LabelledDefects | None = None,
    *,
    held_out: Sequence[np.ndarray] | None = None,
) -> tuple[Detector, bool]:
    """``(fitted detector, reused)``: ``detector`` fitted on ``images`` from its seed's random state,
    or, inside :func:`sharing_fits` when the same fit was saved there, that saved detector loaded
    (``reused`` True; ``provenance["shared_fit"]`` says so). Supervised fits and detectors that read
    held-out goods are never shared (their fits depend on more than the key)."""
    from .seeding import seed_everything

    folder, path = _FOLDER.get(), None
    if folder is not None and labelled is None and not detector.capabilities.uses_held_out_goods:
        path = folder / fit_key(detector, images)
    if path is not None and path.is_dir():
        try:
            loaded = type(detector).load(path, device=detector.device)
        except Exception:  # noqa: BLE001 - an unreadable entry (a crash mid-way, another version) is fitted again
            shutil.rmtree(path, ignore_errors=True)
        else:
            loaded.provenance["shared_fit"] = "loaded: fitted once in this run, by another experiment or member"
            return loaded, True
    seed_everything(detector.seed)
    detector.fit(images, labelled, held_out=held_out)
    if path is not None:
        with contextlib.suppress(OSError):  # another process saved the same fit first: theirs is kept
            detector.save(path)
    return detector, False


def plan_shared_fits(tasks: Sequence[Any], registry: Any, folder: Path) -> list[Any]:
    """``tasks`` with ``shared_fits=folder`` on each experiment whose fit another one of the run
    repeats (a composite detector, such as an ensemble, and an experiment of one of its
    :meth:`~autovi_core.detector.Detector.component_detectors` on the same data, seed, profile,
    device and options); composites are moved after the other experiments, so that on a sequential
    executor the components are fitted alone first and the composite loads them."""
    import dataclasses

    def data_key(task: Any) -> tuple[Any, ...]:  # Task.key without the detector and its overrides
        return (*task.key[1:6], task.root, task.device)

    components: dict[int, set[str]] = {}
    for index, task in enumerate(tasks):
        cls = registry.detector_class(task.detector)
        names = set(cls.component_detectors(cls.resolve_hparams(task.profile, task.overrides)))
        if names:
            components[index] = names
    sharing: set[int] = set()
    for index, composite in enumerate(tasks):
        for other, task in enumerate(tasks):
            if other != index and task.detector in components.get(index, ()) and data_key(task) == data_key(composite):
                sharing |= {index, other}
    planned = [dataclasses.replace(t, shared_fits=str(folder)) if i in sharing else t for i, t in enumerate(tasks)]
    order = sorted(range(len(planned)), key=lambda i: i in components and i in sharing)
    return [planned[i] for i in order]


__all__ = ["SHARED_FITS_FOLDER", "fit_key", "fit_shared", "plan_shared_fits", "sharing_fits"]
