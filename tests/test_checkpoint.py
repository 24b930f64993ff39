"""Checkpoint files: round trip, and bad checkpoints refused with one line, exit 2, nothing lost."""

from __future__ import annotations

import pytest
import torch

from mario_apo.checkpoint import load_checkpoint, save_checkpoint

from conftest import assert_one_line_error, run_train


def test_save_load_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 3)}, "global_step": 42, "rng": torch.get_rng_state()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert loaded["global_step"] == 42 and not (tmp_path / "checkpoint.pt.tmp").exists()


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
