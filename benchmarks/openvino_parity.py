"""OpenVINO against torch, per exported detector: the map error relative to the largest torch map
value and whether the scores rank alike, on parts the graph resizes up (at the training size) and
on parts it shrinks (docs/deploy.md, 'OpenVINO').

    .venv/bin/python benchmarks/openvino_parity.py [DETECTOR ...]   (default: every exported detector)

Fits the tiny models of tests/test_export.py (seeded synthetic parts, a few training steps).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_export import DETECTORS, OTHER, part, probe_images  # noqa: E402

from autovi_core.deploy import fit_model  # noqa: E402
from autovi_core.export import export_model, load_exported, parity  # noqa: E402
from autovi_core.model_folder import load_model_folder  # noqa: E402


def main(names: list[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="openvino-parity-"))
    good = base / "good"
    good.mkdir()
    for i in range(8):
        Image.fromarray(part(i)).save(good / f"{i:02d}.png")
    print("| detector | input | relative map error | scores rank alike |\n|---|---|---:|---|")
    for name in names:
        overrides = {key: str(value) for key, value in DETECTORS[name].items()}
        model = fit_model(detector=name, root=good, category=None, output=base / name, overrides=overrides, device="cpu", holdout=0.25)
        exported = export_model(model, output=base / f"{name}-openvino", fmt="openvino")
        torch_model, openvino_model = load_model_folder(model).detector, load_exported(exported).detector
        for label, images in (("resized up", probe_images()), ("shrunk", [part(200 + i, OTHER, defect=4 * i) for i in range(3)])):
            size = images[0].shape[:2]
            reference, got = torch_model.predict(images, size), openvino_model.predict(images, size)
            check = parity(reference, got.scores, got.maps)
            print(f"| {name} | {label} {size[1]}x{size[0]} | {check['relative_map_diff']:.2e} | {check['same_score_ranking']} |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(DETECTORS))
