"""``autovi new-plugin NAME``: write a complete, pip-installable detector plugin to start from.

The files come from the templates under ``autovi_core/templates/plugin/`` (package data), with
``${name}``-style placeholders filled in by :class:`string.Template`. The generated detector is a
working method (a per-pixel Gaussian) written against the 1.0 contract, with a conformance test;
``examples/autovi-plugin-pixel-gaussian/`` in the autovi repository is exactly what
``autovi new-plugin pixel_gaussian`` writes (a test keeps the two identical).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from .errors import ConfigError

TEMPLATE_PACKAGE = "autovi_core"
TEMPLATE_DIR = ("templates", "plugin")

# template file (under templates/plugin/) -> path in the generated plugin (placeholders allowed)
FILES: dict[str, str] = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "package/__init__.py.tmpl": "${package}/__init__.py",
    "package/plugin.py.tmpl": "${package}/plugin.py",
    "package/detector.py.tmpl": "${package}/detector.py",
    "tests/test_detector.py.tmpl": "tests/test_${name}.py",
}

_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


@dataclass(frozen=True)
class PluginNames:
    """The names derived from a plugin's NAME (which is also its detector and entry-point name)."""

    name: str
    """Detector name and entry-point name, e.g. ``pixel_gaussian``."""
    distribution: str
    """pip distribution, e.g. ``autovi-plugin-pixel-gaussian`` (also the folder written)."""
    package: str
    """Import package, e.g. ``autovi_plugin_pixel_gaussian``."""
    class_name: str
    """The detector class, e.g. ``PixelGaussian``."""

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        """Validate ``name`` (a lowercase Python identifier, words joined by single underscores)."""
        if not _NAME.fullmatch(name) or keyword.iskeyword(name):
            raise ConfigError(
                f"invalid plugin name {name!r}: use a lowercase Python identifier such as 'my_method' "
                "(letters, digits and single underscores, starting with a letter)"
            )
        return cls(
            name=name,
            distribution="autovi-plugin-" + name.replace("_", "-"),
            package="autovi_plugin_" + name,
            class_name="".join(part.capitalize() for part in name.split("_")),
        )

    def substitutions(self) -> dict[str, str]:
        from . import API_VERSION

        major = int(API_VERSION.split(".")[0])
        return {
            "name": self.name,
            "distribution": self.distribution,
            "package": self.package,
            "class_name": self.class_name,
            "core_requirement": f"autovi-core>={API_VERSION},<{major + 1}",
        }


def render(names: PluginNames) -> dict[str, str]:
    """The generated plugin as {relative POSIX path: file text}."""
    root = resources.files(TEMPLATE_PACKAGE).joinpath(*TEMPLATE_DIR)
    values = names.substitutions()
    return {
        Template(target).substitute(values): Template(root.joinpath(source).read_text(encoding="utf-8")).substitute(values)
        for source, target in FILES.items()
    }


def new_plugin(name: str, output: str | Path = ".") -> Path:
    """Write plugin ``name`` into ``output``/autovi-plugin-<name>/ and return that folder.

    Raises :class:`ConfigError` for an invalid name or when the folder already exists (nothing is
    overwritten).
    """
    names = PluginNames.from_name(name)
    target = Path(output) / names.distribution
    if target.exists():
        raise ConfigError(f"{target} already exists; remove it or choose another --output folder")
    files = render(names)
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    return target
