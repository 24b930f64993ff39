"""A run's life in real processes: create, kill -9 and resume, Ctrl-C, NaN loss, a dead env worker."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest
import torch

from mario_apo.checkpoint import load_checkpoint
from mario_apo.cli import main
from mario_apo.errors import CheckpointError
from mario_apo.runs import create_run, load_run_config

from conftest import metric_steps, run_train, start_train, wait_for_checkpoint


def test_create_run_writes_the_resolved_config_and_load_reads_it_back(tiny_config, tmp_path):
    cfg = tiny_config(task="cartpole", algo="ppo", name="r", beta=0.3)
    run_dir = create_run(cfg)
    record = json.loads((run_dir / "config.json").read_text())
    assert record["versions"]["torch"] == torch.__version__ and len(record["wandb_id"]) == 12
    assert load_run_config(run_dir) == cfg


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("precious")
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), "--name", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "precious"


def test_a_corrupt_config_json_is_a_checkpoint_error(tmp_path):
    (tmp_path / "config.json").write_text('{"algo": "apo"')
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run_config(tmp_path)


@pytest.mark.slow
def test_kill_9_then_resume_continues_from_the_saved_step(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo apo --task cartpole --total-steps 40960 --name run --checkpoint-every 2")
    saved = wait_for_checkpoint(run_dir / "checkpoint.pt", 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(run_dir / "checkpoint.pt")  # the newest one that made it to disk
    assert 0 < saved["global_step"] < 40960 and saved["anchors"]["anchors"]

    resumed = run_train(tmp_path, f"--resume {run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 40960
    steps = metric_steps(run_dir)
    # every update logged exactly once: lines the killed process wrote after its checkpoint were dropped
    assert steps == list(range(256, 40960 + 1, 256))
    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final["update"] == 160 and final["episodes_done"] > saved["episodes_done"]


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo ppo --task cartpole --total-steps 1000000 --name run --checkpoint-every 1000")
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


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    flags = "--algo ppo --task cartpole --total-steps 20480 --lr 1e30 --no-anneal-lr --max-grad-norm 1e30"
    proc = run_train(tmp_path, f"--name run {flags} --update-epochs 1 --checkpoint-every 1")
    assert proc.returncode == 1, proc.stderr
    # one Adam step of size 1e30 leaves finite but absurd weights; the next forward pass overflows
    assert "non-finite" in proc.stderr and "last good checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr  # run dir + the reason
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert 0 < state["global_step"] < 20480
    assert all(torch.isfinite(p).all() for p in state["model"].values())


@pytest.mark.slow
def test_dead_env_worker_ends_the_run_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    flags = "--algo ppo --level 1-1 --num-envs 2 --num-steps 32 --num-minibatches 2 --total-steps 100000"
    proc = start_train(tmp_path, f"{flags} --name run --checkpoint-every 1")
    wait_for_checkpoint(run_dir / "checkpoint.pt", 1, proc)
    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    os.kill(workers[0].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "env worker failed" in err and "Traceback" not in err
    assert load_checkpoint(run_dir / "checkpoint.pt")["global_step"] > 0
