"""The frozen teacher PDN: a user checkpoint, or distilled once from a pretrained backbone and cached.

Distillation (paper, Sec. 3.1): a *padded* PDN learns to reproduce normalised features of a
pretrained CNN on a broad pool of images (ImageNet in the paper). Here the target is the stride-8 and
stride-16 feature maps of the backbone (WideResNet-101 layer2 + layer3 when its weights are there,
else EfficientNet-Lite0 blocks.2 + blocks.4) on a 2x larger input, each averaged over 3 x 3
neighbourhoods, concatenated at the stride-8 grid, mapped to ``out_channels`` by a fixed seeded
random projection when the widths differ, resized to the PDN's grid and normalised per channel.

The pool is the ``teacher_pool`` folder when given; otherwise every ``train/good`` image of the
datasets found under the autovi cache plus the training images handed to ``fit``. Images are
augmented (random crop, flip, colour jitter, 10 % grayscale). The result is cached under
``<autovi cache>/efficientad/`` keyed by a hash of the settings and of the pool, so a second fit with
the same settings and pool loads it instead of distilling again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from autovi_core.errors import ConfigError
from autovi_core.files import is_image_file
from autovi_core.layer_preset import MID_LEVEL_FEATURES
from autovi_core.training import autocast

from .networks import pdn

TEACHER_SEED = 0
"""Distillation does not depend on the detector's seed: every seed shares one teacher, as in the paper."""
DISTILLATIONS = 0
"""How many teachers this process distilled (tests check that cached teachers are reused)."""
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """``<autovi cache>/efficientad`` (``$AUTOVI_CACHE_DIR`` or ~/.cache/autovi)."""
    from autovi_core.cache import cache_root

    return cache_root() / "efficientad"


# --- the image pool ----------------------------------------------------------------------------------
def discover_pool(folder: str | os.PathLike[str] | None) -> list[Path]:
    """Image files of the ``teacher_pool`` folder (recursive), or of every cached dataset's ``train/good``."""
    if folder:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"teacher_pool {root} is not a folder")
        files = [p for p in root.rglob("*") if is_image_file(p)]
        if not files:
            raise ConfigError(f"teacher_pool {root} holds no images")
        return sorted(files)
    from autovi_core.cache import cache_root

    root = cache_root()
    if not root.is_dir():
        return []
    files = []
    for good in root.glob("**/train/good"):
        if any(part.startswith(".") for part in good.relative_to(root).parts):
            continue  # staging folders of concurrent generators
        files.extend(p for p in good.iterdir() if is_image_file(p))
    return sorted(files)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 tensor of the images at ``paths``, resized."""
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
    return out


def arrays_to_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 tensor from (H, W, 3) uint8 arrays, resized."""
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, image in enumerate(images):
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i] = t[0].round().clamp(0, 255).to(torch.uint8)
    return out


def fingerprint(paths: Sequence[Path], arrays: Sequence[np.ndarray]) -> str:
    """Hash of the pool: file names, sizes and modification times, plus the bytes of in-memory images."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def augment(batch: torch.Tensor, generator: torch.Generator, grayscale_p: float = 0.1) -> torch.Tensor:
    """Random crop (60-100 % of the side) resized back, horizontal flip, colour jitter, grayscale; [0, 1] float."""
    n, _, size, _ = batch.shape
    out = torch.empty(batch.shape, dtype=torch.float32)
    for i in range(n):
        side = int(size * (0.6 + 0.4 * torch.rand((), generator=generator).item()))
        y, x = (torch.randint(0, size - side + 1, (2,), generator=generator)).tolist()
        crop = batch[i : i + 1, :, y : y + side, x : x + side].float() / 255.0
        image = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0]
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        out[i] = colour_jitter(image, generator, 0.2)
        if torch.rand((), generator=generator) < grayscale_p:
            out[i] = grey(out[i]).expand(3, -1, -1)
    return out


def grey(image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luminance of a (3, H, W) RGB image in [0, 1]."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True)


def colour_jitter(image: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """One of brightness, contrast or saturation, changed by a random factor in [1 - s, 1 + s]."""
    factor = 1.0 + strength * (2.0 * torch.rand((), generator=generator).item() - 1.0)
    kind = int(torch.randint(0, 3, (1,), generator=generator))
    if kind == 0:
        return (image * factor).clamp(0, 1)
    if kind == 1:
        return ((image - grey(image).mean()) * factor + grey(image).mean()).clamp(0, 1)
    return ((image - grey(image)) * factor + grey(image)).clamp(0, 1)


# --- distillation targets ----------------------------------------------------------------------------
TARGET_LAYERS = MID_LEVEL_FEATURES
"""The distillation target's layers: as in the paper, the stride-8 and stride-16 stages of the
pretrained backbone (WideResNet-101 layer2 + layer3 there, PatchCore's features)."""


@dataclass
class DistillationTarget:
    """Normalised, projected backbone features on the padded PDN's grid."""

    extractor: Any
    projection: torch.Tensor | None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def build(cls, backbone: str, weights: str | None, out_channels: int, device: str) -> DistillationTarget:
        from autovi_core.backbones import FeatureExtractor

        extractor = FeatureExtractor.for_preset(TARGET_LAYERS, backbone, weights=weights, device=device)
        width = extractor.total_channels
        projection = None
        if width != out_channels:
            generator = torch.Generator().manual_seed(TEACHER_SEED)
            projection = (torch.randn(out_channels, width, generator=generator) / width**0.5).to(device)
        return cls(extractor, projection)

    def __call__(self, images: torch.Tensor, grid: int) -> torch.Tensor:
        """Targets (N, out_channels, grid, grid) for ImageNet-normalised images at 2x the PDN input size."""
        features = self.extractor(images)
        maps = [F.avg_pool2d(f, 3, 1, 1) for f in features.values()]
        side = maps[0].shape[-2:]
        joined = torch.cat([F.interpolate(m, size=side, mode="bilinear", align_corners=False) for m in maps], 1)
        if self.projection is not None:
            joined = torch.einsum("oc,nchw->nohw", self.projection, joined)
        joined = F.interpolate(joined, size=(grid, grid), mode="bilinear", align_corners=False)
        if self.mean is None:
            self.mean = joined.mean(dim=(0, 2, 3), keepdim=True)
            self.std = joined.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        return ((joined - self.mean) / self.std).clone()


# --- the teacher -------------------------------------------------------------------------------------
def settings_key(hp: dict[str, Any], backbone: str, pool: str) -> str:
    keys = (
        "model_size",
        "out_channels",
        "width",
        "image_size",
        "teacher_steps",
        "teacher_batch",
        "teacher_lr",
        "teacher_views",
        "teacher_pool_max",
    )
    settings = {k: hp[k] for k in keys} | {"backbone": backbone, "pool": pool, "format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def obtain_teacher(hp: dict[str, Any], train_images: Sequence[np.ndarray], device: str) -> tuple[dict[str, torch.Tensor], str]:
    """The teacher's state dict and a line saying where it came from (the detector's ``provenance["teacher_source"]``)."""
    if hp["teacher_weights"]:
        from autovi_core.backbones import read_state_dict, sha256_prefix

        path = Path(hp["teacher_weights"]).expanduser()
        state = read_state_dict(path)
        check = pdn(hp["model_size"], hp["out_channels"], width=hp["width"])
        try:
            check.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = str(exc).splitlines()[0][:300]
            raise ConfigError(
                f"teacher_weights {path} does not fit PDN-{hp['model_size']} with {hp['out_channels']} channels: {detail}"
            ) from None
        return check.state_dict(), f"file {path} (sha256 {sha256_prefix(path)})"

    from autovi_core.backbones import weights_env_var
    from autovi_core.cache import load_or_build
    from autovi_core.files import atomic_write

    backbone, weights = hp["backbone"], hp["weights"]
    files = discover_pool(hp["teacher_pool"])
    arrays = [] if hp["teacher_pool"] else list(train_images)
    given = weights or os.environ.get(weights_env_var(backbone)) or os.environ.get("AUTOVI_WEIGHTS")
    key = settings_key(hp, f"{backbone}|{given}", fingerprint(files, arrays))
    path = cache_dir() / f"teacher-{key}.pt"

    def load(cached: Path) -> tuple[dict[str, torch.Tensor], str]:
        meta = json.loads(cached.with_suffix(".json").read_text())
        return torch.load(cached, map_location="cpu", weights_only=True), meta["source"]

    def save(teacher: tuple[dict[str, torch.Tensor], str], tmp: Path) -> None:
        with atomic_write(path.with_suffix(".json")) as meta:  # the sidecar first: a .pt always has one
            meta.write_text(json.dumps({"source": teacher[1], "settings": {k: str(v) for k, v in hp.items()}}, indent=2))
        torch.save(teacher[0], tmp)

    (state, source), _ = load_or_build(path, lambda: distil_teacher(hp, files, arrays, device), load=load, save=save)
    return state, source + f"; cache {path.name}"


def distil_teacher(
    hp: dict[str, Any], files: Sequence[Path], arrays: Sequence[np.ndarray], device: str
) -> tuple[dict[str, torch.Tensor], str]:
    """Distil a teacher from the pool (``files`` + in-memory ``arrays``): its state dict and where it came from."""
    from autovi_core.backbones import LITE0

    backbone, weights, note = hp["backbone"], hp["weights"], ""
    try:
        target = DistillationTarget.build(backbone, weights, hp["out_channels"], device)
    except ConfigError as exc:
        if backbone != "wide_resnet101_2" or weights:
            raise
        note = f" (wide_resnet101_2 has no weights here: {str(exc)[:60]}...)"
        target = DistillationTarget.build(LITE0, None, hp["out_channels"], device)
    pool = torch.cat([load_images(files[: hp["teacher_pool_max"]], 2 * hp["image_size"]), arrays_to_tensor(arrays, 2 * hp["image_size"])])
    if len(pool) == 0:
        raise ConfigError("efficientad: no images to distil the teacher from; give teacher_pool or teacher_weights")
    state = distil(hp, target, pool, device)
    source = (
        f"distilled from {target.extractor.weights_source.description} [{'+'.join(target.extractor.layers)}]{note} "
        f"on {len(pool)} pool images ({'folder ' + str(hp['teacher_pool']) if hp['teacher_pool'] else 'cached datasets + fit images'}), "
        f"{hp['teacher_steps']} steps"
    )
    return state, source


def distil(hp: dict[str, Any], target: DistillationTarget, pool: torch.Tensor, device: str) -> dict[str, torch.Tensor]:
    """Train a padded PDN on augmented pool images to reproduce the normalised backbone features."""
    from autovi_core.backbones import normalize_imagenet
    from autovi_core.progress import track

    global DISTILLATIONS
    DISTILLATIONS += 1
    torch.manual_seed(TEACHER_SEED)
    generator = torch.Generator().manual_seed(TEACHER_SEED)
    network = pdn(hp["model_size"], hp["out_channels"], width=hp["width"], padding=True).to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=hp["teacher_lr"], weight_decay=1e-5)
    size, batch = hp["image_size"], min(hp["teacher_batch"], len(pool))
    grid = network(torch.zeros(1, 3, size, size, device=device)).shape[-1]

    def views(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(PDN inputs, targets) of augmented views of pool images ``index``."""
        large = normalize_imagenet(augment(pool[index], generator)).to(device)
        small = F.interpolate(large, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return small, target(large, grid)

    fixed = None
    if hp["teacher_views"]:  # a fixed set of augmented views, extracted once (cheap CPU distillation)
        chunks = [views(torch.randint(0, len(pool), (batch,), generator=generator)) for _ in range(-(-int(hp["teacher_views"]) // batch))]
        fixed = (torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks]))
    for _ in track(range(hp["teacher_steps"]), "efficientad: distilling the teacher PDN"):
        if fixed is None:
            small, goal = views(torch.randint(0, len(pool), (batch,), generator=generator))
        else:
            index = torch.randint(0, len(fixed[0]), (batch,), generator=generator)
            small, goal = fixed[0][index], fixed[1][index]
        with autocast(device):
            loss = ((network(small).float() - goal) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
