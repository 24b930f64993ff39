"""Replay of anchored episodes on the real emulator: verified, as video, and refused with one line when it cannot be."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest

from mario_apo.cli import main

from conftest import assert_one_line_error, train_in_process

CLI = [sys.executable, "-m", "mario_apo.cli"]

pytestmark = pytest.mark.slow


def test_replay_in_a_fresh_process_reproduces_the_episode_and_writes_video(apo_run, tmp_path):
    out = tmp_path / "best.mp4"
    proc = subprocess.run(
        CLI + ["replay", str(apo_run), "--out", str(out), "--scale", "1"], capture_output=True, text=True, timeout=300
    )
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
    assert_one_line_error(capsys.readouterr().err, valid)


def test_replay_of_a_missing_run_or_a_run_without_anchors_is_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope")]) == 2
    assert "not a run dir" in capsys.readouterr().err
    ppo_run = tmp_path / "runs"
    assert train_in_process(ppo_run, "--algo ppo --task cartpole --total-steps 256 --name p") == 0
    capsys.readouterr()
    assert main(["replay", str(ppo_run / "p")]) == 2
    assert "has no anchors" in capsys.readouterr().err


def copy_run(run_dir: Path, to: Path, edit_config=None, edit_anchors=None) -> Path:
    """A copy of a run dir, with its config.json and anchors.json optionally edited."""
    to.mkdir()
    (to / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    for name, edit in (("config.json", edit_config), ("anchors.json", edit_anchors)):
        record = json.loads((run_dir / name).read_text())
        (to / name).write_text(json.dumps(edit(record) if edit else record))
    return to


def test_sticky_action_anchors_carry_their_seed(apo_run):
    index = json.loads((apo_run / "anchors.json").read_text())
    assert index["env"]["sticky_actions"] == 0.25
    assert all(isinstance(anchor["sticky_seed"], int) for anchor in index["anchors"])
    assert len({anchor["sticky_seed"] for anchor in index["anchors"]}) == len(index["anchors"])


def test_an_anchor_recorded_before_sticky_actions_replays_on_the_deterministic_env(tmp_path, capsys):
    """anchors.json of an older run: no sticky_actions in its env, no sticky_seed per anchor."""
    from mario_apo.runs import create_run
    from mario_apo.train import train

    from conftest import tiny_run_config

    cfg = tiny_run_config(tmp_path, task="mario:1-1:goal:250", sticky_actions=0.0, video_every=0, name="old")
    run_dir = create_run(cfg)
    train(cfg, run_dir)

    def as_older_version(index):
        del index["env"]["sticky_actions"], index["env"]["stall_steps"]
        for anchor in index["anchors"]:
            del anchor["sticky_seed"]
        return index

    older = copy_run(run_dir, tmp_path / "older", edit_anchors=as_older_version)
    assert main(["replay", str(older), "--out", str(tmp_path / "old.gif"), "--scale", "1"]) == 0
    assert "verified" in capsys.readouterr().out


def test_a_sticky_anchor_without_its_seed_is_refused_with_one_line(apo_run, tmp_path, capsys):
    def drop_seeds(index):
        for anchor in index["anchors"]:
            anchor["sticky_seed"] = None
        return index

    broken = copy_run(apo_run, tmp_path / "broken", edit_anchors=drop_seeds)
    assert main(["replay", str(broken), "--out", str(tmp_path / "never.mp4")]) == 2
    assert_one_line_error(capsys.readouterr().err, "sticky_seed was not recorded")
    assert not (tmp_path / "never.mp4").exists()
