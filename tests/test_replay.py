"""Replay of anchored episodes and evaluation of checkpoints, on the real emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest

from mario_apo.cli import main
from mario_apo.config import AnchorConfig, RunConfig, ppo_defaults

CLI = [sys.executable, "-m", "mario_apo.cli"]


@pytest.fixture(scope="module")
def apo_run(tmp_path_factory) -> Path:
    """A short real APO run on Mario 1-1 (goal:250, so some episodes succeed) with a W&B offline run."""
    from mario_apo.train import create_run, train

    ppo = ppo_defaults("mario")
    ppo.num_envs, ppo.num_steps, ppo.total_steps, ppo.num_minibatches, ppo.update_epochs = 2, 64, 512, 2, 1
    cfg = RunConfig(algo="apo", task="mario:1-1:goal:250", seed=2, ppo=ppo, anchor=AnchorConfig(anchors=3))
    cfg.log.run_dir, cfg.log.progress, cfg.log.video_every = str(tmp_path_factory.mktemp("runs")), False, 1
    run_dir = create_run(cfg)
    train(cfg, run_dir)
    return run_dir


def test_replay_in_a_fresh_process_reproduces_the_episode_and_writes_video(apo_run, tmp_path):
    out = tmp_path / "best.mp4"
    proc = subprocess.run(CLI + ["replay", str(apo_run), "--out", str(out), "--scale", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    best = json.loads((apo_run / "anchors.json").read_text())["anchors"][0]
    assert f"return {best['return']:.3f}, length {best['length']}, max x {best['max_x']}" in proc.stdout
    frames = imageio.mimread(out, memtest=False)
    written = int(proc.stdout.split(" frames -> ")[0].rsplit(" ", 1)[1])
    # the reset frame plus every emulated frame: 4 per step, fewer only on the last step if it ended early
    assert len(frames) == written and 4 * (best["length"] - 1) + 2 <= written <= 4 * best["length"] + 1
    assert frames[0].shape == (240, 256, 3)


def test_replay_gif_at_scale_2(apo_run, tmp_path):
    out = tmp_path / "best.gif"
    assert main(["replay", str(apo_run), "--out", str(out)]) == 0
    frames = imageio.mimread(out, memtest=False)
    assert frames[0].shape[:2] == (480, 512)


def test_tampered_actions_are_a_mismatch_naming_the_step_and_write_no_video(apo_run, tmp_path, capsys):
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (tampered / name).write_bytes((apo_run / name).read_bytes())
    index = json.loads((apo_run / "anchors.json").read_text())
    actions = index["anchors"][0]["actions"]
    k = len(actions) // 2
    actions[k:] = [6] * (len(actions) - k)  # hold left from the middle on
    (tampered / "anchors.json").write_text(json.dumps(index))
    out = tmp_path / "never.mp4"
    assert main(["replay", str(tampered), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and "diverges at step" in err
    step = int(err.split("diverges at step ")[1].split()[0].rstrip(":"))
    assert k < step <= len(actions)
    assert not out.exists() and not list(tmp_path.glob(".never*"))


def test_wandb_offline_run_holds_the_best_anchor_video(apo_run):
    videos = list((apo_run / "wandb").glob("offline-run-*/files/media/videos/**/*.mp4"))
    assert videos, "the new best anchor's video must be logged as W&B media"
    assert list((apo_run / "videos").glob("best-ep*.mp4"))
    logged = [json.loads(line) for line in (apo_run / "metrics.jsonl").open() if "anchor/best_video" in line]
    assert logged and Path(logged[0]["anchor/best_video"]).exists()


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--episode", "99"], "valid are best, all, or a rank"),
        (["--episode", "worst"], "valid are best, all, or a rank"),
        (["--out", "x.avi"], "must end in .mp4 or .gif"),
    ],
)
def test_replay_bad_input_is_one_line_exit_2(apo_run, capsys, argv, valid):
    assert main(["replay", str(apo_run), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and valid in lines[0]


def test_replay_of_a_missing_run_or_a_run_without_anchors_is_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope")]) == 2
    assert "not a run dir" in capsys.readouterr().err
    ppo_run = tmp_path / "runs"
    assert main(["train", "--algo", "ppo", "--task", "cartpole", "--total-steps", "256", "--run-dir", str(ppo_run),
                 "--name", "p", "--wandb", "disabled", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["replay", str(ppo_run / "p")]) == 2
    assert "has no anchors" in capsys.readouterr().err


def test_eval_writes_the_documented_json_and_a_video(apo_run, tmp_path):
    out, video = tmp_path / "eval.json", tmp_path / "first.mp4"
    assert main(["eval", str(apo_run), "--episodes", "2", "--json", str(out), "--video", str(video),
                 "--level", "1-1", "1-2"]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["task"] for r in results] == ["mario:1-1:goal:250", "mario:1-2:goal:250"]
    for result in results:
        for key in ("success_rate", "mean_return", "median_return", "mean_max_x", "mean_length", "episodes", "policy"):
            assert key in result
        assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert len(imageio.mimread(video, memtest=False)) > 4


def test_eval_works_for_cartpole(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--algo", "ppo", "--task", "cartpole", "--total-steps", "2048", "--run-dir", str(runs),
                 "--name", "c", "--wandb", "disabled", "--no-progress"]) == 0
    assert main(["eval", str(runs / "c"), "--episodes", "3", "--sample"]) == 0
    result = json.loads((runs / "c" / "eval.json").read_text())["results"][0]
    assert result["task"] == "cartpole" and result["policy"] == "sample" and result["mean_max_x"] == 0.0


@pytest.mark.parametrize("case", ["missing_run", "other_task_checkpoint", "level_for_cartpole"])
def test_eval_bad_input_is_one_line_exit_2(apo_run, tmp_path, capsys, case):
    runs = tmp_path / "runs"
    if case == "missing_run":
        argv, valid = ["eval", str(tmp_path / "nope")], "not a run dir"
    else:
        assert main(["train", "--algo", "ppo", "--task", "cartpole", "--total-steps", "256", "--run-dir", str(runs),
                     "--name", "c", "--wandb", "disabled", "--no-progress"]) == 0
        capsys.readouterr()
        if case == "other_task_checkpoint":
            argv, valid = ["eval", str(apo_run), "--checkpoint", str(runs / "c" / "checkpoint.pt")], "from task 'cartpole'"
        else:
            argv, valid = ["eval", str(runs / "c"), "--level", "1-1"], "--level is for Mario runs"
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and valid in lines[0], lines
