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
