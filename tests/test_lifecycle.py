"""A run's life in real processes: create, kill -9 and resume, Ctrl-C and SIGTERM, NaN loss, a dead env
worker, a locked run dir, a failed write, a torn metrics line."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time

import psutil
import pytest
import torch

from mario_apo.checkpoint import load_checkpoint
from mario_apo.cli import main
from mario_apo.errors import CheckpointError
from mario_apo.runs import create_run, load_run_config, lock_holder

from conftest import TRAIN, assert_one_line_error, metric_steps, run_train, start_train, wait_for_checkpoint


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
    proc = start_train(tmp_path, "--algo apo --task cartpole --total-steps 12800 --name run --checkpoint-every 2")
    saved = wait_for_checkpoint(run_dir / "checkpoint.pt", 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(run_dir / "checkpoint.pt")  # the newest one that made it to disk
    assert 0 < saved["global_step"] < 12800 and saved["anchors"]["anchors"]

    resumed = run_train(tmp_path, f"--resume {run_dir}")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 12800
    steps = metric_steps(run_dir)
    # every update logged exactly once: lines the killed process wrote after its checkpoint were dropped
    assert steps == list(range(256, 12800 + 1, 256))
    final = load_checkpoint(run_dir / "checkpoint.pt")
    assert final["update"] == 50 and final["episodes_done"] > saved["episodes_done"]


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


def wait_for_updates(run_dir, count: int, proc, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (run_dir / "metrics.jsonl").exists() or len(metric_steps(run_dir)) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"fewer than {count} updates within {timeout}s"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_checkpoints_at_that_update_and_resume_continues_from_it(tmp_path, stop):
    run_dir = tmp_path / "run"
    proc = start_train(tmp_path, "--algo apo --task cartpole --total-steps 1000000 --name run --checkpoint-every 1000")
    wait_for_updates(run_dir, 3, proc)
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] and f"{stop.name}: stopping after this update" in err
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["global_step"] == summary["global_step"] == metric_steps(run_dir)[-1]

    target = state["global_step"] + 4 * 256
    resumed = run_train(tmp_path, f"--resume {run_dir} --total-steps {target}")
    assert resumed.returncode == 0, resumed.stderr
    steps = metric_steps(run_dir)
    assert steps == list(range(256, target + 1, 256))  # continued from the SIGTERM checkpoint, nothing repeated


@pytest.mark.slow
def test_a_second_process_on_a_locked_run_dir_is_refused_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    first = start_train(tmp_path, "--algo ppo --task cartpole --total-steps 1000000 --name run --checkpoint-every 1")
    wait_for_checkpoint(run_dir / "checkpoint.pt", 1, first)
    first.send_signal(signal.SIGSTOP)  # hold still, so that any write seen below is the second process's
    try:
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
        second = run_train(tmp_path, f"--resume {run_dir}", timeout=60)
        after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert_one_line_error(second.stderr, f"is being trained by pid {first.pid} on host ")
    assert after == before
    first.send_signal(signal.SIGKILL)  # the OS releases the lock with the process: never a stale lock
    first.wait()
    assert lock_holder(run_dir) is None
    assert run_train(tmp_path, f"--resume {run_dir} --total-steps 512").returncode == 0


def limit_file_size(max_bytes: int):
    """preexec_fn: files this process writes may not grow past ``max_bytes`` (writes past it fail with EFBIG)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("failing", ["checkpoint", "metrics line"])
def test_a_failed_write_stops_the_run_with_one_line_and_loses_nothing(tmp_path, failing):
    run_dir = tmp_path / "run"
    made = run_train(tmp_path, "--name run --algo apo --task cartpole --total-steps 2048 --checkpoint-every 2")
    assert made.returncode == 0, made.stderr
    (run_dir / "summary.json").unlink()  # so that the resumed run's first write is a metrics line or a checkpoint
    good = load_checkpoint(run_dir / "checkpoint.pt")
    checkpoint_size, metrics_size = (
        (run_dir / "checkpoint.pt").stat().st_size,
        (run_dir / "metrics.jsonl").stat().st_size,
    )
    # a file size limit (as a full disk would) that the next checkpoint, or the next metrics line, hits
    limit = checkpoint_size // 2 if failing == "checkpoint" else metrics_size + 50
    command = [*TRAIN, "--resume", str(run_dir), "--total-steps", "4096"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size(limit))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and f"could not write the {failing}" in lines[0] or f"could not write a {failing}" in lines[0]
    )
    assert "File too large" in lines[0] and "last good checkpoint" in lines[0], lines
    kept = load_checkpoint(run_dir / "checkpoint.pt")  # the previous checkpoint is intact
    assert kept["global_step"] == good["global_step"] == 2048 and not (run_dir / "checkpoint.pt.tmp").exists()
    # with the space back, the run resumes and finishes, every update logged once
    resumed = run_train(tmp_path, f"--resume {run_dir} --total-steps 4096")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_steps(run_dir) == list(range(256, 4096 + 1, 256))


@pytest.mark.slow
def test_a_torn_last_metrics_line_is_tolerated_by_resume_and_report(tmp_path):
    from mario_apo.report import load_run
    from mario_apo.suite import RunSpec

    run_dir = tmp_path / "run"
    assert run_train(tmp_path, "--name run --algo ppo --task cartpole --total-steps 1024").returncode == 0
    (run_dir / "summary.json").unlink()
    with (run_dir / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"global_step": 1280, "charts/SP')  # what kill -9 in the middle of a write leaves
    assert load_run(run_dir, RunSpec("cartpole", "ppo", 1)).steps.tolist() == [256, 512, 768, 1024]
    resumed = run_train(tmp_path, f"--resume {run_dir} --total-steps 1536")
    assert resumed.returncode == 0, resumed.stderr
    assert metric_steps(run_dir) == [256, 512, 768, 1024, 1280, 1536]


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_a_mario_run_with_a_checkpoint(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, the env workers too: the run must still
    finish its update and checkpoint, not die of an interrupted worker."""
    run_dir = tmp_path / "run"
    flags = "--algo ppo --level 1-1 --num-envs 2 --num-steps 32 --num-minibatches 2 --total-steps 100000"
    command = TRAIN + ["--run-dir", str(tmp_path), *f"{flags} --name run --checkpoint-every 1000".split()]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_updates(run_dir, 2, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "env worker failed" not in err and "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (
        summary["interrupted"] and load_checkpoint(run_dir / "checkpoint.pt")["global_step"] == summary["global_step"]
    )
