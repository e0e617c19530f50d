"""Batch-1 latency of EfficientAD's fused inference path (pytest-benchmark).

    .venv/bin/python -m pytest plugins/autovi-plugin-efficientad/benchmarks/bench_latency.py --benchmark-enable

Times :meth:`FusedEfficientAD.anomaly_grid` (teacher + student + autoencoder, both maps and their
normalisation) on one 256 x 256 image with the paper's PDN-S / PDN-M (384 channels, untrained weights:
latency does not depend on the values). CUDA cases are skipped without a GPU.
"""

from __future__ import annotations

import pytest
import torch
from autovi_plugin_efficientad.inference import FusedEfficientAD
from autovi_plugin_efficientad.networks import Autoencoder, pdn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def fused(size: str, device: str) -> FusedEfficientAD:
    torch.manual_seed(0)
    model = FusedEfficientAD(pdn(size, 384), pdn(size, 768), Autoencoder(384, 256)).to(device)
    return model.prepare_inference()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "size", ["small", pytest.param("medium", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="PDN-M on CPU only on demand"))]
)
def test_batch1_latency_256(benchmark, size: str, device: str) -> None:
    model = fused(size, device)
    image = torch.rand(1, 3, 256, 256, device=device)

    def run() -> torch.Tensor:
        out = model.anomaly_grid(image)  # returns a CPU tensor: includes the device-to-host copy
        return out

    for _ in range(3):  # warm-up (allocator, cuDNN autotuning)
        run()
    out = benchmark.pedantic(run, rounds=20 if device == "cpu" else 200, iterations=1)
    assert out.shape == (1, 56, 56)
