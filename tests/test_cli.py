"""The console script: listings, bench output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mario_apo.cli import main


def test_tasks_lists_levels_rewards_and_classic_tasks(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for text in ("mario:W-S", "8-4", "goal:X", "sparse", "cartpole", "mountaincar", "complex (12)"):
        assert text in out


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["bench", "env", "--task", "mario:9-9"], "valid levels"),
        (["bench", "env", "--task", "mario:1-5"], "valid levels"),
        (["bench", "env", "--task", "mario:1-1:goal:-5"], "valid modes"),
        (["bench", "env", "--task", "mario:1-1:goal:abc"], "valid modes"),
        (["bench", "env", "--task", "tetris"], "valid tasks"),
        (["bench", "env", "--task", "cartpole"], "must be a Mario task"),
        (["bench", "env", "--num-envs", "0"], "positive integer"),
        (["bench", "env", "--num-envs", "2,0"], "positive integer"),
        (["bench", "env", "--actions", "turbo"], "valid sets"),
        (["bench", "env", "--seconds", "0"], "must be positive"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, valid, tmp_path):
    out_json = tmp_path / "never.json"
    assert main(argv + (["--json", str(out_json)] if argv[0] == "bench" else [])) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mario-apo: error:") and valid in lines[0]
    assert "Traceback" not in captured.err and not out_json.exists()


def test_console_script_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "mario_apo.cli", "bench", "env", "--task", "mario:1-1:goal:abc"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bench_env_writes_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert main(["bench", "env", "--seconds", "0.3", "--num-envs", "1,2", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["raw_emulator_frames_per_s"] > 0 and result["wrapped_env_steps_per_s"] > 0
    assert set(result["vector_env_steps_per_s"]) == {"1", "2"}
    assert set(result["bars"]) == {"wrapped_vs_raw", "vector_vs_cores_x_single"}
    assert "raw emulator" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--algo", "sac"], "invalid choice"),
        (["--beta", "-0.1"], ">= 0"),
        (["--anchors", "0"], "positive integer"),
        (["--task", "cartpole", "--total-steps", "100"], "less than one rollout"),
        (["--level", "9-9"], "valid levels"),
        (["--level", "1-1", "--reward", "goal:abc"], "valid modes"),
        (["--level", "1-1", "--task", "cartpole"], "not both"),
        (["--resume", "does/not/exist"], "not a run dir"),
    ],
)
def test_train_bad_input_is_one_line_exit_2_and_creates_no_run(capsys, tmp_path, argv, valid):
    assert main(["train", "--run-dir", str(tmp_path / "runs"), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mario-apo: error:") and valid in lines[0], lines
    assert not (tmp_path / "runs").exists()


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("precious")
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), "--name", "taken"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "keep.txt").read_text() == "precious"
