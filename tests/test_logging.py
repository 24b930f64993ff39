"""What a run logs besides metrics.jsonl: TensorBoard event files, read back, across a resume; frames."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import metric_steps, run_train, start_train, wait_for_checkpoint

pytestmark = pytest.mark.slow


def scalar_steps(run_dir, name: str) -> list[int]:
    pytest.importorskip("tensorboard", reason="TensorBoard is the 'tensorboard' extra: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [event.step for event in events.Scalars(name)]


def test_tensorboard_events_match_metrics_jsonl_across_kill_9_and_resume(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard is the 'tensorboard' extra: pip install -e '.[tensorboard]'")
    run_dir = tmp_path / "run"
    proc = start_train(
        tmp_path, "--algo ppo --task cartpole --total-steps 1000000 --name run --tensorboard --checkpoint-every 3"
    )
    saved = wait_for_checkpoint(run_dir / "checkpoint.pt", 3, proc)
    while metric_steps(run_dir)[-1] <= saved["global_step"]:  # updates past the checkpoint, to be dropped
        assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_train(tmp_path, f"--resume {run_dir} --total-steps 6144")
    assert resumed.returncode == 0, resumed.stderr
    steps = metric_steps(run_dir)
    assert steps == list(range(256, 6144 + 1, 256))
    assert scalar_steps(run_dir, "charts/SPS") == steps  # each step once: the killed process's extra events purged
    episodes = [json.loads(line) for line in (run_dir / "metrics.jsonl").open() if "charts/episodic_return" in line]
    assert len(scalar_steps(run_dir, "charts/episodic_return")) == len(episodes)


def test_frames_are_logged_as_agent_steps_times_frame_skip(tmp_path):
    flags = "--name m --level 1-1 --num-envs 2 --num-steps 32 --num-minibatches 2 --total-steps 128"
    made = run_train(tmp_path, f"{flags} --final-eval-episodes 0 --final-eval-greedy 0")  # frames are the point
    assert made.returncode == 0, made.stderr
    updates = [json.loads(line) for line in (tmp_path / "m" / "metrics.jsonl").open() if "charts/SPS" in line]
    assert [u["charts/frames"] for u in updates] == [4 * u["global_step"] for u in updates] == [256, 512]
