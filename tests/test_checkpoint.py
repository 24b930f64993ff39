"""Checkpoint files: round trip; bad, crafted and old-format checkpoints refused with one line, exit 2, nothing
lost, no code run; the one-off upgrade of an old checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mario_apo.checkpoint import load_checkpoint, save_checkpoint
from mario_apo.cli import main

from conftest import assert_one_line_error, run_train


def test_save_load_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 3)}, "task": "cartpole", "global_step": 42, "rng": torch.get_rng_state()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert loaded["global_step"] == 42 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["corrupt", "other_task"])
def test_bad_checkpoint_on_resume_is_one_line_exit_2_and_nothing_lost(tmp_path, damage):
    run_dir = tmp_path / "run"
    made = run_train(tmp_path, "--name run --algo ppo --task cartpole --total-steps 512", timeout=120)
    assert made.returncode == 0, made.stderr
    checkpoint = run_dir / "checkpoint.pt"
    if damage == "corrupt":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        other = run_train(tmp_path, "--name other --algo ppo --task mountaincar --total-steps 256", timeout=120)
        assert other.returncode == 0, other.stderr
        checkpoint.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    before = checkpoint.read_bytes(), (run_dir / "metrics.jsonl").read_bytes()
    proc = run_train(tmp_path, f"--resume {run_dir}", timeout=120)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "corrupt" if damage == "corrupt" else "from task 'mountaincar'")
    assert (checkpoint.read_bytes(), (run_dir / "metrics.jsonl").read_bytes()) == before


class CreatesAFileWhenUnpickled:
    """What a crafted checkpoint can hold: unpickling it calls ``open(path, "w")``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def cartpole_run(tmp_path) -> Path:
    made = run_train(tmp_path, "--name run --algo apo --task cartpole --total-steps 512", timeout=120)
    assert made.returncode == 0, made.stderr
    return tmp_path / "run"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_crafted_checkpoint_is_refused_and_runs_no_code(cartpole_run, tmp_path, command, capsys):
    marker = tmp_path / "pwned"
    state = torch.load(cartpole_run / "checkpoint.pt", weights_only=True)
    state["payload"] = CreatesAFileWhenUnpickled(marker)
    torch.save(state, cartpole_run / "checkpoint.pt")
    torch.load(cartpole_run / "checkpoint.pt", weights_only=False)  # the payload is live: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    if command == "eval":
        assert main(["eval", str(cartpole_run), "--episodes", "1"]) == 2
        stderr = capsys.readouterr().err
    else:
        proc = run_train(tmp_path, f"--resume {cartpole_run}", timeout=120)
        assert proc.returncode == 2
        stderr = proc.stderr
    assert_one_line_error(stderr, "holds more than tensors and plain values")
    assert not marker.exists()


@pytest.mark.slow
def test_an_old_format_checkpoint_is_refused_until_upgraded_once(cartpole_run, capsys):
    state = torch.load(cartpole_run / "checkpoint.pt", weights_only=True)
    # mario-apo < 0.2 pickled numpy objects: the RNG state tuple and the anchors' arrays
    state["rng"]["numpy"] = np.random.get_state()
    for anchor in state["anchors"]["anchors"]:
        for key in ("frames", "logprobs", "actions"):
            anchor[key] = anchor[key].numpy()
    torch.save(state, cartpole_run / "checkpoint.pt")

    assert main(["eval", str(cartpole_run), "--episodes", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, f"mario-apo upgrade-checkpoint {cartpole_run}")
    assert main(["upgrade-checkpoint", str(cartpole_run)]) == 0
    assert (cartpole_run / "checkpoint.pt.before-upgrade").exists()
    upgraded = load_checkpoint(cartpole_run / "checkpoint.pt")
    assert upgraded["global_step"] == 512 and torch.is_tensor(upgraded["anchors"]["anchors"][0]["frames"])
    assert main(["eval", str(cartpole_run), "--episodes", "1"]) == 0
    capsys.readouterr()
    assert main(["upgrade-checkpoint", str(cartpole_run)]) == 2  # already safe: nothing to do
    assert_one_line_error(capsys.readouterr().err, "already in the safe format")


def test_upgrading_a_missing_or_corrupt_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert main(["upgrade-checkpoint", str(run_dir)]) == 2
    assert_one_line_error(capsys.readouterr().err, "no checkpoint at")
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    assert main(["upgrade-checkpoint", str(run_dir)]) == 2
    assert_one_line_error(capsys.readouterr().err, "corrupt or unreadable")
    assert not (run_dir / "checkpoint.pt.before-upgrade").exists()
