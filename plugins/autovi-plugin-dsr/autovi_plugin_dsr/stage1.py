"""Stage 1: the general discrete model (VQ-VAE), from a user checkpoint or trained once and cached.

The paper trains it on ImageNet; offline, it is trained on the available training images (the
spec's fallback) and cached under ``<autovi cache>/dsr/stage1-<hash>.pt``, keyed by the images, the
stage-1 hyperparameters and the seed. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autovi_core.cache import cache_root, load_or_build
from autovi_core.errors import ConfigError, DataError
from autovi_core.progress import track
from autovi_core.training import autocast, deterministic, make_loader, run_fingerprint

from .data import Stage1Set
from .vq import VQModel

STAGE1_VERSION = 2
"""Part of the cache key: bump when the VQ model or its training changes."""

STAGE1_KEYS = ("image_size", "vq_hidden", "vq_dim", "vq_codes", "vq_res_hidden", "vq_res_layers", "vq_commitment",
               "vq_decay", "stage1_texture_prob", "stage1_epochs", "stage1_samples_per_epoch", "stage1_lr", "batch_size")  # fmt: skip


def build_vq(hp: Mapping[str, Any]) -> VQModel:
    return VQModel(hp["vq_hidden"], hp["vq_dim"], hp["vq_codes"], hp["vq_res_hidden"], hp["vq_res_layers"],
                   hp["vq_commitment"], hp["vq_decay"])  # fmt: skip


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A VQ state dict from a ``.safetensors`` file or a ``torch.save`` file (read with ``weights_only``);
    a dict holding the state under ``"vq"`` or ``"state_dict"`` is accepted too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: stage-1 weights file does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickled objects, corrupt files
            raise DataError(f"{path}: not a weights-only torch state dict ({str(exc).splitlines()[0]})") from None
    for key in ("vq", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_weights(model: VQModel, path: str | os.PathLike[str]) -> None:
    try:
        model.load_state_dict(read_weights(path), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: stage-1 weights do not fit this VQ model ({str(exc).splitlines()[0]}); "
                          "check vq_hidden/vq_dim/vq_codes/vq_res_*") from None  # fmt: skip


def train_vq(model: VQModel, data: np.ndarray, hp: Mapping[str, Any], seed: int, device: str, workers: int) -> None:
    """Reconstruction (MSE) + commitment loss, Adam; EMA codebooks."""
    torch.manual_seed(seed)
    dataset = Stage1Set(data, hp["stage1_samples_per_epoch"] or len(data), seed, hp["stage1_texture_prob"])
    optimizer = torch.optim.Adam(model.parameters(), lr=hp["stage1_lr"])
    model.train()
    with deterministic(device):
        for epoch in track(range(hp["stage1_epochs"]), "dsr: stage 1 (VQ model)"):
            for x in make_loader(dataset, hp["batch_size"], seed, epoch, device, workers):
                x = x.to(device)
                with autocast(device):
                    recon, commitment = model(x)
                loss = F.mse_loss(recon.float(), x) + commitment
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    model.eval()


def stage1_model(hp: Mapping[str, Any], data: np.ndarray, seed: int, device: str) -> tuple[VQModel, str]:
    """The frozen general model and where it came from: ``file:<path>``, ``cache:<path>`` or ``trained:<path>``."""
    torch.manual_seed(seed)
    model = build_vq(hp)
    if hp["stage1_weights"]:
        load_weights(model, hp["stage1_weights"])
        origin = f"file:{Path(hp['stage1_weights']).expanduser()}"
    else:
        key = run_fingerprint({"version": STAGE1_VERSION, **{k: hp[k] for k in STAGE1_KEYS}}, seed, data)[:24]
        path = cache_root() / "dsr" / f"stage1-{key}.pt"

        def train() -> VQModel:
            train_vq(model.to(device), data, hp, seed, device, hp["num_workers"])
            return model

        def save(trained: VQModel, tmp: Path) -> None:
            torch.save({k: v.detach().cpu() for k, v in trained.state_dict().items()}, tmp)

        def load(cached: Path) -> VQModel:
            load_weights(model, cached)
            return model

        _, hit = load_or_build(path, train, load=load, save=save)
        origin = f"{'cache' if hit else 'trained'}:{path}"
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, origin
