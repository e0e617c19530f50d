"""Building a backbone's feature extractor from a weights file: autovi's against copying into random inits.

Run:  .venv/bin/python -m pytest benchmarks/bench_backbone_build.py --benchmark-enable
      .venv/bin/python benchmarks/bench_backbone_build.py      # peak memory, each way in a fresh process

Every detector with a pretrained backbone builds a :class:`~autovi_core.backbones.FeatureExtractor`
once per fit and once per loaded model. The reference is how it was built before (and how timm
models are usually loaded): the full classifier randomly initialised, the file copied into it (with
a full clone to check the copy changed it), a features-only probe for the layer names, and the
feature model initialised and copied into again. autovi builds both models on the meta device and
assigns the file's tensors (:func:`~autovi_core.backbones.module_from_state`). Both then fold the
BatchNorms the same way. WideResNet-50 up to ``layer3`` (PatchCore's and GLASS's paper layers) and
ResNet-18 (PaDiM's), from a seeded random-weights file: the cost does not depend on the values.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_measurements import random_weights_file  # noqa: E402

CASES = {"wide_resnet50_2": ("layer2", "layer3"), "resnet18": ("layer1", "layer2", "layer3")}


def copied_into_random_inits(backbone: str, layers: tuple[str, ...], path: Path) -> torch.nn.Module:
    """The reference: every model randomly initialised, the weights copied in."""
    import timm

    from autovi_core.backbones import read_state_dict
    from autovi_core.backbones.folding import fold_batchnorm_checked

    full = timm.create_model(backbone, pretrained=False)
    fresh = {k: v.clone() for k, v in full.state_dict().items()}
    full.load_state_dict(read_state_dict(path), strict=True)
    assert any(not torch.equal(fresh[k], v) for k, v in full.state_dict().items() if v.is_floating_point())
    names = list(timm.create_model(backbone, pretrained=False, features_only=True).feature_info.module_name())
    indices = tuple(names.index(layer) for layer in layers)
    model = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=indices)
    wanted = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in full.state_dict().items() if k in wanted}, strict=True)
    sample = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return fold_batchnorm_checked(model.eval().requires_grad_(False), sample)[0]


def autovi_extractor(backbone: str, layers: tuple[str, ...], path: Path) -> torch.nn.Module:
    from autovi_core.backbones import FeatureExtractor

    return FeatureExtractor(backbone, layers, weights=path).model


WAYS = {"copied-into-random-inits": copied_into_random_inits, "autovi": autovi_extractor}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("backbone-weights")
    return {backbone: random_weights_file(backbone, folder) for backbone in CASES}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("backbone", list(CASES))
def test_build(benchmark, weights: dict[str, Path], backbone: str, way: str) -> None:
    build = WAYS[way]
    model = build(backbone, CASES[backbone], weights[backbone])  # warm: imports, file cache
    reference = copied_into_random_inits(backbone, CASES[backbone], weights[backbone]).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in reference.items()}
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())  # the same folded weights either way
    benchmark.pedantic(build, args=(backbone, CASES[backbone], weights[backbone]), rounds=5, iterations=1)


def peak_in_child(way: str, backbone: str, path: Path) -> dict[str, float]:
    """Peak RSS (MiB) of one build in a fresh process above its resident memory once torch and timm are imported."""
    code = (
        "import json, resource, sys, psutil, torch, timm\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import bench_backbone_build as b\n"
        "from pathlib import Path\n"
        "import autovi_core.backbones, autovi_core.backbones.folding\n"
        "before = psutil.Process().memory_info().rss / 1024\n"
        f"b.WAYS[{way!r}]({backbone!r}, b.CASES[{backbone!r}], Path({str(path)!r}))\n"
        "print(json.dumps({'peak_growth_mib': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        for backbone in CASES:
            path = random_weights_file(backbone, Path(folder))
            peaks = {way: peak_in_child(way, backbone, path)["peak_growth_mib"] for way in WAYS}
            print(f"{backbone} {CASES[backbone]}: " + ", ".join(f"{way} +{mib:,.0f} MiB" for way, mib in peaks.items()))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
