"""Plugin discovery: built-ins first, then the entry-point group ``autovi``.

A plugin that fails to import, or whose hooks fail, is recorded as *broken* with its error (and its
full traceback, shown by ``autovi --debug list``) and skipped; it never crashes the caller. A plugin
whose distribution pins an ``autovi-core`` range that excludes the running core (one built for
another major version of the contract, :data:`autovi_core.API_VERSION`) is recorded as
*incompatible* with the reason and is not imported at all. ``AUTOVI_PLUGINS`` (comma-separated entry-point names) loads
only those plugins; ``AUTOVI_DISABLE_PLUGINS`` blocks some by name.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

import pluggy

from . import hookspecs
from .hookspecs import ENTRY_POINT_GROUP, PROJECT

CORE_DISTRIBUTION = "autovi-core"


@dataclass
class PluginRecord:
    """One entry of ``autovi list``."""

    kind: str  # detector | dataset | metric | plugin (when broken before its kind is known)
    name: str
    distribution: str
    version: str
    status: str  # ok | broken | incompatible
    error: str | None = None
    traceback: str | None = None
    """The full traceback of a broken plugin (``autovi --debug list``)."""

    def as_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
        }


def _one_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def core_requirement(dist: metadata.Distribution | None) -> str | None:
    """The ``autovi-core`` requirement a plugin distribution declares (e.g. ``autovi-core>=1.0,<2``)."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    for line in (dist.requires or []) if dist is not None else []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) == CORE_DISTRIBUTION and (requirement.marker is None or requirement.marker.evaluate()):
            return str(requirement)
    return None


def incompatibility(dist: metadata.Distribution | None, core: str) -> str | None:
    """Why a plugin distribution cannot run on autovi-core ``core``, or None if its pin admits it."""
    from packaging.requirements import Requirement

    pinned = core_requirement(dist)
    if pinned is None:
        return None
    specifier = Requirement(pinned).specifier
    if specifier.contains(core, prereleases=True):
        return None
    return f"requires {pinned}, but autovi-core {core} is installed (contract API {_api_version()})"


def _api_version() -> str:
    from . import API_VERSION

    return API_VERSION


def _name_filter(variable: str) -> set[str] | None:
    value = os.environ.get(variable, "").strip()
    return {part.strip() for part in value.split(",") if part.strip()} or None


def core_version() -> str:
    try:
        return metadata.version(CORE_DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        from . import __version__

        return __version__


class PluginHost:
    """Loads plugins into a pluggy manager and remembers which ones are broken."""

    def __init__(self, include: set[str] | None = None, exclude: set[str] | None = None) -> None:
        self.manager = pluggy.PluginManager(PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.include = include if include is not None else _name_filter("AUTOVI_PLUGINS")
        self.exclude = (exclude or set()) | (_name_filter("AUTOVI_DISABLE_PLUGINS") or set())
        self.broken: list[PluginRecord] = []
        self.origin: dict[int, tuple[str, str]] = {}  # id(plugin module) -> (distribution, version)
        self._register_builtins()
        self._load_entry_points()

    def _register(self, module: ModuleType, name: str, distribution: str, version: str) -> None:
        try:
            self.manager.register(module, name=name)
            self.manager.check_pending()
        except Exception as exc:  # a hookimpl that does not match its spec
            if self.manager.is_registered(module):
                self.manager.unregister(module)
            self.broken.append(PluginRecord("plugin", name, distribution, version, "broken", _one_line(exc), _traceback(exc)))
            return
        self.origin[id(module)] = (distribution, version)

    def _register_builtins(self) -> None:
        from . import builtin

        self._register(builtin, "core", CORE_DISTRIBUTION, core_version())

    def _load_entry_points(self) -> None:
        for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            if self.include is not None and entry_point.name not in self.include:
                continue
            if entry_point.name in self.exclude or self.manager.has_plugin(entry_point.name):
                continue
            dist = entry_point.dist
            distribution = dist.metadata["Name"] if dist is not None else "?"
            version = dist.version if dist is not None else "?"
            reason = incompatibility(dist, core_version())
            if reason is not None:
                self.broken.append(PluginRecord("plugin", entry_point.name, distribution, version, "incompatible", reason))
                continue
            try:
                module = entry_point.load()
            except BaseException as exc:  # noqa: BLE001 - any import failure marks the plugin broken
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.broken.append(
                    PluginRecord("plugin", entry_point.name, distribution, version, "broken", _one_line(exc), _traceback(exc))
                )
                continue
            self._register(module, entry_point.name, distribution, version)

    def collect(self, hook_name: str, kind: str) -> list[tuple[object, PluginRecord]]:
        """Call one registration hook on every plugin separately, isolating failures."""
        found: list[tuple[object, PluginRecord]] = []
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            plugin_name = self.manager.get_name(impl.plugin) or "?"
            distribution, version = self.origin.get(id(impl.plugin), ("?", "?"))
            try:
                items = list(impl.function() or [])
            except Exception as exc:
                self.broken.append(PluginRecord(kind, plugin_name, distribution, version, "broken", _one_line(exc), _traceback(exc)))
                continue
            for item in items:
                name = getattr(item, "name", "") or plugin_name
                found.append((item, PluginRecord(kind, name, distribution, version, "ok")))
        return found
