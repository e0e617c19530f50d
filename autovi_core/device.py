"""Device resolution: the one place that turns a user's device string into the device to compute on.

Torch-free at import: torch is imported only when an NVIDIA driver is present, so resolving ``auto``
on a machine without a GPU stays cheap. Plugins that need a ``torch.device`` wrap the result:
``torch.device(resolve_device(self.device))``.
"""

from __future__ import annotations

import glob
import os
from importlib import metadata

from .errors import ConfigError


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda:0`` when torch sees a GPU, else ``cpu``; ``cuda`` becomes ``cuda:0``;
    ``cpu`` and ``cuda:N`` stay. Anything else, or a CUDA device without a visible GPU, is a
    :class:`~autovi_core.errors.ConfigError`."""
    device = str(device)
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    if device == "cpu":
        return "cpu"
    has_cuda = False
    # Only import torch (about 1 s and hundreds of MB) when an NVIDIA driver is present at all.
    if torch_installed() and nvidia_driver_present():
        import torch

        has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda:0" if has_cuda else "cpu"
    if not has_cuda:
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is visible to torch")
    return "cuda:0" if device == "cuda" else device


def torch_installed() -> bool:
    try:
        metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False
    return True


def nvidia_driver_present() -> bool:
    """Whether this machine has an NVIDIA driver loaded (without importing torch)."""
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


__all__ = ["nvidia_driver_present", "resolve_device", "torch_installed"]
