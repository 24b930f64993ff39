"""Evaluation of checkpoints on fresh envs: the documented JSON, videos, classic tasks, bad input."""

from __future__ import annotations

import json

import imageio.v2 as imageio
import pytest

from mario_apo.cli import main

from conftest import assert_one_line_error, train_in_process

pytestmark = pytest.mark.slow


def test_eval_writes_the_documented_json_and_a_video(apo_run, tmp_path):
    out, video = tmp_path / "eval.json", tmp_path / "first.mp4"
    flags = ["--json", str(out), "--video", str(video), "--episodes", "2", "--level", "1-1", "1-2"]
    assert main(["eval", str(apo_run), *flags]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["task"] for r in results] == ["mario:1-1:goal:250", "mario:1-2:goal:250"]
    for result in results:
        for key in ("success_rate", "mean_return", "median_return", "mean_max_x", "mean_length", "episodes", "policy"):
            assert key in result
        assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0
    assert len(imageio.mimread(video, memtest=False)) > 4


def test_eval_works_for_cartpole(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train_in_process(runs, "--algo ppo --task cartpole --total-steps 2048 --name c") == 0
    assert main(["eval", str(runs / "c"), "--episodes", "3", "--sample"]) == 0
    result = json.loads((runs / "c" / "eval.json").read_text())["results"][0]
    assert result["task"] == "cartpole" and result["policy"] == "sample" and result["mean_max_x"] == 0.0


@pytest.mark.parametrize("case", ["missing_run", "other_task_checkpoint", "level_for_cartpole"])
def test_eval_bad_input_is_one_line_exit_2(apo_run, tmp_path, capsys, case):
    runs = tmp_path / "runs"
    if case == "missing_run":
        argv, valid = ["eval", str(tmp_path / "nope")], "not a run dir"
    else:
        assert train_in_process(runs, "--algo ppo --task cartpole --total-steps 256 --name c") == 0
        capsys.readouterr()
        if case == "other_task_checkpoint":
            argv, valid = (
                ["eval", str(apo_run), "--checkpoint", str(runs / "c" / "checkpoint.pt")],
                "from task 'cartpole'",
            )
        else:
            argv, valid = ["eval", str(runs / "c"), "--level", "1-1"], "--level is for Mario runs"
    assert main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, valid)


def test_greedy_eval_plays_distinct_episodes_only_with_sticky_actions(apo_run, tmp_path):
    def deterministic(config):
        config["env"]["sticky_actions"] = 0.0
        return config

    from test_replay import copy_run

    results = {}
    for name, edit in (("sticky", None), ("deterministic", deterministic)):
        run_dir = copy_run(apo_run, tmp_path / name, edit_config=edit)
        assert (
            main(["eval", str(run_dir), "--episodes", "3", "--greedy", "--json", str(tmp_path / f"{name}.json")]) == 0
        )
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())["results"][0]
    # an untrained greedy policy presses nearly one button, so a repeated action often changes
    # nothing; still its episodes differ, where the deterministic emulator replays one game forever
    assert results["sticky"]["distinct_episodes"] >= 2
    assert results["deterministic"]["distinct_episodes"] == 1


def test_the_final_policy_evaluation_is_in_summary_json_and_outside_the_budget(tmp_path):
    runs = tmp_path / "runs"
    flags = "--algo ppo --task cartpole --total-steps 2048 --name c --final-eval-episodes 30 --final-eval-greedy 10"
    assert train_in_process(runs, flags) == 0
    summary = json.loads((runs / "c" / "summary.json").read_text())
    assert summary["global_step"] == 2048 and not summary["interrupted"]  # evaluation steps are not training's
    final = summary["final_eval"]
    for policy, episodes in (("sampled", 30), ("greedy", 10)):
        result = final[policy]
        assert result["episodes"] == episodes and 0 <= result["successes"] <= episodes
        low, high = result["wilson95"]
        assert low <= result["success_rate"] == result["successes"] / episodes <= high
        # every counted episode ran to its end, in steps the evaluation ran (envs idle past their quota count too)
        assert episodes * result["mean_length"] <= result["steps"]
    assert final["steps"] == final["sampled"]["steps"] + final["greedy"]["steps"]


def test_the_final_evaluation_is_reproducible_splits_episodes_over_envs_and_can_be_stopped(tmp_path):
    import torch

    from mario_apo.config import EnvConfig
    from mario_apo.evaluate import evaluate_final_policy
    from mario_apo.tasks import make_env, parse_task
    from models.actor_critic import make_model

    task = parse_task("cartpole")
    probe = make_env(task, EnvConfig())
    torch.manual_seed(0)
    model = make_model(probe.observation_space, probe.action_space)
    probe.close()

    def run(**kwargs):
        return evaluate_final_policy(
            model, task, EnvConfig(), {"sampled": 10, "greedy": 3}, 8, list(range(9)), **kwargs
        )

    first = run()
    assert first == run() and first["sampled"]["episodes"] == 10 and first["greedy"]["episodes"] == 3
    assert run(stop=lambda: True) is None


@pytest.mark.slow
def test_final_eval_at_budgets_evaluates_the_policy_there_on_the_final_episodes(tiny_config):
    from mario_apo.logger import read_metrics
    from mario_apo.runs import RunFiles, create_run
    from mario_apo.train import train

    cfg = tiny_config(task="cartpole", algo="ppo", total_steps=1024, final_eval_at=[256, 512], wandb="disabled")
    run_dir = create_run(cfg)
    summary = train(cfg, run_dir)
    at = summary["budget_evals"]
    assert set(at) == {"256", "512"} and at["256"]["at_step"] >= 256 and at["512"]["at_step"] >= 512
    assert at["256"]["sampled"]["episodes"] == cfg.log.final_eval_episodes
    logged = [r for r in read_metrics(RunFiles(run_dir).metrics) if "eval_at/sampled_success_rate" in r]
    assert [r["global_step"] for r in logged] == [at["256"]["at_step"], at["512"]["at_step"]]
    # the same fresh episodes as the final evaluation: the final policy's numbers come from the same seeds
    assert summary["final_eval"]["sampled"]["episodes"] == at["512"]["sampled"]["episodes"]
