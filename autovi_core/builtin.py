"""The core's own plugin: the built-in datasets and metrics, registered like any other plugin."""

from __future__ import annotations

from .hookspecs import hookimpl


@hookimpl
def autovi_register_datasets() -> list[object]:
    from .datasets.autovi import AutoVIDataset, MVTecLOCODataset
    from .datasets.folder import FolderDataset
    from .datasets.mvtec_ad import MVTecADDataset
    from .datasets.synthetic import SyntheticDataset
    from .datasets.synthetic_autovi import SyntheticAutoVIDataset
    from .datasets.visa import VisADataset

    return [
        SyntheticDataset(),
        SyntheticAutoVIDataset(),
        AutoVIDataset(),
        MVTecADDataset(),
        MVTecLOCODataset(),
        VisADataset(),
        FolderDataset(),
    ]


@hookimpl
def autovi_register_metrics() -> list[object]:
    from .metrics.standard import STANDARD_METRICS

    return [metric() for metric in STANDARD_METRICS]


@hookimpl
def autovi_register_recipes() -> list[object]:
    from .reproduce.recipe import builtin_recipes

    return builtin_recipes()
