"""The detector interface every method plugin implements.

A detector is built from a *profile* of hyperparameters (``paper`` = the paper's values, ``fast`` =
small values for CPU smoke runs) plus type-checked overrides. The core's ``fit`` calls the
plugin's ``learn`` on defect-free images and the core's ``predict`` calls its ``infer``, which
returns image scores and anomaly maps. Images are handed over in
:data:`autovi_core.dataset.IMAGE_LAYOUT` ((H, W, 3) uint8 RGB arrays).

Learned state is saved without pickle: ``state_dict`` returns named numpy arrays (written as
``.npz`` with ``allow_pickle=False``); hyperparameters, provenance and versions go to JSON.
Detectors holding other files write them in ``save_extra`` and read them in ``load_extra``.
"""

from __future__ import annotations

import copy
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .domains import Domain, DomainError, Param, domain_from_profiles, shown
from .errors import CombinationError, ConfigError, ContractError, DataError, NotFittedError
from .files import atomic_write
from .hparams import Hyperparameters

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
    uses_held_out_goods: bool = False
    """Reads :attr:`Detector.held_out_goods` in ``learn``: good images the caller kept out of the
    training images (``autovi run`` gives its calibration hold-out), e.g. to normalise scores on
    images no part of the model was fitted on."""


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
    """Base class of every anomaly detector; it owns the life cycle.

    Subclasses set ``name``, ``profiles`` (a dict from profile name to its hyperparameter dict, with
    at least ``paper`` and ``fast``) and ``capabilities``, and implement :meth:`learn`,
    :meth:`infer`, :meth:`state_dict` and :meth:`load_state_dict`. Users call :meth:`fit` and
    :meth:`predict`, which this class implements around them:

    - ``hparams`` holds what the user chose (the profile plus type-checked overrides) and is
      read-only; what a fit finds out (weights source, device, dtype, ...) goes into
      ``provenance``, which is saved with the model and written to results.jsonl;
    - ``fitted`` is set by :meth:`fit` after :meth:`learn` returns (and by :meth:`load`), never by
      the caller or the subclass;
    - :meth:`predict` before fit raises :class:`autovi_core.errors.NotFittedError`, and the
      :class:`Prediction` returned by :meth:`infer` is checked against the request.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    """Every hyperparameter, declared once (since 1.1): domain, ``paper`` and ``fast`` values, meaning
    and source (:class:`autovi_core.domains.Param`). The ``paper`` and ``fast`` profiles are made from
    it; ``--set`` parsing, validation, ``autovi describe`` and the README tables read it."""
    profiles: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Made from ``params``. Detectors written for 1.0 set it directly; their hyperparameters are
    then typed by their profile values (and ``hparam_types``), without ranges."""
    capabilities: ClassVar[Capabilities] = Capabilities()
    hparam_types: ClassVar[Mapping[str, tuple[type, ...]]] = {}
    """1.0 detectors without ``params``: hyperparameters that take more types than their profile
    values show, e.g. ``{"base_detectors": (str, list)}``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method, hook in (("fit", "learn"), ("predict", "infer")):
            if method in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__} overrides Detector.{method}; since autovi-core 1.0 a detector implements "
                    f"{hook}() and the core's {method}() calls it (see docs/plugins.md, 'Migrating from 0.x')"
                )
        if "params" in cls.__dict__ and cls.params:
            if "profiles" in cls.__dict__:
                raise TypeError(f"{cls.__qualname__} sets both params and profiles: the profiles are made from params")
            cls.profiles = {profile: {key: p.value(profile) for key, p in cls.params.items()} for profile in ("paper", "fast")}
            for key, p in cls.params.items():
                for profile in ("paper", "fast"):
                    try:
                        p.domain.check(p.value(profile))
                    except DomainError as exc:
                        raise TypeError(f"{cls.__qualname__}: the {profile} value of {key!r} is outside its own domain: {exc}") from None

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        self.profile = profile
        self.seed = int(seed)
        self.device = device
        self.hparams: Hyperparameters = Hyperparameters(self.resolve_hparams(profile, overrides))
        self.provenance: dict[str, Any] = {}
        self._fitted = False
        self._held_out: Sequence[np.ndarray] | None = None

    # --- life cycle ---------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """True after a successful :meth:`fit` or :meth:`load`; set by the core only."""
        return self._fitted

    @fitted.setter
    def fitted(self, value: bool) -> None:
        raise AttributeError("Detector.fitted is set by the core after a successful fit() or load(), never by the caller")

    # --- hyperparameters ----------------------------------------------------------------------
    @classmethod
    def domains(cls) -> dict[str, Domain]:
        """Each hyperparameter's domain: declared in ``params``, else the types of its profile values."""
        if cls.params:
            return {key: p.domain for key, p in cls.params.items()}
        keys = dict.fromkeys(key for values in cls.profiles.values() for key in values)
        return {key: domain_from_profiles([p[key] for p in cls.profiles.values() if key in p], cls.hparam_types.get(key)) for key in keys}

    @classmethod
    def resolve_hparams(cls, profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The profile's hyperparameters with ``overrides`` applied and checked.

        An unknown name, a value outside its domain, or a combination :meth:`check_hparams` refuses
        raises a one-line :class:`ConfigError` naming the detector, the key, the value and the domain.
        """
        if profile not in cls.profiles:
            raise ConfigError(f"detector {cls.name!r} has no profile {profile!r}; valid: {', '.join(cls.profiles)}")
        hparams = dict(cls.profiles[profile])
        domains = cls.domains()
        for key, value in (overrides or {}).items():
            if key not in hparams:
                raise cls._unknown_hparam(key, hparams)
            try:
                hparams[key] = domains[key].check(value)
            except DomainError as exc:
                raise ConfigError(f"detector {cls.name!r}: {key}={shown(value)} refused: {exc}") from None
        try:
            cls.check_hparams(hparams)
        except CombinationError:
            raise
        except ConfigError as exc:
            raise CombinationError(str(exc)) from None
        return hparams

    @classmethod
    def parse_overrides(cls, texts: Mapping[str, str]) -> dict[str, Any]:
        """``--set KEY=TEXT`` strings parsed to each hyperparameter's domain (``"0.1"`` -> 0.1,
        ``"a,b"`` -> ``["a", "b"]``, ``"none"`` -> None); one-line :class:`ConfigError` when one cannot be."""
        domains = cls.domains()
        values = {}
        for key, text in texts.items():
            if key not in domains:
                raise cls._unknown_hparam(key, domains)
            try:
                values[key] = domains[key].parse(text)
            except DomainError as exc:
                raise ConfigError(f"detector {cls.name!r}: --set {key}={text} refused: {exc}") from None
        return values

    @classmethod
    def _unknown_hparam(cls, key: str, known: Mapping[str, Any]) -> ConfigError:
        return ConfigError(f"detector {cls.name!r} has no hyperparameter {key!r}; valid: {', '.join(sorted(known))}")

    @classmethod
    def component_detectors(cls, hparams: Mapping[str, Any]) -> list[str]:
        """Registered detectors this one builds and fits, through the registry, on the very training
        images its own fit is given (an ensemble's members), for ``hparams``. ``autovi run`` then fits
        each once when it also evaluates them alone (:mod:`autovi_core.shared_fits`); the components
        must be fitted with :func:`autovi_core.shared_fits.fit_shared`. Default: none."""
        return []

    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse impossible combinations of otherwise valid values (layers the backbone does not
        have, a size the strides cannot divide) with a :class:`ConfigError` naming the detector, the
        keys and the values. Called for every resolved set of hyperparameters, before any work; the
        default accepts all. Keep it cheap and free of heavy imports."""
        return None

    # --- learning and inference (the core's side) -----------------------------------------------
    def fit(
        self,
        images: Sequence[np.ndarray],
        labelled: LabelledDefects | None = None,
        *,
        held_out: Sequence[np.ndarray] | None = None,
    ) -> Detector:
        """Learn from defect-free ``images`` (and, for supervised detectors, ``labelled`` defects).

        ``held_out``: more good images, kept out of ``images`` by the caller; :meth:`learn` sees them
        as :attr:`held_out_goods` (only detectors with ``capabilities.uses_held_out_goods`` read them).
        Calls :meth:`learn`; on success the detector is ``fitted`` and ``provenance`` holds what the
        fit found out. Returns the detector.
        """
        if len(images) == 0:
            raise DataError(f"detector {self.name!r} needs at least one training image, got none")
        if labelled is not None and not self.capabilities.supervised:
            raise ConfigError(f"detector {self.name!r} is unsupervised: it takes no labelled defects")
        self._fitted = False
        self.provenance = {"device": str(self.device)}
        chosen = copy.deepcopy(dict(self.hparams))
        self._held_out = held_out
        try:
            self.learn(images, labelled)
        finally:
            self._held_out = None
        if dict(self.hparams) != chosen:
            raise ContractError(f"detector {self.name!r} changed its hyperparameters while fitting; record findings in provenance")
        self._fitted = True
        return self

    def predict(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        """Image scores and anomaly maps of ``images``, maps at ``output_size`` = (H, W)."""
        self.check_fitted()
        height, width = (int(v) for v in output_size)
        if height < 1 or width < 1:
            raise ConfigError(f"output_size must be positive (H, W), got {tuple(output_size)}")
        prediction = self.infer(images, (height, width))
        if not isinstance(prediction, Prediction):
            raise ContractError(f"detector {self.name!r}: infer() returned {type(prediction).__name__}, not a Prediction")
        if prediction.maps.shape != (len(images), height, width):
            raise ContractError(
                f"detector {self.name!r}: infer() returned maps of shape {prediction.maps.shape} "
                f"for {len(images)} images at {(height, width)}"
            )
        return prediction

    @property
    def held_out_goods(self) -> Sequence[np.ndarray] | None:
        """During :meth:`learn`: the good images passed to :meth:`fit` as ``held_out`` (None otherwise)."""
        return self._held_out

    def check_fitted(self, action: str = "predict") -> None:
        """Raise :class:`NotFittedError` unless the detector was fitted or loaded."""
        if not self._fitted:
            raise NotFittedError(f"detector {self.name!r} must be fitted (or loaded) before {action}")

    # --- learning and inference (the plugin's side) ---------------------------------------------
    @abstractmethod
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None) -> None:
        """The method's training on defect-free ``images`` (``labelled`` only for supervised ones).

        Read ``self.hparams``, never write it; put what the fit found out into ``self.provenance``.
        """

    @abstractmethod
    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        """Score ``images`` (called only once fitted); maps come out at ``output_size`` = (H, W)."""

    # --- persistence --------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """The learned state as named numpy arrays."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the learned state returned by :meth:`state_dict`."""

    def save_extra(self, directory: Path) -> None:  # noqa: B027 - an optional hook, empty by default
        """Write files beyond ``state_dict`` into the save ``directory`` (e.g. composed detectors)."""

    def load_extra(self, directory: Path) -> None:  # noqa: B027 - an optional hook, empty by default
        """Read what :meth:`save_extra` wrote; called after :meth:`load_state_dict`."""

    def export_module(self) -> Any:
        """The inference path as a torch module, for ``autovi export`` (docs/deploy.md, 'Exporting to ONNX').

        A detector that can be exported returns an :class:`autovi_core.export.ExportPlan`: a module
        taking ``(N, H, W, 3)`` uint8 RGB images of one size and returning ``(scores (N,), maps (N, H, W))``
        exactly as :meth:`predict` does at ``output_size=(H, W)``, with its learned state as constants,
        and the steps it computes otherwise than :meth:`infer` (``substitutions``). The default refuses;
        a detector that cannot be exported says why in its own override."""
        raise ConfigError(f"detector {self.name!r} has no export path (it does not implement Detector.export_module)")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` (hyperparameters, provenance, versions), ``state.npz`` and
        :meth:`save_extra` files into directory ``path``.

        The directory is written under a temporary name and renamed into place, so a crash never
        leaves a half-written model behind.
        """
        from . import API_VERSION
        from .plugins import core_version

        self.check_fitted("save")
        target = Path(path)
        config = {
            "detector": self.name,
            "profile": self.profile,
            "seed": self.seed,
            "hparams": self.hparams,
            "provenance": self.provenance,
            "api_version": API_VERSION,
            "autovi_core": core_version(),
        }
        with atomic_write(target) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=json_default))
            np.savez(tmp / "state.npz", **self.state_dict())
            self.save_extra(tmp)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> Detector:
        """Rebuild a detector saved with :meth:`save`. A missing or damaged folder, a model of another
        detector or of another contract major version, and saved hyperparameters this version refuses
        are one-line :class:`DataError` s naming the folder."""
        from . import API_VERSION

        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path / 'config.json'}: not a saved {cls.name} detector ({exc})") from None
        missing = [key for key in ("detector", "profile", "seed", "hparams") if not isinstance(config, dict) or key not in config]
        if missing:
            raise DataError(f"{path / 'config.json'}: not a saved detector (no {', '.join(missing)})")
        if config["detector"] != cls.name:
            raise DataError(f"{path}: holds detector {config['detector']!r}, not {cls.name!r}")
        saved_api = str(config.get("api_version", API_VERSION))
        if saved_api.split(".")[0] != API_VERSION.split(".")[0]:
            raise DataError(f"{path}: saved with plugin contract API {saved_api}; this autovi-core speaks API {API_VERSION}")
        try:
            detector = cls(config["profile"], seed=config["seed"], device=device, **config["hparams"])
        except ConfigError as exc:
            raise DataError(f"{path}: its saved hyperparameters are refused by this version: {exc}") from None
        detector.provenance = dict(config.get("provenance") or {})
        try:
            with np.load(path / "state.npz", allow_pickle=False) as state:
                arrays = {key: state[key] for key in state.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"{path / 'state.npz'}: missing or not a saved state ({str(exc).splitlines()[0]})") from None
        try:
            detector.load_state_dict(arrays)
        except KeyError as exc:
            raise DataError(f"{path / 'state.npz'}: lacks the array {exc} that {cls.name} saves") from None
        detector.load_extra(path)
        detector._fitted = True
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
