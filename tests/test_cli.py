"""The console script: listings, bench output, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mario_apo.cli import main

from conftest import assert_one_line_error


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
        (["bench", "env", "--task", "cartpole"], "must be a Mario (mario:W-S[:REWARD]) or MiniGrid"),
        (["bench", "env", "--num-envs", "0"], "positive integer"),
        (["bench", "env", "--num-envs", "2,0"], "positive integer"),
        (["bench", "env", "--actions", "turbo"], "choose from 'right', 'simple', 'complex'"),
        (["bench", "env", "--seconds", "0"], "must be positive"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, valid, tmp_path):
    out_json = tmp_path / "never.json"
    assert main(argv + (["--json", str(out_json)] if argv[0] == "bench" else [])) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, valid)
    assert "Traceback" not in captured.err and not out_json.exists()


def test_console_script_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "mario_apo.cli", "bench", "env", "--task", "mario:1-1:goal:abc"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_bench_env_writes_table_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    assert main(["bench", "env", "--seconds", "0.3", "--num-envs", "1,2", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["raw_frames_per_s"] > 0 and result["wrapped_env_steps_per_s"] > 0
    assert set(result["vector_env_steps_per_s"]) == {"1", "2"}
    assert set(result["bars"]) == {"wrapped_vs_raw", "vector_vs_cores_x_single"}
    assert "raw emulator" in capsys.readouterr().out


def test_bench_env_measures_a_minigrid_task(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["bench", "env", "--task", "minigrid:DoorKey-8x8", "--seconds", "0.2", "--num-envs", "1,4"]
    assert main([*argv, "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["frames_per_step"] == 1 and result["raw_frames_per_s"] > result["vector_env_steps_per_s"]["4"] / 10
    assert "raw env (1 process)" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_train_reports_sps_and_where_the_time_goes_per_env_count(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["bench", "train", "--num-envs", "1,2", "--mario-steps", "1024", "--skip-sb3", "--skip-cartpole"]
    assert main([*argv, "--device", "cpu", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    assert result["machine"]["device"] == "cpu" and result["machine"]["cores"] >= 1
    jobs = {(job["algo"], job["num_envs"]): job for job in result["jobs"]}
    assert set(jobs) == {("ppo", 1), ("ppo", 2), ("apo", 1)}  # APO at the first env count
    for job in jobs.values():
        assert job["sps"] > 0 and 0.9 < sum(job["stages"].values()) <= 1.0 + 1e-9
        assert job["learner_fraction"] == pytest.approx(job["stages"]["inference"] + job["stages"]["learn"])
    assert set(result["bars"]) == {"ours_apo_vs_ours_ppo"}
    assert "ours ppo mario:1-1:dense N=2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--algo", "sac"], "invalid choice"),
        (["--beta", "-0.1"], ">= 0"),
        (["--anchor-target", "taken", "--anchor-kl", "reverse"], "use --anchor-kl forward"),
        (["--anchor-target", "best"], "choose from 'recorded', 'taken'"),
        (["--device", "tpu"], "valid are auto"),
        (["--algo", "sil", "--sil-updates", "161"], "an update has 160"),
        (["--sil-batch", "0"], "positive integer"),
        (["--task", "cartpole", "--total-steps", "1024", "--final-eval-at", "2048"], "lies past --total-steps"),
        (["--final-eval-at", "1000,x"], "positive integer"),
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
    assert_one_line_error(capsys.readouterr().err, valid)
    assert not (tmp_path / "runs").exists()


def test_every_config_field_is_a_train_flag_with_its_help_and_default(capsys):
    from mario_apo.config import AnchorConfig, EnvConfig, LogConfig, PPOConfig, RunConfig
    from mario_apo.flags import config_fields, flag_dest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for cls in (RunConfig, EnvConfig, PPOConfig, AnchorConfig, LogConfig):
        for f in config_fields(cls):
            flag = "--" + flag_dest(f).replace("_", "-")
            assert flag in help_text, flag
            assert " ".join(f.metadata["help"].split())[:30] in help_text, flag
    # PPO defaults are shown per task family, from the one table
    assert "Adam step size. Default: mario 0.0001, cartpole 0.001, mountaincar 0.0003" in help_text
    assert "--no-anneal-lr" in help_text and "--actions {right,simple,complex}" in help_text


def test_flags_resolve_onto_the_task_familys_defaults(tmp_path):
    from mario_apo.flags import resolve_run_config, train_parser

    args = train_parser().parse_args(
        [
            "--task",
            "mountaincar",
            "--actions",
            "right",
            "--lr",
            "1e-3",
            "--no-anneal-lr",
            "--wandb-tags",
            "a,b",
            "--beta",
            "0.3",
            "--no-progress",
            "--eval-every",
            "5",
        ]
    )
    cfg = resolve_run_config(args)
    assert cfg.task == "mountaincar" and cfg.env.action_set == "right"
    assert cfg.ppo.learning_rate == 1e-3 and cfg.ppo.anneal_lr is False
    assert cfg.ppo.num_envs == 16 and cfg.ppo.gae_lambda == 0.98  # mountaincar's, not Mario's
    assert cfg.anchor.beta == 0.3 and cfg.log.wandb_tags == ["a", "b"] and cfg.log.progress is False
    assert cfg.log.eval_every == 5 and cfg.log.wandb == "offline"


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--eval-every", "-1"], "integer >= 0"),
        (["--actions", "turbo"], "invalid choice"),
        (["--anchor-kl", "sideways"], "invalid choice"),
        (["--lr", "0"], "number > 0"),
    ],
)
def test_generated_flags_check_their_range(capsys, tmp_path, argv, valid):
    assert main(["train", "--run-dir", str(tmp_path / "runs"), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, valid)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_bench_parity_trains_both_implementations_and_pairs_them_by_seed(tmp_path, capsys):
    pytest.importorskip("stable_baselines3", reason="the bench extra (pip install -e '.[bench]') has SB3")
    out_json, kept = tmp_path / "parity.json", tmp_path / "kept"
    argv = ["bench", "parity", "--cartpole-steps", "0", "--mountaincar-steps", "0", "--minigrid-steps", "2048"]
    argv += ["--seeds", "2", "--episodes", "3", "--greedy-episodes", "2", "--json", str(out_json)]
    assert main([*argv, "--keep-jobs", str(kept)]) == 0
    result = json.loads(out_json.read_text())
    assert [(j["impl"], j["seed"]) for j in result["jobs"]] == [("ours", 1), ("sb3", 1), ("ours", 2), ("sb3", 2)]
    assert list(result["tasks"]) == ["minigrid:DoorKey-5x5"]
    row = result["tasks"]["minigrid:DoorKey-5x5"]
    assert set(row) == {"total_steps", "seeds", "sampled", "greedy", "met"}
    ours, sb3 = row["sampled"]["ours"], row["sampled"]["sb3"]
    assert row["sampled"]["n"] == 2 and row["sampled"]["ours_minus_sb3"][0] == pytest.approx(
        np.mean(ours) - np.mean(sb3)
    )
    assert "bar minigrid:DoorKey-5x5: ours not worse than SB3" in capsys.readouterr().out

    # A rerun with --keep-jobs reuses the kept results (a marked one shows it) and runs again only
    # the job whose file is damaged, saying so in one line.
    files = sorted(kept.glob("job-*.json"))
    assert len(files) == 4  # each under its job, which holds the settings it trained with
    assert result["jobs"][0]["settings"]["update_epochs"] == 10 and result["jobs"][0]["versions"]["mario_apo"]
    by_job = {(r["job"]["impl"], r["job"]["seed"]): path for path in files for r in [json.loads(path.read_text())]}
    marked = json.loads(by_job["ours", 1].read_text())
    marked["result"]["sampled_success"] = 0.123
    by_job["ours", 1].write_text(json.dumps(marked))
    by_job["sb3", 2].write_text('{"job": ')
    assert main([*argv, "--keep-jobs", str(kept)]) == 0
    rerun = json.loads(out_json.read_text())
    assert rerun["tasks"]["minigrid:DoorKey-5x5"]["sampled"]["ours"][0] == 0.123
    assert rerun["jobs"][1] == result["jobs"][1] and rerun["jobs"][2] == result["jobs"][2]
    assert rerun["jobs"][3]["train_s"] != result["jobs"][3]["train_s"]  # trained again
    err = capsys.readouterr().err  # beside the progress bar
    assert err.count("the job runs again") == 1 and "JSONDecodeError" in err and "Traceback" not in err
