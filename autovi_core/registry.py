"""The registry: every detector, dataset and metric contributed by the loaded plugins, by name.

This is also how one plugin uses another (a detector that combines others builds them with
``registry.create_detector(name, ...)``): never by importing it.
"""

from __future__ import annotations

import functools
from typing import Any

from .dataset import DatasetProvider
from .detector import Detector
from .errors import PluginError
from .metric import Metric
from .plugins import PluginHost, PluginRecord
from .reproduce.recipe import Recipe


class Registry:
    """Name-indexed view of what the plugins registered."""

    def __init__(self, host: PluginHost | None = None) -> None:
        self.host = host or PluginHost()
        self.records: list[PluginRecord] = []
        self.detectors: dict[str, type[Detector]] = {}
        self.datasets: dict[str, DatasetProvider] = {}
        self.metrics: dict[str, Metric] = {}
        self.recipes: dict[str, Any] = {}
        self._distribution: dict[tuple[str, str], PluginRecord] = {}
        for hook, kind, table, base in (
            ("autovi_register_detectors", "detector", self.detectors, Detector),
            ("autovi_register_datasets", "dataset", self.datasets, DatasetProvider),
            ("autovi_register_metrics", "metric", self.metrics, Metric),
            ("autovi_register_recipes", "recipe", self.recipes, Recipe),
        ):
            for item, record in self.host.collect(hook, kind):
                valid = isinstance(item, type) and issubclass(item, base) if kind == "detector" else isinstance(item, base)
                if not valid or not record.name:
                    record.status, record.error = "broken", f"registered {item!r}, which is not a named {base.__name__}"
                elif record.name in table:
                    record.status, record.error = "broken", f"{kind} name {record.name!r} is already registered"
                else:
                    table[record.name] = item  # type: ignore[index]
                self.records.append(record)
                self._distribution[(kind, record.name)] = record
        self.records.extend(self.host.broken)

    # --- lookups with helpful errors -----------------------------------------------------------
    def _lookup(self, table: dict[str, Any], kind: str, name: str) -> Any:
        if name not in table:
            for record in self.records:
                if record.name == name and record.status != "ok":
                    raise PluginError(f"{kind} plugin {name!r} ({record.distribution} {record.version}) is {record.status}: {record.error}")
            valid = ", ".join(sorted(table)) or "none installed"
            raise PluginError(f"unknown {kind} {name!r}; valid: {valid}")
        return table[name]

    def detector_class(self, name: str) -> type[Detector]:
        return self._lookup(self.detectors, "detector", name)

    def dataset(self, name: str) -> DatasetProvider:
        return self._lookup(self.datasets, "dataset", name)

    def metric(self, name: str) -> Metric:
        return self._lookup(self.metrics, "metric", name)

    def recipe(self, name: str) -> Recipe:
        return self._lookup(self.recipes, "recipe", name)

    def create_detector(self, name: str, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> Detector:
        """Instantiate a registered detector with a profile and hyperparameter overrides."""
        return self.detector_class(name)(profile, seed=seed, device=device, **overrides)

    def version_of(self, kind: str, name: str) -> str | None:
        record = self._distribution.get((kind, name))
        return record.version if record else None

    def distribution_of(self, kind: str, name: str) -> str | None:
        record = self._distribution.get((kind, name))
        return record.distribution if record else None


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry (plugins are discovered once)."""
    return Registry()
