"""Late fusion of unsupervised detectors (the idea of Preprints 202604.1743, an AutoVI study in
which late fusion of unsupervised detectors improved localisation).

The ensemble looks at no pixel itself: its *members* are other installed detectors, built through
the registry by name (never imported), with the ensemble's profile, seed and device.

Fit (``images`` = the good training images, and ``held_out`` goods the caller kept out of them;
nothing else):

1. With ``calibration_goods="given"`` and at least 2 held-out goods given (``autovi run`` gives its
   calibration hold-out), every member is fitted on all of ``images``, exactly as it is fitted alone,
   and the given goods are the held-out ones. Otherwise (``"split"``, or fewer given) a seeded
   ``held_out_fraction`` of ``images`` (at least 2) is held out and the members are fitted on the
   rest (at least 2). Members are fitted through :func:`autovi_core.shared_fits.fit_shared`, so a
   run that also evaluates a member alone on the same images fits it once.
2. Each member maps the held-out goods at their own size. Per member, one normalisation is fitted
   on all their map pixels and one on their image scores (:mod:`.normalise`: robust z-score with
   MAD or IQR, or quantile mapping).
3. With ``fusion="weighted"``, member j gets a weight proportional to 1 / s_j, s_j the spread of
   its leave-one-out normalised held-out scores; the weights sum to 1.
4. With ``refit_members`` and a split, the members are fitted again on all of ``images`` (the
   statistics stay).

Predict: every member's maps (at the requested size) and scores, normalised by its statistics and
fused (mean, max or weighted mean), member by member.

Persistence: ``state.npz`` holds every member's ``state_dict`` under ``<member>.<key>`` and the
ensemble's own arrays under ``ensemble.<member>.map``, ``ensemble.<member>.score`` and
``ensemble.weights``; members' hyperparameters and provenance are in the ensemble's provenance
(``config.json``), files a member writes in ``save_extra`` under ``members/<member>/``. Loading
rebuilds each member through the registry. No pickle anywhere.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, LabelledDefects, Prediction
from autovi_core.dataset import select_images
from autovi_core.detector import json_default
from autovi_core.domains import AnyJSON, Bool, Choice, Domain, DomainError, Float, Int, ListOf, OneOf, Param, Text, shown
from autovi_core.errors import CombinationError, ConfigError, DataError, PluginError

from .normalise import FUSIONS, NORMALISATIONS, Fusion, Normaliser, inverse_spread_weights, leave_one_out_spread

AUTO_MEMBERS: tuple[str, ...] = ("patchcore", "padim")
"""What ``members="auto"`` takes, those of them installed: a memory bank and per-position Gaussians.
Measured on the synthetic data (plugin README, 3 seeds, ``fast``): fused, they beat both members
(mean AUsPRO@0.05 83.8 with ``calibration_goods="given"``, 84.3 with a split, vs 83.5 and 73.0),
where adding EfficientAD's ``fast`` maps pulled the fusion down to 58.7. Fixed rather than "every
installed detector", so a result names the same ensemble on every machine where both are installed."""

MIN_HELD_OUT = 2
"""Held-out goods at least: a spread and a leave-one-out normalisation need two."""
MIN_MEMBER_GOODS = 2
"""Goods the members are fitted on at least (PaDiM's covariances need two)."""


def install_hint(name: str) -> str:
    """The command that installs detector ``name``'s plugin, by the ``autovi-plugin-<name>`` convention."""
    return f"pip install autovi-plugin-{name.replace('_', '-')}"


class MemberNames(OneOf):
    """``"auto"`` or a list of detector names. ``--set`` takes ``auto``, ``padim``, ``padim,patchcore``
    or ``["padim", "patchcore"]``. Whether the names are installed unsupervised detectors is checked
    by :meth:`Ensemble.check_hparams`."""

    def __init__(self) -> None:
        super().__init__(Choice("auto"), ListOf(Text("an installed unsupervised detector's name"), min_len=1))

    def describe(self) -> str:
        return "'auto', or a list of 1 or more installed unsupervised detectors' names"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": "oneof"}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        """``"auto"`` or lists of distinct installed unsupervised detectors (other names are refused by
        :meth:`Ensemble.check_hparams`, not by the domain, so they are not valid values to draw)."""
        from hypothesis import strategies as st

        registry = _registry()
        names = sorted(
            name for name in registry.detectors if name != Ensemble.name and not registry.detector_class(name).capabilities.supervised
        )
        lists = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True) if names else st.nothing()
        return st.one_of(st.just("auto"), lists)


class MemberOverrides(Domain):
    """``{member name: {hyperparameter: value}}`` (JSON values); each member's own domains check the
    inner values in :meth:`Ensemble.resolve_hparams`."""

    def check(self, value: Any) -> dict[str, dict[str, Any]]:
        shaped = isinstance(value, Mapping) and all(
            isinstance(name, str) and name.strip() and isinstance(inner, Mapping) and all(isinstance(k, str) and k.strip() for k in inner)
            for name, inner in value.items()
        )
        if not shaped:
            raise DomainError(f"expects {self.describe()}, got {shown(value)}")
        try:
            AnyJSON().check(value)
        except DomainError:
            raise DomainError(f"expects {self.describe()} with JSON values, got {shown(value)}") from None
        return {name: dict(inner) for name, inner in value.items()}

    def describe(self) -> str:
        return "a mapping {member name: {hyperparameter: value}}"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": "mapping"}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        key = st.text(min_size=1, max_size=8).filter(str.strip)
        scalar = st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.text(max_size=5))
        typical = [dict(v) for v in hint if isinstance(v, Mapping)] or [{}]
        return st.one_of(st.sampled_from(typical), st.dictionaries(key, st.dictionaries(key, scalar, max_size=2), max_size=2))

    def invalid(self) -> Any:
        from hypothesis import strategies as st

        return st.one_of(
            st.integers(),
            st.text(max_size=5),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=3)), min_size=1, max_size=2),
            st.just({"": {}}),
            st.just({"padim": {"": 1}}),
            st.just({"padim": {"eps": math.nan}}),
        )


def _registry() -> Any:
    from autovi_core.registry import get_registry

    return get_registry()


def resolve_members(value: str | Sequence[str]) -> list[str]:
    """The member names ``members`` stands for: ``"auto"`` -> the installed ones of
    :data:`AUTO_MEMBERS`; a list must name installed unsupervised detectors, once each, never the
    ensemble. One-line :class:`ConfigError` otherwise, with the ``pip install`` of a missing plugin."""
    registry = _registry()
    refused = f"detector {Ensemble.name!r}: members={shown(value)} refused"
    if value == "auto":
        names = [name for name in AUTO_MEMBERS if name in registry.detectors]
        if not names:
            hints = "; ".join(install_hint(name) for name in AUTO_MEMBERS)
            raise ConfigError(f"{refused}: none of {', '.join(AUTO_MEMBERS)} is installed ({hints})")
        return names
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ConfigError(f"{refused}: it is empty")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{refused}: it lists {twice} more than once")
    for name in names:
        if name == Ensemble.name:
            raise ConfigError(f"{refused}: an ensemble cannot be its own member")
        try:
            cls = registry.detector_class(name)
        except PluginError as exc:
            hint = f" ({install_hint(name)})" if re.fullmatch(r"[a-z][a-z0-9_]*", name) else ""
            raise ConfigError(f"{refused}: {exc}{hint}") from None
        if cls.capabilities.supervised:
            raise ConfigError(f"{refused}: {name!r} is supervised, and a member must be unsupervised")
    return names


def _as_json(value: Any) -> Any:
    """``value`` as plain JSON types (lists for tuples, Python numbers for numpy ones)."""
    return json.loads(json.dumps(value, default=json_default))


class Ensemble(Detector):
    name = "ensemble"
    description = "Late fusion: installed unsupervised detectors' maps and scores normalised on held-out goods, then fused."
    params: ClassVar[dict[str, Param]] = {
        "members": Param(
            MemberNames(),
            paper="auto",
            fast="auto",
            meaning="detectors fused, built through the registry with the ensemble's profile, seed and device; "
            "'auto': those installed of " + ", ".join(AUTO_MEMBERS),
            source="autovi (the preprint's late fusion of unsupervised detectors)",
        ),
        "member_overrides": Param(
            MemberOverrides(),
            paper={},
            fast={},
            meaning='hyperparameters of members, e.g. {"patchcore": {"resize": 64}}, checked by each member\'s domains '
            "under the ensemble's profile",
            source="autovi",
        ),
        "calibration_goods": Param(
            Choice("given", "split"),
            paper="given",
            fast="given",
            meaning="goods the normalisation is fitted on: 'given', those the caller holds out of the training images "
            "(autovi run's calibration hold-out), the members then fitted on all the training images exactly as alone "
            "(so a run evaluating them alone too fits each once), falling back to a split when fewer than "
            f"{MIN_HELD_OUT} are given; 'split', a held_out_fraction of the training images",
            source="autovi",
        ),
        "held_out_fraction": Param(
            Float(0.0, 1.0, low_open=True, high_open=True),
            paper=0.2,
            fast=0.2,
            meaning="with a split (calibration_goods='split', or too few given): share of the training goods held out "
            "from the members to fit the normalisation and weights "
            f"(at least {MIN_HELD_OUT} images; the members get the rest, at least {MIN_MEMBER_GOODS})",
            source="autovi",
        ),
        "normalisation": Param(
            Choice(*NORMALISATIONS),
            paper="mad",
            fast="mad",
            meaning="per member, fitted on the held-out goods' map pixels and, apart, their image scores: 'mad' "
            "(x - median) / (1.4826 MAD), 'iqr' (x - median) / (IQR / 1.349), 'quantile' their distribution function "
            "(the goods' quantiles to uniform [0, 1], linear beyond)",
            source="autovi",
        ),
        "quantile_knots": Param(
            Int(2),
            paper=1001,
            fast=1001,
            meaning="quantiles of the held-out goods kept by normalisation='quantile', at levels 0, 1/(K-1), ..., 1",
            source="autovi",
        ),
        "fusion": Param(
            Choice(*FUSIONS),
            paper="mean",
            fast="mean",
            meaning="'mean', 'max', or 'weighted': weights proportional to 1 / the spread of each member's leave-one-out "
            "normalised held-out good scores, summing to 1, for maps and scores alike",
            source="autovi",
        ),
        "refit_members": Param(
            Bool(),
            paper=False,
            fast=False,
            meaning="with a split: after the normalisation is fitted, fit the members again on all the training goods "
            "(the statistics stay; one more fit per member)",
            source="autovi",
        ),
    }
    capabilities = Capabilities(needs_gpu=False, supervised=False, pretrained_assets=(), uses_held_out_goods=True)

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self.member_names: list[str] = resolve_members(self.hparams["members"])
        """The members ``members`` resolves to now (a loaded ensemble takes its saved ones)."""
        self.members: list[Detector] = []
        self.map_normalisers: list[Normaliser] = []
        self.score_normalisers: list[Normaliser] = []
        self.weights = np.zeros(0)

    # --- hyperparameters ---------------------------------------------------------------------------
    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse members that are not installed unsupervised detectors (with the ``pip install`` of a
        missing one), the ensemble itself, a member listed twice, and ``member_overrides`` for
        detectors that are not members. Torch-free: members are looked up in the registry."""
        names = resolve_members(hparams["members"])
        strangers = sorted(set(hparams["member_overrides"]) - set(names))
        if strangers:
            raise ConfigError(
                f"detector {cls.name!r}: member_overrides={shown(hparams['member_overrides'])} refused: names {strangers}, "
                f"which are not among the members {names} (members={shown(hparams['members'])})"
            )

    @classmethod
    def component_detectors(cls, hparams: Mapping[str, Any]) -> list[str]:
        """The members: fitted on the very training images the ensemble gets with ``calibration_goods="given"``
        (or with ``refit_members``), so ``autovi run`` shares their fits with its own rows of them."""
        return resolve_members(hparams["members"])

    @classmethod
    def resolve_hparams(cls, profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The core's resolution, then each member's overrides resolved by that member under the
        ensemble's profile, so that a bad nested value stops the command before any work, naming both."""
        hparams = super().resolve_hparams(profile, overrides)
        registry = _registry()
        for name, own in hparams["member_overrides"].items():
            try:
                registry.detector_class(name).resolve_hparams(profile, own)
            except ConfigError as exc:
                shown_overrides = shown(hparams["member_overrides"])
                raise CombinationError(f"detector {cls.name!r}: member_overrides={shown_overrides} refused: {exc}") from None
        return hparams

    # --- building blocks ---------------------------------------------------------------------------
    def build_member(self, name: str, hparams: Mapping[str, Any] | None = None) -> Detector:
        """Member ``name`` from the registry with the ensemble's profile, seed and device, and its
        ``member_overrides`` (or, when loading, the full ``hparams`` it was saved with)."""
        own = dict(self.hparams["member_overrides"].get(name, {})) if hparams is None else dict(hparams)
        return _registry().create_detector(name, self.profile, seed=self.seed, device=self.device, **own)

    def split_goods(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted indices of the members' goods and of the held-out goods, drawn with the seed."""
        fraction = float(self.hparams["held_out_fraction"])
        n_held = max(MIN_HELD_OUT, math.ceil(n * fraction))
        if n - n_held < MIN_MEMBER_GOODS:
            raise DataError(
                f"detector {self.name!r} needs at least {MIN_HELD_OUT + MIN_MEMBER_GOODS} good training images and, with "
                f"held_out_fraction={fraction:g}, {n_held + MIN_MEMBER_GOODS} for {n_held} held out; got {n}"
            )
        order = np.random.default_rng(self.seed).permutation(n)
        return np.sort(order[n_held:]), np.sort(order[:n_held])

    @staticmethod
    def held_out_values(member: Detector, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``member``'s image scores of ``images`` (in order) and every pixel of their maps, each map
        at its image's own size (images of one size predicted together)."""
        scores = np.zeros(len(images))
        pixels: list[np.ndarray] = []
        shapes = [tuple(image.shape[:2]) for image in images]
        for shape in dict.fromkeys(shapes):
            index = [i for i, s in enumerate(shapes) if s == shape]
            prediction = member.predict(select_images(images, index), output_size=shape)
            scores[index] = prediction.scores
            pixels.append(prediction.maps.ravel())
        return scores, np.concatenate(pixels)

    # --- the method ---------------------------------------------------------------------------------
    def calibration_split(self, images: Sequence[np.ndarray]) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray], str]:
        """(the members' goods, the held-out goods, which rule chose them): the given held-out goods with
        all of ``images``, or a seeded split of ``images`` (:meth:`split_goods`)."""
        given = self.held_out_goods
        if self.hparams["calibration_goods"] == "given" and given is not None and len(given) >= MIN_HELD_OUT:
            return images, given, "given"
        member_index, held_index = self.split_goods(len(images))
        return select_images(images, member_index), select_images(images, held_index), "split"

    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        from autovi_core.shared_fits import fit_shared

        hp = self.hparams
        kind, knots = hp["normalisation"], int(hp["quantile_knots"])
        member_goods, held_out, rule = self.calibration_split(images)
        refit = bool(hp["refit_members"]) and rule == "split"
        self.members, reused = [], []
        self.map_normalisers, self.score_normalisers = [], []
        spreads = []
        for name in self.member_names:
            member, loaded = fit_shared(self.build_member(name), member_goods)
            scores, pixels = self.held_out_values(member, held_out)
            self.map_normalisers.append(Normaliser.fit(kind, pixels, knots))
            self.score_normalisers.append(Normaliser.fit(kind, scores, knots))
            spreads.append(leave_one_out_spread(scores, kind, knots))
            del pixels
            if refit:
                member, loaded = fit_shared(member, images)
            self.members.append(member)
            reused += [name] if loaded else []
        count = len(self.members)
        self.weights = inverse_spread_weights(spreads) if hp["fusion"] == "weighted" else np.full(count, 1.0 / count)
        self.provenance.update(
            member_names=list(self.member_names),
            members={
                name: {"hparams": _as_json(dict(member.hparams)), "provenance": _as_json(member.provenance)}
                for name, member in zip(self.member_names, self.members)
            },
            goods={
                "calibration": rule,
                "members": len(member_goods),
                "held_out": len(held_out),
                "members_refitted_on": len(images) if refit else None,
            },
            members_reused=reused,
            score_spread={name: float(s) for name, s in zip(self.member_names, spreads)},
            weights={name: float(w) for name, w in zip(self.member_names, self.weights)},
        )
        if hp["members"] == "auto" and len(self.member_names) < len(AUTO_MEMBERS):
            self.provenance["auto_members_not_installed"] = [n for n in AUTO_MEMBERS if n not in self.member_names]

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        rule = self.hparams["fusion"]
        maps, scores = Fusion(rule, self.weights), Fusion(rule, self.weights)
        for j, member in enumerate(self.members):
            prediction = member.predict(images, output_size=output_size)
            maps.add(np.stack([self.map_normalisers[j](m).astype(np.float32) for m in prediction.maps]), j)
            scores.add(self.score_normalisers[j](prediction.scores), j)
        return Prediction(scores=scores.result(), maps=maps.result())

    def export_module(self) -> Any:
        """Not exportable as one graph: refuse and say what to do instead."""
        raise ConfigError(
            f"detector {self.name!r} is not exportable: it fuses its members' outputs after each member's own inference; "
            "export the members and fuse their outputs with the saved statistics"
        )

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        state: dict[str, np.ndarray] = {}
        for name, member in zip(self.member_names, self.members):
            for key, value in member.state_dict().items():
                state[f"{name}.{key}"] = np.asarray(value)
        for name, maps, scores in zip(self.member_names, self.map_normalisers, self.score_normalisers):
            state[f"{self.name}.{name}.map"] = np.asarray(maps.params, np.float64)
            state[f"{self.name}.{name}.score"] = np.asarray(scores.params, np.float64)
        state[f"{self.name}.weights"] = np.asarray(self.weights, np.float64)
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Rebuild the saved members through the registry (with the hyperparameters and provenance
        they were saved with) and give each its ``<member>.`` arrays; then the statistics."""
        names = list(self.provenance.get("member_names") or self.member_names)
        saved = self.provenance.get("members") or {}
        kind = self.hparams["normalisation"]
        registry = _registry()
        members = []
        for name in names:
            try:
                registry.detector_class(name)
            except PluginError as exc:
                raise DataError(f"detector {self.name!r}: its member {name!r} cannot be rebuilt: {exc} ({install_hint(name)})") from None
            try:
                member = self.build_member(name, (saved.get(name) or {}).get("hparams"))
            except ConfigError as exc:
                raise DataError(f"detector {self.name!r}: its member {name!r}'s saved hyperparameters are refused: {exc}") from None
            member.provenance = dict((saved.get(name) or {}).get("provenance") or {})
            prefix = f"{name}."
            member.load_state_dict({key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)})
            members.append(member)
        self.member_names, self.members = names, members
        self.map_normalisers = [Normaliser(kind, np.asarray(state[f"{self.name}.{name}.map"], np.float64)) for name in names]
        self.score_normalisers = [Normaliser(kind, np.asarray(state[f"{self.name}.{name}.score"], np.float64)) for name in names]
        self.weights = np.asarray(state[f"{self.name}.weights"], np.float64)

    def save_extra(self, directory: Path) -> None:
        """Files members write beyond their state (none of the auto members does) under ``members/<member>/``."""
        root = directory / "members"
        for name, member in zip(self.member_names, self.members):
            folder = root / name
            folder.mkdir(parents=True)
            member.save_extra(folder)
            if not any(folder.iterdir()):
                folder.rmdir()
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()

    def load_extra(self, directory: Path) -> None:
        """The members' own files, then the members are marked fitted: restored from their saved
        state exactly as :meth:`Detector.load` restores a detector (the core has no public call for
        a detector restored from arrays another detector saved)."""
        for name, member in zip(self.member_names, self.members):
            member.load_extra(directory / "members" / name)
            member._fitted = True
