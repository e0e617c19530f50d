"""The core's shared helpers: image files, atomic writes, caching by fingerprint, device resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from autovi_core.cache import load_or_build
from autovi_core.device import resolve_device
from autovi_core.errors import ConfigError
from autovi_core.files import atomic_write, is_image_file


def test_image_files_by_suffix_in_any_case_but_never_hidden() -> None:
    assert is_image_file(Path("a/001.png")) and is_image_file("b/002.JPG") and is_image_file("c.TiFF")
    assert not is_image_file("mask.npy") and not is_image_file(".001.png") and not is_image_file("README")


def test_atomic_write_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "value.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp.name.startswith(".")
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["value.txt"]  # no temporary left behind


def test_atomic_write_of_a_folder_replaces_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for text in ("old", "new"):
        with atomic_write(target) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(text)
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "config.json").read_text() == "new"


def test_load_or_build_builds_once_and_rebuilds_unreadable_entries(tmp_path: Path) -> None:
    builds: list[int] = []

    def build() -> str:
        builds.append(1)
        return "artifact"

    def load(path: Path) -> str:
        text = path.read_text()
        if text != "artifact":
            raise ValueError("corrupt")
        return text

    def save(value: str, tmp: Path) -> None:
        tmp.write_text(value)

    path = tmp_path / "cache" / "thing-0123abcd.txt"
    assert load_or_build(path, build, load=load, save=save) == ("artifact", False)
    assert load_or_build(path, build, load=load, save=save) == ("artifact", True) and len(builds) == 1
    path.write_text("garbage")
    assert load_or_build(path, build, load=load, save=save) == ("artifact", False) and path.read_text() == "artifact"
    other = tmp_path / "cache" / "other.txt"
    assert load_or_build(other, build, load=load, save=save, use_cache=False) == ("artifact", False)
    assert not other.exists() and len(builds) == 3


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda:0")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
