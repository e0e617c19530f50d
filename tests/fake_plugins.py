"""Build throw-away plugin distributions (a .dist-info folder plus a module) on a path."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_plugin(
    site: Path, distribution: str, entry_name: str, module: str, source: str, version: str = "0.0.1", requires: tuple[str, ...] = ()
) -> Path:
    """Write ``module.py`` and a dist-info registering it under the ``autovi`` entry-point group
    (``requires``: its Requires-Dist lines, e.g. ``autovi-core>=1.0,<2``)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    requirements = "".join(f"Requires-Dist: {line}\n" for line in requires)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n{requirements}")
    (info / "entry_points.txt").write_text(f"[autovi]\n{entry_name} = {module}\n")
    return site


FAULTY_DETECTORS = """
import os
import numpy as np
from autovi_core import Capabilities, Detector, Prediction, hookimpl


class _Base(Detector):
    profiles = {"paper": {}, "fast": {}}

    def learn(self, images, labelled=None):
        pass

    def infer(self, images, output_size):
        return Prediction(np.zeros(len(images)), np.zeros((len(images), *output_size), np.float32))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class Raises(_Base):
    name = "raises"

    def learn(self, images, labelled=None):
        raise RuntimeError("boom in fit")


class Crashes(_Base):
    name = "crashes"

    def learn(self, images, labelled=None):
        os._exit(3)


class Hangs(_Base):
    name = "hangs"

    def learn(self, images, labelled=None):
        import time
        time.sleep(600)


class Hogs(_Base):
    name = "hogs"

    def learn(self, images, labelled=None):
        # 16 GiB reserved, not touched: the address-space limit refuses it at once, without seconds of page faults
        self.hoard = [np.empty(256 * 1024 * 1024 // 8) for _ in range(64)]


class Segfaults(_Base):
    name = "segfaults"

    def learn(self, images, labelled=None):
        import ctypes
        ctypes.string_at(0)


@hookimpl
def autovi_register_detectors():
    return [Raises, Crashes, Hangs, Hogs, Segfaults]
"""
