"""``autovi new-plugin``: the generated plugin installs, passes its own tests, runs, and is examples/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autovi_core.errors import ConfigError
from autovi_core.scaffold import PluginNames, new_plugin, render

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "autovi-plugin-pixel-gaussian"
AUTOVI = [sys.executable, "-m", "autovi_core.cli"]
# What installing or testing a plugin in place leaves next to its files.
ARTEFACTS = {"__pycache__", ".pytest_cache", "build", "dist"}


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not any(part in ARTEFACTS or part.endswith(".egg-info") for part in path.relative_to(root).parts)
    }


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_example_plugin_is_exactly_what_new_plugin_writes(tmp_path: Path) -> None:
    written = _files(new_plugin("pixel_gaussian", tmp_path))
    assert set(written) == set(_files(EXAMPLE)), "examples/ and `autovi new-plugin pixel_gaussian` hold different files"
    example = _files(EXAMPLE)
    stale = sorted(name for name in written if written[name] != example[name])
    assert not stale, (
        f"examples/ differs from the templates in {stale}: edit autovi_core/templates/plugin/, then "
        "`rm -r examples/autovi-plugin-pixel-gaussian && autovi new-plugin pixel_gaussian --output examples`"
    )


def test_names_derived_from_the_plugin_name() -> None:
    names = PluginNames.from_name("my_method2")
    assert (names.distribution, names.package, names.class_name) == ("autovi-plugin-my-method2", "autovi_plugin_my_method2", "MyMethod2")
    files = render(names)
    assert set(files) == {
        "pyproject.toml",
        "README.md",
        "tests/test_my_method2.py",
        *(f"autovi_plugin_my_method2/{f}" for f in ("__init__.py", "plugin.py", "detector.py")),
    }
    assert '"autovi-core>=1.1,<2"' in files["pyproject.toml"]
    assert 'my_method2 = "autovi_plugin_my_method2.plugin"' in files["pyproject.toml"]
    assert all("${" not in text for text in files.values())


@pytest.mark.parametrize("name", ["", "MyMethod", "my-method", "2fast", "_private", "my__method", "trailing_", "class", "café"])
def test_invalid_names_are_rejected(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid plugin name"):
        new_plugin(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_writes_the_plugin_and_refuses_to_overwrite(tmp_path: Path) -> None:
    proc = _run([*AUTOVI, "new-plugin", "my_method", "--output", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "autovi-plugin-my-method"
    assert (target / "autovi_plugin_my_method" / "detector.py").is_file()
    before = _files(target)
    (target / "README.md").write_text("mine")
    proc = _run([*AUTOVI, "new-plugin", "my_method", "--output", str(tmp_path)])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "already exists" in proc.stderr, proc.stderr
    assert (target / "README.md").read_text() == "mine" and set(_files(target)) == set(before)
    proc = _run([*AUTOVI, "new-plugin", "My-Method", "--output", str(tmp_path)])
    assert proc.returncode == 2 and "invalid plugin name 'My-Method'" in proc.stderr


def test_generated_plugin_installs_passes_its_tests_and_runs(tmp_path: Path) -> None:
    """Installed with ``pip install --target`` (the project's environment stays as it was) and
    found through PYTHONPATH by the subprocesses, entry point included."""
    source = new_plugin("scaffold_probe", tmp_path)
    site = tmp_path / "site"
    proc = _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(source)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])), AUTOVI_NO_PROGRESS="1")
    env.pop("AUTOVI_PLUGINS", None)

    # its own tests (the conformance suite), against the installed copy: run from elsewhere
    proc = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "pytest"), str(source / "tests")],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout

    listed = {(e["kind"], e["name"]): e for e in json.loads(_run([*AUTOVI, "list", "--json"], env=env).stdout)}
    entry = listed[("detector", "scaffold_probe")]
    assert (entry["distribution"], entry["version"], entry["status"]) == ("autovi-plugin-scaffold-probe", "0.1.0", "ok")

    out = tmp_path / "run"
    proc = _run(
        [
            *AUTOVI,
            "run",
            "-d",
            "scaffold_probe",
            "--category",
            "clip_assembly",
            "--seed",
            "0",
            "--output",
            str(out),
            "--in-process",
            "--device",
            "cpu",
        ],
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["detector"] == "scaffold_probe"
    assert record["metrics"]["image_auroc"] > 0.7
