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
from autovi_core.errors import ConfigError

from .classifier import PAPER_SETTINGS, BoostedForest
from .segmentation import KMeansParts, UserPartMaps

BASE_PREFERENCE: tuple[str, ...] = ("patchcore", "efficientad", "padim", "cflow", "draem", "dsr")
"""Order in which ``base_detectors="auto"`` picks the installed unsupervised detector (best first:
PatchCore and EfficientAD lead the AutoVI/MVTec tables); any other unsupervised one comes after."""

SEGMENTATIONS = ("auto", "backbone", "colour", "user")
NEGATIVES = ("split", "cross_fit")
NORMALISATION_QUANTILES = (0.9, 0.995)

_COMMON: dict[str, Any] = {
    "base_detectors": "auto",  # a name, a list of names, or "auto" (see BASE_PREFERENCE)
    "base_profile": None,  # profile of the base detectors; None = SegAD's own profile
    "base_overrides": {},  # {detector name: {hyperparameter: value}}
    "held_out_fraction": 0.1,  # share of the good training images kept from the base detectors ("split")
    "negatives": "split",  # split (the paper) | cross_fit (out-of-fold maps of every good, see fit)
    "folds": 5,  # cross_fit: number of folds
    "n_parts": 4,
    "segmentation": "auto",  # auto (user maps if part_maps is set, else backbone, else colour) | backbone | colour | user
    "segmentation_input": 128,  # network input size of the backbone k-means features
    "position_weight": 0.5,  # weight of (row, col) in [0, 1] next to RGB in [0, 1] for colour k-means
    "part_maps": None,  # folder of user part maps: [<split>/]<defect_dir>/<stem>.(npy|png) or <stem>.(npy|png)
    "part_maps_images": None,  # category folder of the images: only for plain image lists (matched by content)
    "n_jobs": 1,  # xgboost threads: one is fastest on ~100 rows (more threads only add overhead)
    **PAPER_SETTINGS,
}


class SegAD(Detector):
    name = "segad"
    description = "SegAD: per-part statistics of base detectors' anomaly maps re-scored by a boosted random forest (supervised)."
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {**_COMMON, "map_size": 256},
        "fast": {**_COMMON, "map_size": 64},
    }
    hparam_types: ClassVar[dict[str, tuple[type, ...]]] = {"base_detectors": (str, list)}
    capabilities = Capabilities(needs_gpu=False, supervised=True, pretrained_assets=("tf_efficientnet_lite0",))

    def __init__(self, profile: str = "fast", *, seed: int = 0, device: str = "cpu", **overrides: Any) -> None:
        super().__init__(profile, seed=seed, device=device, **overrides)
        self.base_names = resolve_base_detectors(self.hparams["base_detectors"])
        """The base detectors ``base_detectors`` resolves to (``auto``: the best installed one)."""
        if self.hparams["segmentation"] not in SEGMENTATIONS:
            raise ConfigError(f"unknown segmentation {self.hparams['segmentation']!r}; valid: {', '.join(SEGMENTATIONS)}")
        if not 0 < float(self.hparams["held_out_fraction"]) < 1:
            raise ConfigError("held_out_fraction must be between 0 and 1")
        if self.hparams["negatives"] not in NEGATIVES:
            raise ConfigError(f"unknown negatives {self.hparams['negatives']!r}; valid: {', '.join(NEGATIVES)}")
        if int(self.hparams["folds"]) < 2:
            raise ConfigError("folds must be at least 2")
        self.bases: list[Detector] = []
        self.segmenter: KMeansParts | UserPartMaps | None = None
        self.forest: BoostedForest | None = None
        self.map_low = np.zeros(0)
        self.map_high = np.zeros(0)

    # --- building blocks --------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        return (int(self.hparams["map_size"]),) * 2

    def make_bases(self) -> list[Detector]:
        """Fresh base detectors from the registry, with ``base_profile`` and ``base_overrides``."""
        from autovi_core.registry import get_registry

        hp = self.hparams
        profile = hp["base_profile"] or self.profile
        overrides = dict(hp["base_overrides"] or {})
        unknown = set(overrides) - set(self.base_names)
        if unknown:
            raise ConfigError(f"base_overrides names {sorted(unknown)}, which are not among base_detectors {self.base_names}")
        registry = get_registry()
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
        if mode == "user" or (mode == "auto" and hp["part_maps"]):
            if not hp["part_maps"]:
                raise ConfigError("segmentation='user' needs the part_maps folder")
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
        from autovi_core.registry import get_registry

        registry = get_registry()
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


def resolve_base_detectors(value: str | Sequence[str]) -> list[str]:
    """The base detector names: ``"auto"`` -> the best installed unsupervised one; names are checked."""
    from autovi_core.registry import get_registry

    registry = get_registry()
    usable = {name: cls for name, cls in registry.detectors.items() if name != SegAD.name and not cls.capabilities.supervised}
    if value == "auto":
        ranked = [n for n in BASE_PREFERENCE if n in usable] + sorted(n for n in usable if n not in BASE_PREFERENCE)
        if not ranked:
            raise ConfigError("SegAD needs an unsupervised base detector, but none is installed (e.g. autovi-plugin-patchcore)")
        return [ranked[0]]
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ConfigError("base_detectors is empty")
    if len(set(names)) != len(names):
        raise ConfigError(f"base_detectors lists a detector twice: {names}")
    for name in names:
        registry.detector_class(name)  # unknown names: PluginError listing the valid ones
        if name not in usable:
            raise ConfigError(f"{name!r} cannot be a SegAD base detector: it is supervised")
    return names
