"""One measured run of an autovi detector (``patchcore`` / ``padim``) on one generated category.

Runs in the project's ``.venv``, one detector per process so that the peak RSS is that detector's
own. Prints one JSON object on the last stdout line (the same fields as ``run_anomalib.py``):

    .venv/bin/python benchmarks/anomalib_peer/run_autovi.py --method patchcore \
        --category-dir /tmp/synth/textured_plate --seed 0

Measured, with all images decoded into memory before any timing:

- ``fit_s``: wall time of ``detector.fit(train_images)``; it includes loading the backbone and its
  weights (the plugins build the backbone lazily on the first ``fit``), as the anomalib run's does;
  timm, faiss and ``autovi_core.backbones`` are imported before the clock starts, as anomalib is.
- ``img_per_s``: test images / wall time of ``detector.predict(test_images)`` (scores and full-size
  maps), after one warm-up ``predict`` on the first batch; the median of ``--repeats`` timings. With
  ``--runtime onnxruntime`` the fitted detector is saved, exported with ``autovi export`` and its
  graph predicts instead (impl ``autovi-ort``; saving and exporting are not timed); with
  ``--runtime torch-bf16`` the detector runs with ``precision=bfloat16`` (impl ``autovi-bf16``).
- ``peak_rss_mb``: ``ru_maxrss`` of this process at the end (imports, data and model included);
  ``base_rss_mb`` is the RSS after imports and data loading, before the detector is built.
- ``image_auroc``: scikit-learn ROC AUC of the image scores against good (0) / defective (1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from peer_memory import peak_rss_mb, rss_mb

IMPLS = {"torch": "autovi", "torch-bf16": "autovi-bf16", "onnxruntime": "autovi-ort"}
"""--runtime -> the impl name reported."""


def exported_predictor(detector, train_images, output_size):  # noqa: ANN001, ANN201
    """The fitted ``detector`` saved as a model folder, exported to ONNX and loaded in onnxruntime (untimed);
    the files are removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    from autovi_core.export import export_model, load_exported
    from autovi_core.model_folder import calibration_section, geometry_section, save_model_folder

    calibration = detector.predict(train_images[:2], output_size)
    scratch = Path(tempfile.mkdtemp(prefix="autovi-bench-export-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    folder = scratch / "model"
    save_model_folder(
        folder,
        detector,
        calibration=calibration_section(calibration.scores, list(calibration.maps)),
        geometry=geometry_section([image.shape for image in train_images], [output_size]),
        training={},
    )
    return load_exported(export_model(folder)).detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, choices=["patchcore", "padim"])
    parser.add_argument("--category-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--repeats", type=int, default=3, help="timed predict passes (median reported)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="hyperparameter override (repeatable)")
    parser.add_argument(
        "--runtime",
        choices=sorted(IMPLS),
        default="torch",
        help=(
            "what predicts: the fitted detector, the same with precision=bfloat16 (backbone under bfloat16 autocast), "
            "or its `autovi export` graph in onnxruntime (what `autovi predict` runs on an export)"
        ),
    )
    args = parser.parse_args()

    import numpy as np

    # Everything is imported before the clock starts (the plugins import timm/faiss lazily in fit).
    import timm  # noqa: F401
    import torch
    from sklearn.metrics import roc_auc_score

    import autovi_core.backbones  # noqa: F401
    from autovi_core.datasets.autovi import read_autovi_category
    from autovi_core.registry import get_registry

    try:
        import faiss  # noqa: F401
    except ImportError:
        pass

    category_dir = args.category_dir.resolve()
    probe = read_autovi_category(category_dir, dataset="synthetic", name=category_dir.name, native_size=None)
    train_images = probe.load_images(probe.train)
    test_samples = probe.test
    test_images = probe.load_images(test_samples)
    labels = np.array([s.label for s in test_samples])
    output_size = tuple(test_images[0].shape[:2])
    base_rss = rss_mb()

    detector_cls = get_registry().detector_class(args.method)
    sets = dict(pair.split("=", 1) for pair in args.set)
    if args.runtime == "torch-bf16":
        sets["precision"] = "bfloat16"
    overrides = detector_cls.parse_overrides(sets)
    detector = detector_cls(args.profile, seed=args.seed, **overrides)
    start = time.perf_counter()
    detector.fit(train_images)
    fit_s = time.perf_counter() - start
    after_fit_rss = rss_mb()

    predictor = exported_predictor(detector, train_images, output_size) if args.runtime == "onnxruntime" else detector
    batch = int(detector.hparams.get("batch_size", 16))
    predictor.predict(test_images[:batch], output_size)  # warm-up
    times, scores = [], None
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        prediction = predictor.predict(test_images, output_size)
        times.append(time.perf_counter() - start)
        scores = np.asarray(prediction.scores, dtype=np.float64)
    predict_s = statistics.median(times)

    hp = detector.hparams
    result = {
        "impl": IMPLS[args.runtime],
        "method": args.method,
        "category": category_dir.name,
        "seed": args.seed,
        "n_train": len(train_images),
        "n_test": len(test_images),
        "image_size": list(output_size),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "img_per_s": len(test_images) / predict_s,
        "base_rss_mb": base_rss,
        "after_fit_rss_mb": after_fit_rss,
        "peak_rss_mb": peak_rss_mb(),
        "image_auroc": float(roc_auc_score(labels, scores)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg": os.getloadavg(),
        "settings": {k: hp[k] for k in sorted(hp)},
        "weights_source": detector.provenance.get("weights_source"),
    }
    if args.method == "patchcore" and getattr(detector, "memory_bank", None) is not None:
        result["memory_bank"] = list(detector.memory_bank.shape)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
