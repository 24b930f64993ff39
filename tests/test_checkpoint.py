"""Checkpoints: round trip, kill -9 and resume, Ctrl-C, NaN loss, a dead env worker, bad checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from mario_apo.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

TRAIN = [sys.executable, "-m", "mario_apo.cli", "train", "--wandb", "disabled", "--no-progress"]


def start_train(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        TRAIN + ["--run-dir", str(tmp_path), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_checkpoint(path: Path, min_update: int, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                state = None  # never half-written (atomic rename), but be patient with the filesystem
            if state and state["update"] >= min_update:
                return state
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint with update >= {min_update} within {timeout}s")


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["global_step"] for line in (run_dir / "metrics.jsonl").open() if "charts/SPS" in line]


def test_save_load_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 3)}, "global_step": 42, "rng": torch.get_rng_state()}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert loaded["global_step"] == 42 and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_kill_9_then_resume_continues_from_the_saved_step(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo", "apo", "--task", "cartpole", "--total-steps", "40960", "--name", "run",
                       "--checkpoint-every", "2")
    saved = wait_for_checkpoint(run_dir / "checkpoint.pt", 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(run_dir / "checkpoint.pt")  # the newest one that made it to disk
    assert 0 < saved["global_step"] < 40960 and saved["anchors"]["anchors"]

    resumed = subprocess.run(TRAIN + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 40960
    steps = metric_steps(run_dir)
    # every update logged exactly once: lines the killed process wrote after its checkpoint were dropped
    assert steps == list(range(256, 40960 + 1, 256))
    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final["update"] == 160 and final["episodes_done"] > saved["episodes_done"]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo", "ppo", "--task", "cartpole", "--total-steps", "1000000", "--name", "run",
                       "--checkpoint-every", "1000")
    while not (run_dir / "metrics.jsonl").exists() or len(metric_steps(run_dir)) < 3:
        assert proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] and "stopping after this update" in err
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["global_step"] == summary["global_step"] == metric_steps(run_dir)[-1]


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        TRAIN + ["--run-dir", str(tmp_path), "--name", "run", "--algo", "ppo", "--task", "cartpole",
                 "--total-steps", "20480", "--lr", "1e30", "--no-anneal-lr", "--max-grad-norm", "1e30",
                 "--update-epochs", "1", "--checkpoint-every", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    # one Adam step of size 1e30 leaves finite but absurd weights; the next forward pass overflows
    assert "non-finite" in proc.stderr and "last good checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr  # run dir + the reason
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert 0 < state["global_step"] < 20480
    assert all(torch.isfinite(p).all() for p in state["model"].values())


def test_dead_env_worker_ends_the_run_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo", "ppo", "--level", "1-1", "--num-envs", "2", "--num-steps", "32",
                       "--num-minibatches", "2", "--total-steps", "100000", "--name", "run", "--checkpoint-every", "1")
    wait_for_checkpoint(run_dir / "checkpoint.pt", 1, proc)
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "env worker failed" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoint.pt")["global_step"] > 0


@pytest.mark.parametrize("damage", ["corrupt", "other_task"])
def test_bad_checkpoint_on_resume_is_one_line_exit_2_and_nothing_lost(tmp_path, damage):
    run_dir = tmp_path / "run"
    made = subprocess.run(TRAIN + ["--run-dir", str(tmp_path), "--name", "run", "--algo", "ppo", "--task", "cartpole",
                                   "--total-steps", "512"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    checkpoint = run_dir / "checkpoint.pt"
    if damage == "corrupt":
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        other = subprocess.run(TRAIN + ["--run-dir", str(tmp_path), "--name", "other", "--algo", "ppo",
                                        "--task", "mountaincar", "--total-steps", "256"],
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0, other.stderr
        checkpoint.write_bytes((tmp_path / "other" / "checkpoint.pt").read_bytes())
    before = checkpoint.read_bytes(), (run_dir / "metrics.jsonl").read_bytes()
    proc = subprocess.run(TRAIN + ["--resume", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mario-apo: error:"), proc.stderr
    assert ("corrupt" if damage == "corrupt" else "from task 'mountaincar'") in lines[0]
    assert (checkpoint.read_bytes(), (run_dir / "metrics.jsonl").read_bytes()) == before
