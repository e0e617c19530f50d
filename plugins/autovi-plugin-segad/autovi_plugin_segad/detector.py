"""SegAD (Baitieva et al., "Supervised Anomaly Detection for Complex Industrial Images", CVPR 2024).

SegAD does not look at pixels itself: it re-scores the anomaly maps of one or more unsupervised
*base detectors* (other plugins, created through the registry by name, never imported) with a
classifier trained on a few labelled defective images.

Fit (``images`` = good training images, ``labelled`` = N labelled defective images):

1. The goods are split, with the seed, into base-training goods and ``held_out_fraction`` held-out
   goods (at least one; 10 % as in the paper). Each base detector is fitted on the base-training
   goods only, so the held-out goods are unseen by it, like test images.
   (``negatives="cross_fit"``, not in the paper, for small categories: every good is mapped by
   base detectors fitted on the other folds, and the final ones are fitted on all goods.)
2. A part segmentation with labels stable across images is set up (:mod:`.segmentation`): the
   user's part maps, or k-means over Lite0 features (colour + position without weights) fitted
   on all the good training images.
3. Base maps of the held-out goods (negatives) and labelled defects (positives) are computed at the
   images' own size, normalised per base detector with the held-out goods' 0.9 and 0.995 quantiles
   (``(m - q0.9) / (q0.995 - q0.9)``) and resampled to a ``map_size`` square grid, where the part
   statistics of :mod:`.features` are taken.
4. A boosted random forest (:mod:`.classifier`, the paper's xgboost settings, classes balanced)
   learns defective vs good from these features.

Predict: base maps -> features -> forest margin = image score. SegAD only re-scores images: the
returned anomaly map is the base maps' normalised average at the requested size, so the pixel
metrics (sPRO, pixel AUROC) of a SegAD row are those of its base detectors' maps.

Persistence: ``config.json`` + ``state.npz`` (normalisation, part centroids) as for every detector,
``forest.json`` in xgboost's JSON format and each base detector saved with its own ``save`` under
``bases/<i>-<name>/``; no pickle anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from autovi_core import Capabilities, Detector, KeyedImages, LabelledDefects, Prediction, image_paths
from autovi_core.dataset import select_images
from autovi_core.detector import PROFILES
from autovi_core.domains import AnyJSON, Choice, Domain, DomainError, Float, Int, ListOf, OneOf, Optional, Param, Text, shown
from autovi_core.errors import CombinationError, ConfigError, PluginError

from .classifier import PAPER_SETTINGS, BoostedForest
from .segmentation import KMeansParts, UserPartMaps

BASE_PREFERENCE: tuple[str, ...] = ("patchcore", "efficientad", "padim", "cflow", "draem", "dsr")
"""Order in which ``base_detectors="auto"`` picks the installed unsupervised detector (best first:
PatchCore and EfficientAD lead the AutoVI/MVTec tables); any other unsupervised one comes after."""

SEGMENTATIONS = ("auto", "backbone", "colour", "user")
NEGATIVES = ("split", "cross_fit")
NORMALISATION_QUANTILES = (0.9, 0.995)
BACKBONE_STRIDE = 16
"""Stride of the deepest Lite0 block the part k-means reads (blocks.4)."""


class BaseNames(OneOf):
    """``"auto"``, one detector name, or a list of names. ``--set`` takes ``patchcore``,
    ``patchcore,padim`` or ``["patchcore", "padim"]`` (:class:`OneOf` would read the last two as one
    name). Whether the names are installed, unsupervised detectors is checked by ``check_hparams``."""

    def __init__(self) -> None:
        name = Text("an installed unsupervised detector's name")
        super().__init__(Text("'auto' or an installed unsupervised detector's name"), ListOf(name, min_len=1))

    def describe(self) -> str:
        return "'auto', an installed unsupervised detector's name, or a list of 1 or more such names"

    def parse(self, text: str) -> Any:
        stripped = text.strip()
        if stripped.startswith("[") or "," in stripped:
            return self.domains[1].parse(stripped)
        return self.domains[0].parse(stripped)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": "oneof"}


class PerDetector(Domain):
    """``{detector name: {hyperparameter: value}}`` (JSON); the inner overrides are checked against
    each base detector's own domains by :meth:`SegAD.resolve_hparams`."""

    def check(self, value: Any) -> dict[str, dict[str, Any]]:
        good = isinstance(value, Mapping) and all(
            isinstance(name, str) and name.strip() and isinstance(inner, Mapping) and all(isinstance(k, str) and k for k in inner)
            for name, inner in value.items()
        )
        if not good:
            raise DomainError(f"expects {self.describe()}, got {shown(value)}")
        try:
            AnyJSON().check(value)
        except DomainError:
            raise DomainError(f"expects {self.describe()} (JSON values), got {shown(value)}") from None
        return {name: dict(inner) for name, inner in value.items()}

    def describe(self) -> str:
        return "a mapping {base detector name: {hyperparameter: value}}"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kind": "mapping"}

    def valid(self, hint: Sequence[Any] = ()) -> Any:
        from hypothesis import strategies as st

        scalars = st.one_of(st.none(), st.booleans(), st.integers(-100, 100), st.text(max_size=5))
        inner = st.dictionaries(st.text(min_size=1, max_size=8), scalars, max_size=2)
        typical = [dict(v) for v in hint if isinstance(v, Mapping)] or [{}]
        return st.one_of(st.sampled_from(typical), st.dictionaries(st.text(min_size=1, max_size=8).filter(str.strip), inner, max_size=2))

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
            st.just({"patchcore": {"resize": math.nan}}),
        )


def _forest(domain: Domain, key: str, meaning: str) -> Param:
    """An XGBClassifier setting: the paper's code's value in both profiles."""
    return Param(domain, paper=PAPER_SETTINGS[key], fast=PAPER_SETTINGS[key], meaning=meaning, source="official code")


_FRACTION = Float(0.0, 1.0, low_open=True)
"""A share in (0, 1]."""


class SegAD(Detector):
    name = "segad"
    description = "SegAD: per-part statistics of base detectors' anomaly maps re-scored by a boosted random forest (supervised)."
    params: ClassVar[dict[str, Param]] = {
        "base_detectors": Param(
            BaseNames(),
            paper="auto",
            fast="auto",
            meaning="detector(s) whose anomaly maps SegAD re-scores; 'auto': the first installed of "
            + ", ".join(BASE_PREFERENCE)
            + ", then any other unsupervised one",
            source="autovi (paper: EfficientAD and/or RD4AD)",
        ),
        "base_profile": Param(
            Optional(Choice(*PROFILES), none_means="SegAD's own profile"),
            paper=None,
            fast=None,
            meaning="profile the base detectors are built with",
            source="autovi",
        ),
        "base_overrides": Param(
            PerDetector(),
            paper={},
            fast={},
            meaning='hyperparameters of the base detectors, e.g. {"patchcore": {"resize": 64}}, checked by each one\'s domains',
            source="autovi",
        ),
        "held_out_fraction": Param(
            Float(0.0, 1.0, low_open=True, high_open=True),
            paper=0.1,
            fast=0.1,
            meaning="share of the good training images kept from the base detectors as SegAD's negatives "
            "(at least one image; negatives='split')",
            source="official code (10 % validation split)",
        ),
        "negatives": Param(
            Choice(*NEGATIVES),
            paper="split",
            fast="split",
            meaning="SegAD's good examples: 'split' the held-out goods, 'cross_fit' out-of-fold maps of every good",
            source="official code (split); cross_fit: autovi",
        ),
        "folds": Param(
            Int(low=2),
            paper=5,
            fast=5,
            meaning="folds of negatives='cross_fit' (needs 2 goods per fold; one extra base fit per fold)",
            source="autovi",
        ),
        "n_parts": Param(
            Int(low=1),
            paper=4,
            fast=4,
            meaning="number of object parts K; 4 statistics per part and base detector",
            source="autovi (official VisA part maps: K = 2 to 8)",
        ),
        "segmentation": Param(
            Choice(*SEGMENTATIONS),
            paper="auto",
            fast="auto",
            meaning="part source: 'user' (part_maps), 'backbone' (k-means on Lite0 blocks 2 and 4), 'colour' "
            "(k-means on RGB and position), 'auto' (user if part_maps is set, else backbone, else colour)",
            source="autovi (official part maps are precomputed, without code)",
        ),
        "segmentation_input": Param(
            Int(low=BACKBONE_STRIDE, multiple_of=BACKBONE_STRIDE),
            paper=128,
            fast=128,
            meaning="side (px) of the Lite0 input of the backbone k-means features",
            source="autovi",
        ),
        "position_weight": Param(
            Float(low=0.0),
            paper=0.5,
            fast=0.5,
            meaning="weight of the (row, col) position in [0, 1] next to RGB in [0, 1] in colour k-means (0: colour only)",
            source="autovi",
        ),
        "part_maps": Param(
            Optional(Text("a folder of part maps"), none_means="k-means parts"),
            paper=None,
            fast=None,
            meaning="user part maps: <part_maps>/[<split>/]<defect_dir>/<stem>.(npy|png) or <stem>.(npy|png), labels 0..n_parts-1",
            source="autovi",
        ),
        "part_maps_images": Param(
            Optional(Text("a category folder"), none_means="images carry their paths, as from autovi run"),
            paper=None,
            fast=None,
            meaning="category folder of the images, to match plain image lists (Python API) to part maps by pixel content",
            source="autovi",
        ),
        "map_size": Param(
            Int(low=1),
            paper=256,
            fast=64,
            meaning="side (cells) of the square grid the maps are resampled to for the part statistics",
            source="official code (256 x 256 maps); fast: autovi",
        ),
        "n_jobs": Param(Int(low=1), paper=1, fast=1, meaning="xgboost threads (one is fastest on ~100 rows)", source="autovi"),
        "n_estimators": _forest(Int(low=1), "n_estimators", "boosting rounds"),
        "num_parallel_tree": _forest(Int(low=1), "num_parallel_tree", "trees of the random forest grown at each round"),
        "max_depth": _forest(Int(low=0), "max_depth", "maximum depth of a tree (0: no limit)"),
        "learning_rate": _forest(_FRACTION, "learning_rate", "shrinkage of each round's forest (xgboost eta)"),
        "objective": _forest(
            Choice("binary:logitraw", "binary:logistic"),
            "objective",
            "the score is predict_proba[:, 1]: the raw margin (logitraw) or its sigmoid (logistic)",
        ),
        "subsample": _forest(_FRACTION, "subsample", "share of the training rows each tree samples"),
        "colsample_bytree": _forest(_FRACTION, "colsample_bytree", "share of the features each tree samples"),
        "colsample_bynode": _forest(_FRACTION, "colsample_bynode", "share of the tree's features each split samples"),
        "reg_alpha": _forest(Float(low=0.0), "reg_alpha", "L1 regularisation of the leaf weights"),
    }
    capabilities = Capabilities(needs_gpu=False, supervised=True, pretrained_assets=("tf_efficientnet_lite0",))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self.base_names = resolve_base_detectors(self.hparams["base_detectors"])
        """The base detectors ``base_detectors`` resolves to (``auto``: the best installed one)."""
        self.bases: list[Detector] = []
        self.segmenter: KMeansParts | UserPartMaps | None = None
        self.forest: BoostedForest | None = None
        self.map_low = np.zeros(0)
        self.map_high = np.zeros(0)

    # --- hyperparameters ---------------------------------------------------------------------------
    @classmethod
    def check_hparams(cls, hparams: Mapping[str, Any]) -> None:
        """Refuse base detectors that are not installed unsupervised ones (or listed twice),
        ``base_overrides`` for detectors that are not bases, part-map settings that would be ignored
        or are missing, and more parts than the map grid has cells. Torch-free: the base detectors
        are looked up in the registry, whose plugins register without importing torch."""
        names = resolve_base_detectors(hparams["base_detectors"])
        overrides = hparams["base_overrides"]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(
                f"detector {cls.name!r}: base_overrides={shown(overrides)} refused: names {unknown}, "
                f"which are not among the base detectors {names} (base_detectors={hparams['base_detectors']!r})"
            )
        mode, part_maps = hparams["segmentation"], hparams["part_maps"]
        if mode == "user" and part_maps is None:
            raise ConfigError(f"detector {cls.name!r}: segmentation='user' refused: it needs part_maps (a folder of part maps), got none")
        if part_maps is not None and mode not in ("user", "auto"):
            raise ConfigError(
                f"detector {cls.name!r}: part_maps={part_maps!r} refused: segmentation={mode!r} does not read part maps "
                "(use 'user' or 'auto')"
            )
        if hparams["part_maps_images"] is not None and part_maps is None:
            raise ConfigError(
                f"detector {cls.name!r}: part_maps_images={hparams['part_maps_images']!r} refused: it only serves to find "
                "part maps, and part_maps is none"
            )
        n_parts, side = hparams["n_parts"], hparams["map_size"]
        if n_parts > side * side:
            raise ConfigError(
                f"detector {cls.name!r}: n_parts={n_parts} refused: more parts than the map_size={side} grid has cells ({side * side})"
            )

    @classmethod
    def resolve_hparams(cls, profile: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The core's resolution, then each base detector's ``base_overrides`` resolved by that
        detector under the profile it will be built with (``check_hparams`` does not know SegAD's
        profile), so that a bad nested value stops the command before any work, naming both."""
        hparams = super().resolve_hparams(profile, overrides)
        base_profile = hparams["base_profile"] or profile
        registry = _registry()
        for name, own in hparams["base_overrides"].items():
            try:
                registry.detector_class(name).resolve_hparams(base_profile, own)
            except ConfigError as exc:
                raise CombinationError(
                    f"detector {cls.name!r}: base_overrides={shown(hparams['base_overrides'])} refused "
                    f"(base_profile={base_profile!r}): {exc}"
                ) from None
        return hparams

    # --- building blocks --------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return (int(self.hparams["map_size"]),) * 2

    def make_bases(self) -> list[Detector]:
        """Fresh base detectors from the registry, with ``base_profile`` and ``base_overrides``
        (both checked by :meth:`resolve_hparams`)."""
        hp = self.hparams
        profile = hp["base_profile"] or self.profile
        overrides = dict(hp["base_overrides"])
        registry = _registry()
        return [
            registry.create_detector(name, profile, seed=self.seed, device=self.device, **dict(overrides.get(name, {})))
            for name in self.base_names
        ]

    def split_goods(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the base-training goods and the held-out goods (seeded, as train_test_split)."""
        n_held = math.ceil(n * float(self.hparams["held_out_fraction"]))
        if n < 2 or n_held >= n:
            raise ValueError(f"{self.name} needs at least 2 good training images, got {n}")
        order = np.random.default_rng(self.seed).permutation(n)
        return np.sort(order[n_held:]), np.sort(order[:n_held])

    def fold_goods(self, n: int) -> list[np.ndarray]:
        """``folds`` seeded, disjoint, sorted index sets covering the ``n`` goods (cross_fit)."""
        k = int(self.hparams["folds"])
        if n < 2 * k:
            raise ValueError(f"{self.name} with {k} folds needs at least {2 * k} good training images, got {n}")
        order = np.random.default_rng(self.seed).permutation(n)
        return [np.sort(fold) for fold in np.array_split(order, k)]

    def fitted_bases(self, goods: Sequence[np.ndarray]) -> list[Detector]:
        """Fresh base detectors fitted on ``goods``."""
        bases = self.make_bases()
        for base in bases:
            base.fit(goods)
        return bases

    def negative_maps(self, goods: Sequence[np.ndarray]) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """Fit ``self.bases``; return the indices of SegAD's negatives among ``goods`` and, per base
        detector, their raw maps from base detectors that never saw them.

        ``split`` (the paper): the bases are fitted on all goods but the held-out share, and the
        held-out goods are the negatives. ``cross_fit``: every good is a negative, mapped by bases
        fitted on the other folds; ``self.bases`` are then fitted on all goods, so SegAD's base is
        the same detector as the base run alone (costs ``folds`` extra base fits).
        """
        if self.hparams["negatives"] == "split":
            base_train, held_out = self.split_goods(len(goods))
            self.bases = self.fitted_bases(select_images(goods, base_train))
            return held_out, self.raw_maps_at_own_size(select_images(goods, held_out))
        folds = self.fold_goods(len(goods))
        raw: list[list[np.ndarray]] = [[] for _ in self.base_names]
        for fold in folds:
            inside = set(fold.tolist())
            self.bases = self.fitted_bases(select_images(goods, [i for i in range(len(goods)) if i not in inside]))
            for maps, fold_maps in zip(raw, self.raw_maps_at_own_size(select_images(goods, fold))):
                maps += fold_maps
        self.bases = self.fitted_bases(goods)
        return np.concatenate(folds), raw

    def make_segmenter(self, goods: Sequence[np.ndarray]) -> KMeansParts | UserPartMaps:
        """The part segmentation chosen by ``segmentation`` (records the source in the provenance)."""
        hp = self.hparams
        mode, n_parts = hp["segmentation"], int(hp["n_parts"])
        if mode == "user" or (mode == "auto" and hp["part_maps"] is not None):  # user: part_maps set (check_hparams)
            self.provenance["segmentation_source"] = "user"
            return UserPartMaps(hp["part_maps"], hp["part_maps_images"], n_parts)
        settings = {
            "input_size": hp["segmentation_input"],
            "position_weight": hp["position_weight"],
            "device": self.device,
            "seed": self.seed,
        }
        if mode in ("auto", "backbone"):
            try:
                segmenter = KMeansParts(n_parts, "backbone", **settings).fit(goods, self.grid)
                self.provenance["segmentation_source"] = "backbone"
                return segmenter
            except (ConfigError, ImportError):
                if mode == "backbone":
                    raise
        self.provenance["segmentation_source"] = "colour"
        return KMeansParts(n_parts, "colour", **settings).fit(goods, self.grid)

    def normalise(self, j: int, maps: np.ndarray) -> np.ndarray:
        """Base detector ``j``'s maps scaled by its held-out goods: ``(m - q0.9) / (q0.995 - q0.9)``."""
        low, high = self.map_low[j], self.map_high[j]
        return ((maps - low) / (high - low if high > low else 1.0)).astype(np.float32)

    def base_maps(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> list[np.ndarray]:
        """Per base detector, its normalised (N, H, W) maps of ``images`` at ``output_size``."""
        return [self.normalise(j, base.predict(images, output_size=output_size).maps) for j, base in enumerate(self.bases)]

    def raw_maps_at_own_size(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Per base detector, one raw map per image at the image's own size (images batched by size)."""
        out: list[list[np.ndarray]] = [[np.empty(0)] * len(images) for _ in self.bases]
        shapes = [tuple(image.shape[:2]) for image in images]
        for shape in dict.fromkeys(shapes):
            index = [i for i, s in enumerate(shapes) if s == shape]
            for j, base in enumerate(self.bases):
                maps = base.predict(select_images(images, index), output_size=shape).maps
                for i, amap in zip(index, maps):
                    out[j][i] = amap
        return out

    def to_grid(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        """(N, map_size, map_size) bilinear resampling of N maps, where the part statistics are taken."""
        from autovi_core.image_io import resize_map

        return np.stack([resize_map(np.asarray(m, np.float32), self.grid) for m in maps])

    def features(self, grid_maps: list[np.ndarray], images: Sequence[np.ndarray]) -> np.ndarray:
        # imported here (it imports scipy) so that registering the plugin stays light
        from .features import feature_matrix

        parts = self.segmenter.labels(images, self.grid)
        return feature_matrix(grid_maps, parts, int(self.hparams["n_parts"]))

    def make_forest(self) -> BoostedForest:
        settings = {key: self.hparams[key] for key in PAPER_SETTINGS}
        return BoostedForest(self.seed, self.hparams["n_jobs"], **settings)

    # --- the method ---------------------------------------------------------------------------------
    def learn(self, images: Sequence[np.ndarray], labelled: LabelledDefects | None = None) -> None:
        if labelled is None or not labelled.images:
            raise ConfigError(f"{self.name} is supervised: fit needs labelled defective images")
        self.segmenter = self.make_segmenter(images)
        negatives, negative_raw = self.negative_maps(images)
        positive_raw = self.raw_maps_at_own_size(labelled.images)
        held_values = [np.concatenate([m.ravel() for m in maps]) for maps in negative_raw]
        self.map_low = np.array([np.quantile(v, NORMALISATION_QUANTILES[0]) for v in held_values])
        self.map_high = np.array([np.quantile(v, NORMALISATION_QUANTILES[1]) for v in held_values])
        rows = join_images(select_images(images, negatives), labelled.images)
        raw = [neg + pos for neg, pos in zip(negative_raw, positive_raw)]
        grid = [self.to_grid([self.normalise(j, m) for m in maps]) for j, maps in enumerate(raw)]
        labels = np.r_[np.zeros(len(negatives)), np.ones(len(labelled.images))]
        self.forest = self.make_forest().fit(self.features(grid, rows), labels)
        self.provenance["base_detectors"] = {name: dict(base.provenance) for name, base in zip(self.base_names, self.bases)}

    def infer(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        full = self.base_maps(images, tuple(output_size))
        grid = [self.to_grid(maps) for maps in full]
        scores = self.forest.score(self.features(grid, images))
        return Prediction(scores=scores, maps=np.mean(full, axis=0))

    def export_module(self) -> Any:
        """Not exportable: the image score comes from an xgboost forest (:mod:`.classifier`), not a torch module."""
        raise ConfigError(
            f"detector {self.name!r} is not exportable: its image score comes from an xgboost boosted forest, "
            "which is not a torch module (no ONNX graph can carry it with the torch path)"
        )

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        self.check_fitted()
        centroids = getattr(self.segmenter, "centroids", None)
        return {
            "map_low": np.asarray(self.map_low, np.float64),
            "map_high": np.asarray(self.map_high, np.float64),
            "part_centroids": np.zeros((0, 0), np.float32) if centroids is None else centroids,
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        hp = self.hparams
        self.map_low = np.asarray(state["map_low"], np.float64)
        self.map_high = np.asarray(state["map_high"], np.float64)
        source = self.provenance["segmentation_source"]
        if source == "user":
            self.segmenter = UserPartMaps(hp["part_maps"], hp["part_maps_images"], int(hp["n_parts"]))
        else:
            self.segmenter = KMeansParts(
                int(hp["n_parts"]), source, hp["segmentation_input"], hp["position_weight"], self.device, self.seed
            )
            self.segmenter.centroids = np.asarray(state["part_centroids"], np.float32)

    def save_extra(self, directory: Path) -> None:
        """``forest.json`` (xgboost JSON) and every base detector under ``bases/<i>-<name>/``."""
        self.forest.save(directory / "forest.json")
        for i, (name, base) in enumerate(zip(self.base_names, self.bases)):
            base.save(directory / "bases" / f"{i}-{name}")

    def load_extra(self, directory: Path) -> None:
        registry = _registry()
        self.bases = [
            registry.detector_class(name).load(directory / "bases" / f"{i}-{name}", device=self.device)
            for i, name in enumerate(self.base_names)
        ]
        settings = {key: self.hparams[key] for key in PAPER_SETTINGS}
        self.forest = BoostedForest.load(directory / "forest.json", self.seed, self.hparams["n_jobs"], **settings)


def join_images(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``first + second``, keeping the paths when both are :class:`KeyedImages`."""
    a, b = image_paths(first), image_paths(second)
    joined = [*first, *second]
    return joined if a is None or b is None else KeyedImages(joined, a + b)


def _registry() -> Any:
    from autovi_core.registry import get_registry

    return get_registry()


def resolve_base_detectors(value: str | Sequence[str]) -> list[str]:
    """The base detector names: ``"auto"`` -> the best installed unsupervised one; names must be
    installed, unsupervised and listed once (one-line :class:`ConfigError` naming the value otherwise)."""
    registry = _registry()
    usable = {name: cls for name, cls in registry.detectors.items() if name != SegAD.name and not cls.capabilities.supervised}
    refused = f"detector {SegAD.name!r}: base_detectors={shown(value)} refused"
    if value == "auto":
        ranked = [n for n in BASE_PREFERENCE if n in usable] + sorted(n for n in usable if n not in BASE_PREFERENCE)
        if not ranked:
            raise ConfigError(f"{refused}: no unsupervised detector is installed (e.g. autovi-plugin-patchcore)")
        return [ranked[0]]
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ConfigError(f"{refused}: it is empty")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{refused}: it lists {twice} twice")
    for name in names:
        try:
            registry.detector_class(name)
        except PluginError as exc:
            raise ConfigError(f"{refused}: {exc}") from None
        if name not in usable:
            raise ConfigError(f"{refused}: {name!r} is supervised, and a base detector must be unsupervised")
    return names
