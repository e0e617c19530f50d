"""The core's own datasets and metrics under the conformance kit (autovi_core.testing), on tiny
on-disk trees built with the helpers of test_dataset_readers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_dataset_readers import make_autovi, make_folder_category, make_mvtec_ad, make_visa, rgb, save

from autovi_core.dataset import DatasetProvider
from autovi_core.testing import DatasetConformance, MetricConformance


# --- datasets ------------------------------------------------------------------------------------
class TestSyntheticDataset(DatasetConformance):
    dataset = "synthetic"
    category = "clip_assembly"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        return directory  # generated there on first load

    @classmethod
    def make_provider(cls) -> DatasetProvider:
        from autovi_core.datasets.synthetic import SyntheticCounts, SyntheticDataset

        return SyntheticDataset(size=32, counts=SyntheticCounts(train=3, test_good=2, per_defect=1, multiple=1))


class TestAutoVIDataset(DatasetConformance):
    dataset = "autovi"
    category = "pipe_clip"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        make_autovi(directory / "pipe_clip", (400, 400))  # AutoVI's native size for pipe_clip
        return directory


class TestMVTecLOCODataset(DatasetConformance):
    dataset = "mvtec_loco"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        category = make_autovi(directory / "juice_bottle", (24, 32))
        save(category / "validation" / "good" / "000.png", rgb((24, 32)))
        return directory


class TestMVTecADDataset(DatasetConformance):
    dataset = "mvtec_ad"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        make_mvtec_ad(directory / "bottle")
        make_mvtec_ad(directory / "cable", (16, 16))
        return directory


class TestVisADataset(DatasetConformance):
    dataset = "visa"
    category = "pcb1"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        return make_visa(directory)


class TestFolderDataset(DatasetConformance):
    dataset = "folder"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        make_folder_category(directory / "widget")
        return directory


class TestFolderDatasetWithoutMasks(DatasetConformance):
    dataset = "folder"

    @classmethod
    def build_root(cls, directory: Path) -> Path:
        category = make_folder_category(directory / "widget")
        shutil.rmtree(category / "ground_truth")
        return category  # the root may be the category itself


# --- metrics -------------------------------------------------------------------------------------
class TestImageClassificationMetric(MetricConformance):
    metric = "image_classification"
    keys = ("image_auroc", "image_ap", "tpr_at_tnr", "calibrated")
    auroc_keys = ("image_auroc",)
    score_valued_keys = ("threshold",)


class TestLocalisationMetric(MetricConformance):
    metric = "localisation"
    keys = ("mode", "auc_spro", "per_defect_type", "per_subdir", "pixel_auroc", "aupro_0.3")
    auroc_keys = ("pixel_auroc",)


# --- start-up ------------------------------------------------------------------------------------
def test_loading_every_plugin_imports_no_heavy_module() -> None:
    """What `autovi list` does (discover every plugin, call every registration hook, print the
    table) imports neither torch nor scipy nor numba; see benchmarks/bench_cli_startup.py for the time."""
    code = textwrap.dedent(
        """
        import sys
        from autovi_core.cli import main
        sys.argv = ["autovi", "list", "--json"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        heavy = sorted(m for m in ("torch", "scipy", "numba", "timm", "sklearn") if m in sys.modules)
        assert not heavy, f"autovi list imported {heavy}"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list"], {"debug": False, "plugins": None, "exclude": None, "as_json": False}),
        (["--debug", "list", "--json"], {"debug": True, "plugins": None, "exclude": None, "as_json": True}),
        (["--plugins", "a,b", "--exclude=c", "list"], {"debug": False, "plugins": "a,b", "exclude": "c", "as_json": False}),
        (["list", "--help"], None),
        (["list", "--json", "x"], None),
        (["--plugins"], None),
        (["--version", "list"], None),
        (["run", "-d", "padim"], None),
        ([], None),
    ],
)
def test_autovi_list_fast_path_parses_like_typer(monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict | None) -> None:
    """`autovi [--debug] [--plugins P] [--exclude E] list [--json]` skips typer; anything else goes through it."""
    from autovi_core import cli

    seen: dict = {}
    monkeypatch.setattr(cli, "_main", lambda **options: seen.update(options))
    monkeypatch.setattr(cli, "list_plugins", lambda as_json: seen.update(as_json=as_json))
    assert cli._fast_list(argv) is (expected is not None)
    assert seen == (expected or {})


_EVALUATE_ARGS = ["--dataset-root", "R", "--category", "c", "--maps", "M"]
_EVALUATED = {"dataset_root": Path("R"), "category": "c", "maps": Path("M"), "spro_mode": "exact", "output": None}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["evaluate", *_EVALUATE_ARGS], {"debug": False, "plugins": None, "exclude": None, **_EVALUATED}),
        (
            ["--debug", "evaluate", "--maps=M", "--spro-mode", "official", "--category", "c", "--output", "o.json", "--dataset-root", "R"],
            {"debug": True, "plugins": None, "exclude": None, **_EVALUATED, "spro_mode": "official", "output": Path("o.json")},
        ),
        (["--plugins=a", "evaluate", *_EVALUATE_ARGS], {"debug": False, "plugins": "a", "exclude": None, **_EVALUATED}),
        (["evaluate", *_EVALUATE_ARGS, "--help"], None),
        (["evaluate", "--help"], None),
        (["evaluate", *_EVALUATE_ARGS[:4]], None),  # --maps missing: typer's usage error
        (["evaluate", *_EVALUATE_ARGS, "--category", "d"], None),  # repeated
        (["evaluate", *_EVALUATE_ARGS, "--spro-mode"], None),  # no value
        (["evaluate", "--dataset-root", "-R", *_EVALUATE_ARGS[2:]], None),  # a value like an option
        (["evaluate", *_EVALUATE_ARGS, "--seed", "1"], None),
        (["list"], None),
        (["--version", "evaluate", *_EVALUATE_ARGS], None),
    ],
)
def test_autovi_evaluate_fast_path_parses_like_typer(monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: dict | None) -> None:
    """`autovi [global options] evaluate --dataset-root D --category C --maps M [--spro-mode S] [--output F]`
    skips typer's parsing (a tenth of the whole evaluation); anything else goes through typer."""
    from autovi_core import cli

    seen: dict = {}
    monkeypatch.setattr(cli, "_main", lambda **options: seen.update(options))
    monkeypatch.setattr(cli, "evaluate", lambda **values: seen.update(values))
    assert cli._fast_evaluate(argv) is (expected is not None)
    assert seen == (expected or {})
