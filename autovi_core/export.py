"""``autovi export MODEL_DIR --format onnx``: a model folder's inference path as an ONNX graph, and
``autovi predict`` on the exported folder through onnxruntime (docs/deploy.md, 'Exporting to ONNX').

A detector that can be exported returns an :class:`ExportPlan` from
:meth:`autovi_core.detector.Detector.export_module`: a torch module taking ``images``, ``(N, H, W, 3)``
uint8 RGB of one size, and returning ``scores`` ``(N,)`` and ``maps`` ``(N, H, W)``, the whole path
of its ``predict`` (resize and normalisation, backbone, method head with the learned state as
constants, map upsampling and smoothing, the image score), plus the steps it computes otherwise
(``substitutions``). The exported folder::

    OUT/model.onnx (+ model.onnx.data)   the graph, opset OPSET, batch, height and width dynamic
    OUT/calibration.json                 the model folder's, unchanged: same thresholds and map scaling
    OUT/export.json                      opset, input and outputs, detector, versions, substitutions,
                                         and the export-time parity check against the torch model
    OUT/model.xml, model.bin             --format openvino: the ONNX graph converted to OpenVINO IR,
                                         run by OpenVINO's CPU plugin in float32

Only this module's functions import torch, onnx, onnxruntime and openvino, and only when called.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detector import Prediction
from .errors import ConfigError, DataError
from .files import atomic_write
from .model_folder import CALIBRATION_FILE, ModelFolder

FORMATS = ("onnx", "openvino")
OPENVINO_FILE = "model.xml"
OPSET = 18
"""The fixed ONNX opset of every export (18: Resize with antialias, ReduceMax with axes as input)."""
EXPORT_FILE = "export.json"
ONNX_FILE = "model.onnx"
EXPORT_FORMAT = "autovi-export"
EXPORT_FORMAT_VERSION = 1
INSTALL_HINT = 'pip install "autovi-core[onnx]"'
PARITY_RTOL = 1e-4
"""Parity: max |onnx map - torch map| <= PARITY_RTOL * max |torch map|, over the batch."""

Log = Callable[[str], None]


def _quiet(message: str) -> None:
    return None


@dataclass
class ExportPlan:
    """What :meth:`~autovi_core.detector.Detector.export_module` returns."""

    module: Any
    """A ``torch.nn.Module``: ``images`` (N, H, W, 3) uint8 -> ``(scores (N,), maps (N, H, W))`` float32."""
    steps: list[str] = field(default_factory=list)
    """What the graph computes, in order (for export.json and docs)."""
    substitutions: list[str] = field(default_factory=list)
    """Steps computed otherwise than ``infer`` does, each saying what replaced what."""


def require_onnx() -> None:
    """A one-line :class:`ConfigError` naming the extra to install when onnx or onnxruntime is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"ONNX export and prediction need onnx and onnxruntime ({exc.name} is not installed): {INSTALL_HINT}") from None


def require_openvino() -> None:
    """``--format openvino`` (and predicting such an export) needs the openvino package."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise ConfigError('--format openvino needs OpenVINO (openvino is not installed): pip install "autovi-core[openvino]"') from None


def is_exported(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`export_model`."""
    return (Path(path) / EXPORT_FILE).is_file()


def default_output(model_dir: Path, fmt: str) -> Path:
    """``MODEL_DIR-onnx`` next to the model folder."""
    return model_dir.parent / f"{model_dir.name}-{fmt}"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} refused: expects one of {', '.join(FORMATS)}")


def check_export_output(output: Path, model_dir: Path) -> None:
    """Refuse an ``--output`` that is a file, the model folder itself, or a non-empty folder that is not an export."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a folder")
    if output.resolve() == model_dir.resolve():
        raise ConfigError(f"--output {output}: is the model folder itself; choose another folder")
    if output.is_dir() and any(output.iterdir()) and not is_exported(output):
        raise ConfigError(f"--output {output}: a non-empty folder that is not an exported model; choose a new folder")


def same_ranking(reference: np.ndarray, scores: np.ndarray, rtol: float) -> bool:
    """True when every pair of images that the ``reference`` scores tell apart by more than ``rtol`` times
    their largest magnitude is in the same order in ``scores`` (closer pairs are ties: float rounding
    may order them either way)."""
    reference, scores = np.asarray(reference, np.float64).ravel(), np.asarray(scores, np.float64).ravel()
    apart = reference[:, None] - reference[None, :]
    separated = np.abs(apart) > rtol * (float(np.max(np.abs(reference))) if reference.size else 0.0)
    return bool(np.all(np.sign(apart[separated]) == np.sign((scores[:, None] - scores[None, :])[separated])))


def parity(torch_prediction: Prediction, scores: np.ndarray, maps: np.ndarray) -> dict[str, Any]:
    """How far onnxruntime's outputs are from the torch detector's: the map error relative to the
    largest torch map value, the largest score difference, and whether the scores rank alike
    (:func:`same_ranking` at :data:`PARITY_RTOL`)."""
    reference = torch_prediction.maps.astype(np.float64)
    scale = float(np.max(np.abs(reference))) or 1.0
    map_error = float(np.max(np.abs(maps.astype(np.float64) - reference)))
    score_error = float(np.max(np.abs(scores.astype(np.float64) - torch_prediction.scores)))
    return {
        "max_abs_map_diff": map_error,
        "max_abs_torch_map": scale,
        "relative_map_diff": map_error / scale,
        "max_abs_score_diff": score_error,
        "same_score_ranking": same_ranking(torch_prediction.scores, scores, PARITY_RTOL),
        "within_tolerance": map_error <= PARITY_RTOL * scale,
        "rule": f"max |onnx map - torch map| <= {PARITY_RTOL:g} * max |torch map|",
    }


def check_images(shape: Sequence[int], count: int = 3, seed: int = 0) -> np.ndarray:
    """Seeded random (count, H, W, 3) uint8 images for the export-time parity check: a smooth
    background with noise, so that the maps are not flat."""
    rng = np.random.default_rng(seed)
    height, width = int(shape[0]), int(shape[1])
    ramp = np.linspace(40, 200, width)[None, :, None] + np.linspace(0, 40, height)[:, None, None]
    return np.clip(ramp[None] + rng.normal(0, 25, (count, height, width, 3)), 0, 255).astype(np.uint8)


def export_model(model_dir: Path, *, fmt: str = "onnx", output: Path | None = None, log: Log = _quiet) -> Path:
    """Export the model folder ``model_dir`` to ``output`` (default ``MODEL_DIR-<fmt>``); returns it.

    Refused with one line: an unknown format, onnx/onnxruntime missing, a folder that is not a model
    folder (or already an export), a detector without an export path, a bad ``--output``.
    """
    from .model_folder import load_model_folder

    check_format(fmt)
    model_dir = Path(model_dir)
    if is_exported(model_dir):
        raise ConfigError(f"{model_dir}: already an exported model ({EXPORT_FILE}); export the model folder it came from")
    output = Path(output) if output is not None else default_output(model_dir, fmt)
    check_export_output(output, model_dir)
    require_onnx()
    if fmt == "openvino":
        require_openvino()
    model = load_model_folder(model_dir, device="cpu")
    detector = model.detector
    try:
        plan = detector.export_module()
    except ConfigError as exc:
        raise ConfigError(f"{model_dir}: cannot be exported: {exc}") from None
    if not isinstance(plan, ExportPlan):
        raise ConfigError(f"{model_dir}: detector {detector.name!r}: export_module() returned {type(plan).__name__}, not an ExportPlan")
    for line in plan.substitutions:
        log(f"substituted: {line}")

    import onnx
    import onnxruntime
    import torch

    size = model.geometry.get("image_size") or [256, 256]
    started = time.perf_counter()
    with atomic_write(output) as tmp:
        tmp.mkdir()
        try:
            _torch_export(plan.module, tmp / ONNX_FILE)
        except Exception as exc:  # noqa: BLE001 - the exporter's errors run to pages: keep the first line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"{model_dir}: torch.onnx.export failed for {detector.name!r} ({type(exc).__name__}: {first})") from None
        shutil.copyfile(model_dir / CALIBRATION_FILE, tmp / CALIBRATION_FILE)
        if fmt == "openvino":
            _to_openvino(tmp / ONNX_FILE, tmp / OPENVINO_FILE)
        images = check_images(size)
        target_file = OPENVINO_FILE if fmt == "openvino" else ONNX_FILE
        runner = ExportedDetector(tmp, {"detector": detector.name, "target": fmt, "file": target_file})
        prediction = runner.predict(list(images), tuple(images.shape[1:3]))
        scores, maps = prediction.scores, prediction.maps
        check = parity(detector.predict(list(images), tuple(images.shape[1:3])), scores, maps)
        check["images"] = f"{len(images)} seeded synthetic images of {size[1]}x{size[0]} (autovi_core.export.check_images)"
        info = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "target": fmt,
            "file": target_file,
            "opset": OPSET,
            "detector": detector.name,
            "profile": detector.profile,
            "seed": detector.seed,
            "hparams": dict(detector.hparams),
            "source_model": str(model_dir),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "input": {
                "name": "images",
                "dtype": "uint8",
                "shape": ["batch", "height", "width", 3],
                "layout": "NHWC RGB, one size per batch",
            },
            "outputs": {
                "scores": {"dtype": "float32", "shape": ["batch"]},
                "maps": {"dtype": "float32", "shape": ["batch", "height", "width"], "at": "the input images' size"},
            },
            "preprocessing": "none outside the graph: raw RGB images as autovi_core.image_io.read_rgb returns them",
            "steps": plan.steps,
            "substitutions": plan.substitutions,
            "parity": check,
            "versions": {
                "autovi_core": _version("autovi-core"),
                "plugin": (model.info.get("plugin") or {}).get("version"),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                **({"openvino": _version("openvino")} if fmt == "openvino" else {}),
            },
            "export_s": round(time.perf_counter() - started, 2),
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(info, indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")
    log(
        f"parity ({fmt}) on {len(images)} check images: max map difference {check['relative_map_diff']:.2e} of the largest map value, "
        f"scores {'rank alike' if check['same_score_ranking'] else 'RANK DIFFERENTLY'}"
    )
    if not check["within_tolerance"]:
        log(f"warning: the exported maps differ from the torch maps by more than {PARITY_RTOL:g} relative")
    return output


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def _torch_export(module: Any, path: Path) -> None:
    """``torch.onnx.export`` (the dynamo exporter) at :data:`OPSET`, batch, height and width dynamic."""
    import contextlib
    import io
    import warnings

    import torch

    module = module.eval()
    example = torch.from_numpy(check_images((61, 83), count=2, seed=1))  # odd sizes: nothing specialises on them
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("height", min=2), 2: torch.export.Dim("width", min=2)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["scores", "maps"],
            opset_version=OPSET,
            dynamo=True,
            dynamic_shapes={"images": dims},
            verbose=False,
        )


def _to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """The ONNX graph converted to OpenVINO IR (``model.xml`` + ``model.bin``)."""
    import openvino

    # float32 weights: save_model compresses them to float16 by default (a 4e-4 to 1.5e-3 map error)
    openvino.save_model(openvino.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def _session(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ExportedDetector:
    """An exported model run by onnxruntime, with the ``predict`` of a detector (maps at the images' size)."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path = path
        self.name = str(info.get("detector"))
        self.info = info
        self.target = str(info.get("target") or "onnx")
        file = path / str(info.get("file") or ONNX_FILE)
        if self.target == "openvino":
            import openvino

            core = openvino.Core()  # float32 inference: the CPU plugin may otherwise pick a lower precision
            self.compiled = core.compile_model(core.read_model(str(file)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        else:
            self.session = _session(file)

    def predict(self, images: Sequence[np.ndarray], output_size: tuple[int, int]) -> Prediction:
        batch = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
        if batch.ndim != 4 or batch.shape[3] != 3:
            raise DataError(f"expected (H, W, 3) RGB images, got {batch.shape[1:]}")
        if tuple(batch.shape[1:3]) != tuple(int(v) for v in output_size):
            raise ConfigError(f"an exported model returns maps at the images' size {batch.shape[1:3]}, not at {tuple(output_size)}")
        if self.target == "openvino":
            result = self.compiled(batch)
            scores, maps = result[self.compiled.output("scores")], result[self.compiled.output("maps")]
        else:
            scores, maps = self.session.run(["scores", "maps"], {"images": batch})
        return Prediction(scores=scores, maps=maps)


def load_exported(path: str | os.PathLike[str]) -> ModelFolder:
    """An exported folder as a :class:`ModelFolder` whose ``detector`` runs onnxruntime; one-line
    errors for a damaged folder and a missing onnxruntime."""
    path = Path(path)
    try:
        info = json.loads((path / EXPORT_FILE).read_text(encoding="utf-8"))
        calibration = json.loads((path / CALIBRATION_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not a complete exported model ({Path(exc.filename).name} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: damaged exported model ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT or not isinstance(calibration, dict):
        raise DataError(f"{path / EXPORT_FILE}: not an autovi export (format {info.get('format') if isinstance(info, dict) else None!r})")
    if int(info.get("format_version", 0)) > EXPORT_FORMAT_VERSION:
        raise DataError(f"{path}: exported in format version {info.get('format_version')}; this autovi-core reads {EXPORT_FORMAT_VERSION}")
    if not (path / str(info.get("file") or ONNX_FILE)).is_file():
        raise DataError(f"{path}: not a complete exported model ({info.get('file') or ONNX_FILE} is missing)")
    require_onnx()
    if info.get("target") == "openvino":
        require_openvino()
    try:
        detector = ExportedDetector(path, info)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors for a damaged graph
        raise DataError(f"{path}: damaged exported model ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    runtime = "OpenVINO" if info.get("target") == "openvino" else "onnxruntime"
    note = f"{path}: exported {info['detector']} model, run by {runtime}"
    return ModelFolder(path=path, detector=detector, info=calibration, notes=[note])  # type: ignore[arg-type]


__all__ = [
    "EXPORT_FILE",
    "FORMATS",
    "ONNX_FILE",
    "OPSET",
    "PARITY_RTOL",
    "ExportPlan",
    "ExportedDetector",
    "export_model",
    "is_exported",
    "load_exported",
    "parity",
    "same_ranking",
]
