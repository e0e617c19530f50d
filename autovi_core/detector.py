"""The detector interface every method plugin implements.

A detector is built from a *profile* of hyperparameters (``paper`` = the paper's values, ``fast`` =
small values for CPU smoke runs) plus explicit overrides, learns from defect-free images in
``fit`` and returns image scores and anomaly maps in ``predict``. Images are handed over in
:data:`autovi_core.dataset.IMAGE_LAYOUT` ((H, W, 3) uint8 RGB arrays).

Learned state is saved without pickle: ``state_dict`` returns named numpy arrays (written as
``.npz`` with ``allow_pickle=False``), hyperparameters go to JSON. Detectors holding torch modules
may override ``save``/``load`` to write safetensors or ``torch.save`` files read back with
``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError, DataError

PROFILES = ("paper", "fast")


@dataclass(frozen=True)
class Capabilities:
    """What a detector needs to run well; shown by ``autovi list`` and checked by the runner."""

    needs_gpu: bool = False
    """Practical only on a GPU (still runs on the CPU, slowly)."""
    supervised: bool = False
    """Receives labelled defective images in ``fit`` (results are marked supervised)."""
    pretrained_assets: tuple[str, ...] = ()
    """Names of the pretrained weights it uses (e.g. ``tf_efficientnet_lite0``)."""


@dataclass
class Prediction:
    """Output of :meth:`Detector.predict` for N images."""

    scores: np.ndarray
    """(N,) float64 image anomaly scores, higher = more anomalous."""
    maps: np.ndarray
    """(N, H, W) float32 anomaly maps at the requested resolution."""

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.maps = np.asarray(self.maps, dtype=np.float32)
        if self.maps.ndim != 3 or self.maps.shape[0] != self.scores.shape[0]:
            raise ValueError(f"maps must be (N, H, W) for N={self.scores.shape[0]} scores, got {self.maps.shape}")


@dataclass
class LabelledDefects:
    """Labelled defective images given to supervised detectors in ``fit``."""

    images: list[np.ndarray] = field(default_factory=list)
    """The images; :class:`autovi_core.dataset.KeyedImages` (with their paths) when the runner gives them."""
    masks: list[np.ndarray | None] = field(default_factory=list)
    defect_dirs: list[str] = field(default_factory=list)


class Detector(ABC):
    """Base class of every anomaly detector.

    Subclasses set ``name``, ``profiles`` (a dict from profile name to its hyperparameter dict, with
    at least ``paper`` and ``fast``) and ``capabilities``, and implement ``fit``, ``predict``,
    ``state_dict`` and ``load_state_dict``. Hyperparameters are read from ``self.hparams``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        self.profile = profile
        self.seed = int(seed)
        self.device = device
        self.hparams: dict[str, Any] = self.resolve_hparams(profile, overrides)
        self.fitted = False

    # --- hyperparameters ----------------------------------------------------------------------
    @classmethod
    def resolve_hparams(cls, profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The profile's hyperparameters with ``overrides`` applied; unknown names are an error."""
        if profile not in cls.profiles:
            raise ConfigError(f"detector {cls.name!r} has no profile {profile!r}; valid: {', '.join(cls.profiles)}")
        hparams = dict(cls.profiles[profile])
        for key, value in (overrides or {}).items():
            if key not in hparams:
                raise ConfigError(
                    f"detector {cls.name!r} has no hyperparameter {key!r}; valid: {', '.join(sorted(hparams))}"
                )
            hparams[key] = value
        return hparams

    # --- learning and inference ---------------------------------------------------------------
    @abstractmethod
    def fit(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        """Learn from defect-free training images (and, if supervised, labelled defects)."""

    @abstractmethod
    def predict(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        """Score images; maps come out at ``output_size`` = (H, W)."""

    def check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"detector {self.name!r} must be fitted (or loaded) before predict")

    # --- persistence --------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """The learned state as named numpy arrays."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the learned state returned by :meth:`state_dict`."""

    def save_extra(self, directory: Path) -> None:
        """Write files beyond ``state_dict`` into the save ``directory`` (e.g. composed detectors)."""

    def load_extra(self, directory: Path) -> None:
        """Read what :meth:`save_extra` wrote; called after :meth:`load_state_dict`."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json``, ``state.npz`` and :meth:`save_extra` files into directory ``path``.

        The directory is written under a temporary name and renamed into place, so a crash never
        leaves a half-written model behind.
        """
        self.check_fitted()
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        config = {"detector": self.name, "profile": self.profile, "seed": self.seed, "hparams": self.hparams}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=json_default))
        np.savez(tmp / "state.npz", **self.state_dict())
        self.save_extra(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> "Detector":
        """Rebuild a detector saved with :meth:`save`."""
        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise DataError(f"{path / 'config.json'}: not a saved {cls.name} detector ({exc})") from None
        if config.get("detector") != cls.name:
            raise DataError(f"{path}: holds detector {config.get('detector')!r}, not {cls.name!r}")
        detector = cls(config["profile"], seed=config["seed"], device=device, **config["hparams"])
        with np.load(path / "state.npz", allow_pickle=False) as state:
            detector.load_state_dict({key: state[key] for key in state.files})
        detector.load_extra(path)
        detector.fitted = True
        return detector


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for hyperparameters: numpy scalars, tuples, sets and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"hyperparameter value {value!r} is not JSON-serialisable")
