"""One experiment: a self-contained, serialisable task and the function that runs it.

A :class:`Task` names everything needed to reproduce a result (detector, profile, overrides,
dataset reference, category, seed, device). :func:`run_task` runs it in the current process and
returns the results.jsonl record; executors (``autovi_core.executors``) decide where it runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import API_VERSION
from .dataset import Category, Sample, select_images
from .detector import Detector, LabelledDefects
from .device import resolve_device
from .errors import ConfigError
from .evaluation import SPRO_MODES
from .experiment_file import build_content, experiment_path, map_range, write_experiment_file
from .image_io import write_float_tiff, write_png8
from .measure import distribution_version, peak_gpu_mb, peak_rss_mb, reset_peak_gpu, stopwatch, torch_threads
from .metric import EvaluationData
from .plugins import core_version
from .report import overrides_text
from .run_options import OPTION_NAMES, CroppedCategory, Window, options_label, options_of, options_slug, split_few_shot
from .seeding import seed_everything


@dataclass(frozen=True)
class Task:
    """A (detector, dataset category, seed) experiment, serialisable to JSON."""

    detector: str
    category: str
    seed: int = 0
    profile: str = "fast"
    dataset: str = "synthetic"
    root: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    save_maps: bool = False
    output_dir: str | None = None
    calibration_holdout: float = 0.1
    labelled_defects: int = 10
    spro_mode: str = "exact"
    save_models: bool = False
    """``--save-models``: write the fitted detector and its calibration to a model folder (:mod:`.model_folder`)."""
    augment: str | None = None
    """``--augment``: a training augmentation recipe of :mod:`.augmentation` (None: no augmentation)."""
    train_images: int | None = None
    """``--train-images``: train on this many images drawn with the seed (:mod:`.run_options`)."""
    crop: str | None = None
    """``--crop WxH``: a centred window cut from train, test and ground truth (:mod:`.run_options`)."""
    shared_fits: str | None = None
    """Folder where this run's experiments share fits they have in common (:mod:`.shared_fits`):
    set by ``autovi run`` on an ensemble and the same run's own rows of its members."""

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity used by ``--resume``: the experiment, its section-6 options and its overrides."""
        return (
            self.detector,
            self.dataset,
            self.category,
            self.seed,
            self.profile,
            options_label(options_of(self)),
            overrides_text(self.overrides),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls(**json.loads(text))

    def base_record(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "dataset": self.dataset,
            "category": self.category,
            "seed": self.seed,
            "profile": self.profile,
            "status": "failed",
            "error": None,
            "overrides": dict(self.overrides),
            "options": {name: getattr(self, name) for name in OPTION_NAMES},
        }


def record_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """The :attr:`Task.key` of the task that wrote ``record``."""
    fields = ("detector", "dataset", "category", "seed", "profile")
    return (*(record.get(name) for name in fields), options_label(options_of(record)), overrides_text(record.get("overrides")))


def split_calibration(train: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out a seeded share of good training images to calibrate thresholds (none below 10 images)."""
    n_hold = int(round(len(train) * fraction)) if len(train) >= 10 else 0
    if n_hold == 0:
        return train, []
    order = np.random.default_rng(seed).permutation(len(train))
    held = set(order[:n_hold].tolist())
    return [s for i, s in enumerate(train) if i not in held], [s for i, s in enumerate(train) if i in held]


def split_labelled(test: list[Sample], n: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Carve ``n`` labelled defective images out of the test split for a supervised detector."""
    defective = [i for i, s in enumerate(test) if s.label == 1]
    if n <= 0 or not defective:
        return test, []
    if n >= len(defective):
        raise ConfigError(f"cannot take {n} labelled defects: the test split has only {len(defective)}")
    chosen = set(np.random.default_rng(seed + 1).choice(defective, size=n, replace=False).tolist())
    return [s for i, s in enumerate(test) if i not in chosen], [test[i] for i in sorted(chosen)]


def _predict_by_size(
    detector: Detector, category: Category, samples: list[Sample], images: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Image scores and one map per sample at its ground-truth size (samples of equal size batched)."""
    shapes = [category.ground_truth_shape(s) for s in samples]
    scores = np.zeros(len(samples))
    maps: list[np.ndarray] = [np.empty(0, np.float32)] * len(samples)
    for shape in dict.fromkeys(shapes):
        index = [i for i, s in enumerate(shapes) if s == shape]
        prediction = detector.predict(select_images(images, index), output_size=shape)
        if prediction.maps.shape != (len(index), *shape):
            raise RuntimeError(
                f"detector {detector.name!r} returned maps of shape {prediction.maps.shape[1:]} "
                f"for {len(index)} images, expected {len(index)} maps of {shape}"
            )
        for j, i in enumerate(index):
            scores[i], maps[i] = prediction.scores[j], prediction.maps[j]
    return scores, maps


LATENCY_IMAGES = 10
"""How many test images, predicted one at a time, the batch-1 latency is the median over."""


def _batch1_latency_ms(detector: Detector, category: Category, samples: list[Sample], images: list[np.ndarray]) -> float | None:
    """Median wall time in ms of ``predict`` on a single image (maps at the ground-truth size), over
    up to ``LATENCY_IMAGES`` test images; ``predict`` returns NumPy, so GPU work is included."""
    times = []
    for i, sample in enumerate(samples[:LATENCY_IMAGES]):
        with stopwatch() as elapsed:
            detector.predict(select_images(images, [i]), output_size=category.ground_truth_shape(sample))
        times.append(elapsed["s"])
    return 1000.0 * float(np.median(times)) if times else None


def _maps_dir(task: Task) -> str:
    """Where ``--save-maps`` writes a task's maps, relative to the run folder."""
    return f"maps/{task.detector}/{task.category}/seed{task.seed}{options_slug(options_of(task))}"


def _save_maps(task: Task, samples: list[Sample], maps: list[np.ndarray]) -> None:
    """Write 8-bit PNGs (min-max scaled over the test set) under ``test/`` in the layout the official
    evaluator reads, and the raw float maps as TIFFs under ``float/`` (same sub-layout)."""
    run = Path(task.output_dir or ".") / _maps_dir(task)
    low, high = map_range(maps)
    scale = 255.0 / (high - low) if high > low else 0.0
    for sample, amap in zip(samples, maps):
        write_png8(run / "test" / sample.defect_dir / f"{sample.stem}.png", (amap - low) * scale)
        write_float_tiff(run / "float" / sample.defect_dir / f"{sample.stem}.tiff", amap)
    (run / "png_scaling.json").write_text(json.dumps({"min": low, "max": high, "png": "(map - min) * 255 / (max - min)"}))


@dataclass
class ExperimentData:
    """What one experiment reads from its dataset: the splits and their images."""

    category: Category
    train: list[Sample]
    calibration: list[Sample]
    test: list[Sample]
    labelled_samples: list[Sample]
    train_images: list[np.ndarray]
    test_images: list[np.ndarray]
    labelled: LabelledDefects | None
    root: Path | None = None
    notes: list[str] = field(default_factory=list)

    @functools.cached_property
    def calibration_images(self) -> list[np.ndarray]:
        """The calibration hold-out's images, decoded on first use (by a detector that reads held-out
        goods, by the calibration scores, by ``--save-models``) and once."""
        return self.category.load_images(self.calibration)


def load_data(task: Task, registry: Any, supervised: bool) -> ExperimentData:
    """Read the task's category and split it: calibration hold-out, labelled defects, test; with
    the section-6 options applied (crop window, few-shot subset, augmentation)."""
    from .augmentation import AugmentedImages, recipe

    provider = registry.dataset(task.dataset)
    root = provider.resolve_root(task.root)
    provider.check_category(root, task.category)
    category = provider.load_category(root, task.category)
    notes: list[str] = []
    if task.crop is not None:
        category = CroppedCategory.of(category, Window.parse(task.crop))
        if category.dropped:
            left_out = len(category.dropped)
            notes.append(f"crop {task.crop}: {left_out} defective test image(s) have no defect inside the window and are left out")
    if task.train_images is not None:
        train, calibration, note = split_few_shot(category.train, task.train_images, task.calibration_holdout, task.seed)
        notes += [note] if note else []
    else:
        train, calibration = split_calibration(category.train, task.calibration_holdout, task.seed)
    test, labelled_samples = split_labelled(category.test, task.labelled_defects if supervised else 0, task.seed)
    labelled = None
    if supervised:
        labelled = LabelledDefects(
            images=category.load_images(labelled_samples),
            masks=[_union(category.load_channels(s), category.ground_truth_shape(s)) for s in labelled_samples],
            defect_dirs=[s.defect_dir for s in labelled_samples],
        )
    train_images = category.load_images(train, f"{task.detector}/{task.category}: loading train")
    if task.augment is not None:
        train_images = AugmentedImages(train_images, recipe(task.augment), task.seed)
    return ExperimentData(
        category=category,
        train=train,
        calibration=calibration,
        test=test,
        labelled_samples=labelled_samples,
        train_images=train_images,
        test_images=category.load_images(test, f"{task.detector}/{task.category}: loading test"),
        labelled=labelled,
        root=root,
        notes=notes,
    )


def fit_timed(detector: Detector, data: ExperimentData, shared_fits: str | None = None) -> tuple[Detector, dict[str, Any]]:
    """Fit the detector on the training split (a detector that reads held-out goods also gets the
    calibration hold-out), sharing fits through ``shared_fits`` (:mod:`.shared_fits`); returns the
    fitted detector (a loaded one when its fit was shared) and the fit's timing and memory figures."""
    from .shared_fits import fit_shared, sharing_fits

    held_out = None
    if detector.capabilities.uses_held_out_goods and data.calibration:
        held_out = data.calibration_images
    rss_before_fit = peak_rss_mb()
    reset_peak_gpu()
    with stopwatch() as fit_time, sharing_fits(shared_fits):
        detector, reused = fit_shared(detector, data.train_images, data.labelled, held_out=held_out)
    return detector, {"fit_s": fit_time["s"], "peak_rss_before_fit_mb": rss_before_fit, "fit_reused": reused}


def evaluate_fitted(
    task: Task, detector: Detector, data: ExperimentData, registry: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Predict the test split (timed, after a warm-up), the batch-1 latency and the calibration
    hold-out, then compute every registered metric; returns (metrics, timing, the calibration section
    of a model folder when ``--save-models`` will write one, else None). With an output folder it
    also writes the maps (``save_maps``) and the experiment file (:mod:`.experiment_file`)."""
    from .model_folder import calibration_section
    from .progress import track

    category, test, test_images = data.category, data.test, data.test_images
    warm = test[: min(2, len(test))]
    _predict_by_size(detector, category, warm, select_images(test_images, range(len(warm))))  # warm-up: caches, JIT, cuDNN
    with stopwatch() as predict_time:
        scores, maps = _predict_by_size(detector, category, test, test_images)
    latency_ms = _batch1_latency_ms(detector, category, test, test_images)
    calibration_scores = calibration_maxima = calibration = None
    calibration_maps: list[np.ndarray] = []
    if data.calibration:
        calibration_scores, calibration_maps = _predict_by_size(detector, category, data.calibration, data.calibration_images)
        calibration_maxima = [float(np.max(m)) for m in calibration_maps]
    if task.save_models:
        paths = [category.relative_path(s) for s in data.calibration]
        calibration = calibration_section([] if calibration_scores is None else calibration_scores, calibration_maps, paths)
    del calibration_maps

    channels = None
    if category.has_masks:
        channels = [category.load_channels(s, m.shape) for s, m in zip(track(test, "reading ground truth"), maps)]
    evaluation = EvaluationData(
        keys=[s.key for s in test],
        labels=np.array([s.label for s in test]),
        scores=scores,
        maps=maps if category.has_masks else None,
        channels=channels,
        calibration_scores=calibration_scores,
        spro_mode=task.spro_mode,
        seed=task.seed,
        spro_curve=task.output_dir is not None,
    )
    metrics: dict[str, Any] = {"auc_spro": None, "pixel_auroc": None, "per_defect_type": None}
    with stopwatch() as evaluate_time:  # every metric, in memory: maps and masks are already decoded
        for metric in registry.metrics.values():
            if metric.level == "pixel" and not evaluation.has_masks:
                continue
            metrics.update(metric.compute(evaluation))
    spro_curve = metrics.pop("spro_curve", None)  # for the experiment file, not the record
    if task.save_maps:
        _save_maps(task, test, maps)
    if task.output_dir is not None:
        content = build_content(
            detector=task.detector,
            dataset=task.dataset,
            category=task.category,
            seed=task.seed,
            profile=task.profile,
            supervised=detector.capabilities.supervised,
            root=Path(data.root).resolve() if data.root is not None else "",
            keys=evaluation.keys,
            labels=evaluation.labels.tolist(),
            scores=scores.tolist(),
            calibration_scores=None if calibration_scores is None else calibration_scores.tolist(),
            calibration_map_maxima=calibration_maxima,
            test_map_range=map_range(maps),
            spro_curve=spro_curve,
            maps=_maps_dir(task) if task.save_maps else None,
            options=options_of(task),
        )
        write_experiment_file(task.output_dir, content)
    timing = {
        "predict_images_per_s": len(test) / predict_time["s"] if predict_time["s"] > 0 else None,
        "batch1_latency_ms": latency_ms,
        "evaluate_s": evaluate_time["s"],
    }
    return metrics, timing, calibration


def run_task(task: Task, registry: Any = None) -> dict[str, Any]:
    """Run one experiment in this process and return its results record (errors propagate):
    load the data, fit, evaluate, record."""
    from .registry import get_registry

    registry = registry or get_registry()
    if task.spro_mode not in SPRO_MODES:
        raise ConfigError(f"unknown sPRO mode {task.spro_mode!r}; valid: {', '.join(SPRO_MODES)}")
    record = task.base_record()
    detector_cls = registry.detector_class(task.detector)
    device = resolve_device(task.device)
    supervised = detector_cls.capabilities.supervised
    data = load_data(task, registry, supervised)

    seed_everything(task.seed)
    detector = detector_cls(task.profile, seed=task.seed, device=device, **task.overrides)
    detector, fit_timing = fit_timed(detector, data, task.shared_fits)  # seeds again, now that torch may be imported
    metrics, predict_timing, calibration = evaluate_fitted(task, detector, data, registry)

    record.update(
        status="ok",
        supervised=supervised,
        metrics=metrics,
        timing={
            "fit_s": fit_timing["fit_s"],
            "fit_reused": fit_timing["fit_reused"],
            **predict_timing,
            "peak_rss_mb": peak_rss_mb(),
            "peak_rss_before_fit_mb": fit_timing["peak_rss_before_fit_mb"],
            "peak_gpu_mb": peak_gpu_mb(),
        },
        hparams=dict(detector.hparams),
        provenance=dict(detector.provenance),
        split={
            "train": len(data.train),
            "calibration": len(data.calibration),
            "test": len(data.test),
            "labelled_defects": len(data.labelled_samples),
        },
        notes=data.notes,
        versions={
            "autovi-core": core_version(),
            "api": API_VERSION,
            "plugin": registry.version_of("detector", task.detector),
            "plugin_distribution": registry.distribution_of("detector", task.detector),
            "torch": distribution_version("torch"),
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        device=device,
        torch_threads=torch_threads(),
    )
    if task.output_dir is not None:  # evaluate_fitted wrote it
        record["experiment_file"] = experiment_path(task.dataset, task.category, task.detector, task.seed, task.profile, options_of(task))
    if task.save_models:  # autovi run --save-models: the detector with the calibration it was evaluated with
        from .model_folder import save_run_model

        record["model_dir"] = save_run_model(task, detector, data, calibration, registry)
    return record


def _union(channels: list[tuple[np.ndarray, Any]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for channel, _ in channels:
        mask |= channel
    return mask
