"""autovi_core.training: run fingerprints, checkpoints, autocast, determinism and numpy module state."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from autovi_core.errors import ConfigError
from autovi_core.training import (
    Checkpointer,
    GlobalTorchRNG,
    autocast,
    deterministic,
    module_state_from_numpy,
    module_state_to_numpy,
    run_fingerprint,
)

HP = {"lr": 1e-3, "epochs": 3, "checkpoint_dir": "/a", "checkpoint_every": 1}
IGNORE = ("checkpoint_dir", "checkpoint_every")


def _images(n: int = 3, value: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(value)
    return [rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(n)]


# --- run_fingerprint ------------------------------------------------------------------------------
def test_fingerprint_is_deterministic_and_changes_with_images_hparams_and_seed() -> None:
    key = run_fingerprint(HP, 0, _images(), IGNORE)
    assert key == run_fingerprint(dict(reversed(list(HP.items()))), 0, _images(), IGNORE)
    assert len(key) == 64 and int(key, 16) >= 0
    others = {
        run_fingerprint(HP, 0, _images(value=1), IGNORE),
        run_fingerprint(HP, 0, _images(n=2), IGNORE),
        run_fingerprint({**HP, "lr": 2e-3}, 0, _images(), IGNORE),
        run_fingerprint(HP, 1, _images(), IGNORE),
        run_fingerprint(HP, 0, _images()),  # the bookkeeping keys count when not ignored
    }
    assert key not in others and len(others) == 5


def test_fingerprint_ignores_the_ignored_keys() -> None:
    key = run_fingerprint(HP, 0, _images(), IGNORE)
    changed = {**HP, "checkpoint_dir": "/elsewhere", "checkpoint_every": 7}
    assert run_fingerprint(changed, 0, _images(), IGNORE) == key
    assert run_fingerprint({k: v for k, v in HP.items() if k not in IGNORE}, 0, _images(), IGNORE) == key


def test_fingerprint_of_a_stacked_array_equals_that_of_its_images() -> None:
    images = _images()
    assert run_fingerprint(HP, 0, np.stack(images)) == run_fingerprint(HP, 0, images)


# --- Checkpointer ------------------------------------------------------------------------------------
def _payload() -> dict[str, object]:
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    return {"model": module.state_dict(), "rng": torch.get_rng_state(), "note": "x", "value": 1.5}


def test_step_numbered_round_trip_with_weights_only(tmp_path: Path) -> None:
    payload = _payload()
    checkpoints = Checkpointer(tmp_path / "ckpt", "key", every=2)
    assert checkpoints.load() is None  # no folder yet
    assert checkpoints.save(2, payload) == tmp_path / "ckpt" / "step-000000002.pt"
    checkpoints.save(4, {**payload, "note": "newer"})
    raw = torch.load(tmp_path / "ckpt" / "step-000000004.pt", weights_only=True)  # plain tensors only
    assert raw["fingerprint"] == "key" and raw["step"] == 4
    loaded = checkpoints.load()
    assert loaded["step"] == 4 and loaded["note"] == "newer" and loaded["value"] == 1.5
    assert all(torch.equal(loaded["model"][k], v) for k, v in payload["model"].items())
    assert torch.equal(loaded["rng"], payload["rng"])


def test_rolling_file_round_trip(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path, "key", every=1, name="run.pt", step_field="epoch")
    checkpoints.save(1, _payload())
    checkpoints.save(2, _payload())
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    assert checkpoints.load()["epoch"] == 2


def test_capture_and_restore_bring_every_state_back(tmp_path: Path) -> None:
    def stateful(seed: int) -> dict:
        torch.manual_seed(seed)
        module = torch.nn.Linear(3, 2)
        optimiser = torch.optim.Adam(module.parameters(), lr=0.1)
        module(torch.ones(1, 3)).sum().backward()
        optimiser.step()
        return {"module": module, "optimiser": optimiser, "generator": torch.Generator().manual_seed(seed), "rng": GlobalTorchRNG}

    checkpoints = Checkpointer(tmp_path, "key", every=1, step_field="epoch")
    assert checkpoints.restore(stateful(0)) == 0  # nothing saved yet
    saved = stateful(1)
    expected_draw = torch.rand(1, generator=torch.Generator().manual_seed(1))
    checkpoints.save(4, checkpoints.capture(saved))
    global_draw = torch.rand(2)

    fresh = stateful(2)
    assert checkpoints.restore(fresh) == 4
    torch.testing.assert_close(fresh["module"].weight, saved["module"].weight)
    assert fresh["optimiser"].state_dict()["state"][0]["step"] == saved["optimiser"].state_dict()["state"][0]["step"]
    torch.testing.assert_close(torch.rand(1, generator=fresh["generator"]), expected_draw)
    torch.testing.assert_close(torch.rand(2), global_draw)  # the global RNG continues where it was saved


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = Checkpointer(tmp_path, "key", every=1)
    checkpoints.save(1, _payload())
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000001.pt"]

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("autovi_core.training.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(2, _payload())
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000001.pt"]  # neither a half file nor a temp


def test_other_fingerprint_is_skipped_when_configured(tmp_path: Path) -> None:
    Checkpointer(tmp_path, "mine", every=1).save(1, {"note": "mine"})
    Checkpointer(tmp_path, "other", every=1).save(2, {"note": "other"})
    resumed = Checkpointer(tmp_path, "mine", on_mismatch="skip").load()
    assert resumed["step"] == 1 and resumed["note"] == "mine"  # the newer, foreign one is passed over
    assert Checkpointer(tmp_path, "third").load() is None


def test_other_fingerprint_is_refused_when_configured(tmp_path: Path) -> None:
    Checkpointer(tmp_path, "other", name="run.pt").save(1, {"note": "other"})
    assert Checkpointer(tmp_path, "mine", name="run.pt", on_mismatch="skip").load() is None
    with pytest.raises(ConfigError, match="checkpoint"):
        Checkpointer(tmp_path, "mine", name="run.pt", on_mismatch="raise").load()
    with pytest.raises(ValueError):
        Checkpointer(tmp_path, "mine", on_mismatch="ignore")  # type: ignore[arg-type]


def test_due_and_disabled_checkpoints(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path, "key", every=3)
    assert [s for s in range(1, 8) if checkpoints.due(s)] == [3, 6]
    assert checkpoints.due(7, last=True)
    assert checkpoints.maybe_save(2, {}) is None and checkpoints.maybe_save(3, {}) is not None
    assert not Checkpointer(tmp_path, "key", every=None).due(3, last=True)
    off = Checkpointer(None, "key", every=1)
    assert not off.due(1) and off.load() is None and off.maybe_save(1, {}) is None


# --- autocast, deterministic, module state ------------------------------------------------------
def test_autocast_is_a_no_op_on_the_cpu() -> None:
    assert isinstance(autocast("cpu"), contextlib.nullcontext)
    torch.manual_seed(0)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu"):
        assert not torch.is_autocast_enabled()
        assert (a @ b).dtype == torch.float32


def test_deterministic_restores_the_previous_flag() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for previous in (False, True):
            torch.use_deterministic_algorithms(previous)
            with deterministic("cpu"):
                assert torch.are_deterministic_algorithms_enabled()
            assert torch.are_deterministic_algorithms_enabled() is previous
        torch.use_deterministic_algorithms(False)
        with pytest.raises(RuntimeError), deterministic("cpu"):
            raise RuntimeError("training failed")
        assert not torch.are_deterministic_algorithms_enabled()  # restored after an error too
    finally:
        torch.use_deterministic_algorithms(before)


def test_module_state_numpy_round_trip() -> None:
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = {**module_state_to_numpy("net", source), "other.weight": np.zeros(1)}
    assert all(isinstance(v, np.ndarray) for v in state.values()) and "net.0.weight" in state
    torch.manual_seed(1)
    target = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    module_state_from_numpy("net", target, state)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
    with pytest.raises(RuntimeError):  # strict: missing keys are an error
        module_state_from_numpy("net", target, {"net.0.weight": state["net.0.weight"]})
