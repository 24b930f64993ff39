"""Files are input: run dirs, config.json, anchors.json, checkpoints, suite files and output paths come
from other people and machines. Loading them never writes outside where they belong, never crashes with
a traceback, and never loses a result: bad content is one line naming the file, exit 2, nothing written."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mario_apo.anchor_files import check_anchor_index
from mario_apo.cli import main
from mario_apo.errors import UsageError
from mario_apo.runs import load_run_config, write_atomic
from mario_apo.suite import load_suite

from conftest import assert_one_line_error, train_in_process

HERE = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their target path), to show that nothing changed."""
    return {
        str(p.relative_to(folder)): os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished APO CartPole run (config, metrics, checkpoint, anchors, summary), copied per test."""
    parent = tmp_path_factory.mktemp("runs")
    assert train_in_process(parent, "--name run --algo apo --task cartpole --total-steps 512 --anchors 3") == 0
    return parent / "run"


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    copy_dir = tmp_path / "runs" / "run"
    shutil.copytree(finished_run, copy_dir, symlinks=True)
    return copy_dir


# -- 1. writes outside the run dir ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["metrics.jsonl", ".lock", "checkpoint.pt", "anchors.json"])
def test_resume_refuses_a_run_dir_holding_a_link_and_leaves_its_target_untouched(run_dir, tmp_path, capsys, name):
    target = tmp_path / "precious.txt"
    target.write_text("not yours\n")
    link = run_dir / name
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--total-steps", "1024", "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "is a symbolic link")
    assert target.read_text() == "not yours\n" and snapshot(run_dir) == before


def test_resume_of_a_run_with_wandb_keeps_wandbs_own_links_and_refuses_one_out_of_its_folder(tmp_path, capsys):
    # W&B (offline, the default) links inside its folder: latest-run -> run-<id>, debug.log -> ...; a
    # resume must go on through those, and still refuse a link that leaves the folder.
    parent = tmp_path / "runs"
    assert train_in_process(parent, "--name run --task cartpole --total-steps 512 --wandb offline") == 0
    wandb_dir = parent / "run" / "wandb"
    assert any(p.is_symlink() for p in wandb_dir.iterdir()), list(wandb_dir.iterdir())
    assert main(["train", "--resume", str(parent / "run"), "--total-steps", "1024", "--no-progress"]) == 0
    assert json.loads((parent / "run" / "summary.json").read_text())["global_step"] >= 1024
    capsys.readouterr()
    target = tmp_path / "precious.txt"
    target.write_text("not yours\n")
    (wandb_dir / "debug-internal.log").unlink(missing_ok=True)
    (wandb_dir / "debug-internal.log").symlink_to(target)
    assert main(["train", "--resume", str(parent / "run"), "--total-steps", "1536", "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "is a symbolic link")
    assert target.read_text() == "not yours\n"


def test_atomic_writes_replace_only_regular_files_and_never_follow_a_planted_temp(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("not yours\n")
    (tmp_path / "summary.json.tmp").symlink_to(target)  # the temp name older versions used
    write_atomic(tmp_path / "summary.json", "{}")
    assert target.read_text() == "not yours\n" and (tmp_path / "summary.json").read_text() == "{}"
    (tmp_path / "link.json").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        write_atomic(tmp_path / "link.json", "{}")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError, match="directory"):
        write_atomic(tmp_path / "folder", "{}")
    assert target.read_text() == "not yours\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "folder",
        "link.json",
        "precious.txt",
        "summary.json",
        "summary.json.tmp",
    ]


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", ".hidden", "a/b", "-rf"])
def test_a_run_name_is_a_name_not_a_path(tmp_path, capsys, name):
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), f"--name={name}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "is not a valid name")
    assert not list(tmp_path.rglob("*"))


def test_replay_refuses_a_crafted_anchor_name_and_writes_nothing(run_dir, tmp_path, capsys):
    index = json.loads((run_dir / "anchors.json").read_text())
    index["task"] = "minigrid:DoorKey-5x5"  # a replayable task, so only the name is wrong
    index["anchors"][0]["episode_id"] = "../../escape"
    (run_dir / "anchors.json").write_text(json.dumps(index))
    before = snapshot(tmp_path)
    assert main(["replay", str(run_dir)]) == 2
    assert_one_line_error(capsys.readouterr().err, "episode_id must be an integer >= 0")
    assert snapshot(tmp_path) == before


def test_replay_will_not_write_videos_through_a_linked_videos_folder(run_dir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    index = json.loads((run_dir / "anchors.json").read_text())
    index["task"] = "minigrid:DoorKey-5x5"
    (run_dir / "anchors.json").write_text(json.dumps(index))
    (run_dir / "videos").symlink_to(elsewhere)
    assert main(["replay", str(run_dir)]) == 2
    assert_one_line_error(capsys.readouterr().err, "not a plain folder")
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("out", ["folder", "/dev/null", "missing-parent-is-fine/x.json"])
def test_output_paths_are_checked_before_the_work(tmp_path, capsys, out):
    (tmp_path / "folder").mkdir()
    path = out if out.startswith("/") else str(tmp_path / out)
    code = main(["bench", "parity", "--cartpole-steps", "0", "--mountaincar-steps", "0", "--minigrid-steps", "-1",
                 "--json", path])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    if out.startswith("missing"):  # a good path: the budget (checked after parsing) is what is refused
        assert_one_line_error(err, "budgets >= 0")
    else:
        assert_one_line_error(err, "refusing to replace it")
    assert os.path.exists("/dev/null") and not (tmp_path / "missing-parent-is-fine").exists()


def test_bench_parity_keeps_jobs_only_in_a_folder(tmp_path, capsys):
    pytest.importorskip("stable_baselines3", reason="the bench extra (pip install -e '.[bench]') has SB3")
    (tmp_path / "a-file").write_text("mine")
    code = main(["bench", "parity", "--cartpole-steps", "0", "--mountaincar-steps", "0", "--minigrid-steps", "2048",
                 "--json", str(tmp_path / "p.json"), "--keep-jobs", str(tmp_path / "a-file")])  # fmt: skip
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "is not a folder")
    assert (tmp_path / "a-file").read_text() == "mine" and not (tmp_path / "p.json").exists()


def test_suite_pack_out_never_replaces_a_device_or_a_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\ntasks = ["cartpole"]\nseeds = [1]\ntotal_steps = 512\n[algos.ppo]\nalgo = "ppo"\n')
    (tmp_path / "dir.tar.gz").mkdir()
    for out in ("/dev/null", str(tmp_path / "dir.tar.gz")):
        assert main(["suite", "pack", str(suite), "--out", out]) == 2
        assert_one_line_error(capsys.readouterr().err, "refusing to replace it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.tar.gz", "s.toml"]


# -- 3. lost results ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage, valid",
    [
        (lambda c: c["ppo"].update(gae_lambda=2.0), "ppo.gae_lambda must be a number in [0, 1]"),
        (lambda c: c["ppo"].update(num_envs="8"), "ppo.num_envs must be a positive integer"),
        (lambda c: c["ppo"].update(num_envs=10**9), "ppo.num_envs must be a positive integer <= 1,024"),
        (lambda c: c["ppo"].update(learning_rate=float("nan")), "ppo.learning_rate must be a number > 0"),
        (lambda c: c["env"].update(frame_stack=[4]), "env.frame_stack must be a positive integer"),
        (lambda c: c.update(seed=-1), "seed must be an integer >= 0"),
        (lambda c: c.update(task="../../x"), "unknown task"),
        (lambda c: c["log"].update(bogus=1), "log has no setting 'bogus'"),
        (lambda c: c.update(anchor=[]), "anchor must be a table of settings"),
    ],
)
def test_a_crafted_config_refuses_the_resume_and_keeps_the_result(run_dir, capsys, damage, valid):
    config = json.loads((run_dir / "config.json").read_text())
    damage(config)
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--total-steps", "1024", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, valid)
    assert "config.json" in err and snapshot(run_dir) == before  # summary.json and .lock as they were


def test_resume_refuses_the_setting_flags_it_would_ignore(run_dir, capsys):
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--lr", "0.1"]) == 2
    assert_one_line_error(
        capsys.readouterr().err, "--lr 0.1 (the run's: 0.001) cannot change them: --resume honours only --total-steps"
    )
    assert snapshot(run_dir) == before


def test_a_refused_resume_on_a_bad_checkpoint_leaves_the_lock_file_as_it_was(run_dir, capsys):
    torch.save([1, 2, 3], run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    assert_one_line_error(capsys.readouterr().err, "holds a list")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "state, valid",
    [
        ([1, 2, 3], "holds a list"),
        ({"task": "cartpole", "global_step": 1}, "model weights (a dict of tensors) are missing"),
        ({"model": {"w": torch.zeros(1)}, "task": "cartpole", "global_step": -5}, "global_step"),
    ],
)
def test_a_checkpoint_that_is_not_one_is_one_line(run_dir, capsys, state, valid):
    torch.save(state, run_dir / "checkpoint.pt")
    before = snapshot(run_dir)
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, valid)
    assert snapshot(run_dir) == before


# -- 6. silent surprises -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--task", ""], "unknown task ''"),
        (["--seed", "-1"], "expected an integer >= 0"),
        (["--gae-lambda", "1.5"], "expected a number in [0, 1]"),
        (["--gamma", "1.01"], "expected a discount in (0, 1]"),
        (["--num-envs", "100000"], "expected a positive integer <= 1,024"),
        (["--frame-stack", "1000"], "expected a positive integer <= 64"),
        (["--num-envs", "1024", "--num-steps", "16384", "--total-steps", "20000000"], "GiB are free"),  # ~670 GiB
    ],
)
def test_settings_out_of_their_range_are_refused(tmp_path, capsys, argv, valid):
    assert main(["train", "--run-dir", str(tmp_path), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, valid)
    assert not list(tmp_path.iterdir())


# -- fuzz: random mutations of real files fed to the loaders ---------------------------------------

JUNK = [None, -1, 0, 1.5, 10**30, "", "x", "../x", [], {}, [1, "a"], {"a": 1}, True, float("inf")]


def mutations(record, rng: random.Random, count: int):
    """``count`` copies of a JSON-like record, each with one value replaced, a key deleted or a key added,
    anywhere in its nesting."""
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append(path + [key])
                walk(value, path + [key])
        elif isinstance(node, list):
            for i, value in enumerate(node[:5]):
                paths.append(path + [i])
                walk(value, path + [i])

    walk(record, [])
    for _ in range(count):
        mutated = copy.deepcopy(record)
        path = rng.choice(paths)
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        kind = rng.random()
        if kind < 0.7:
            parent[path[-1]] = rng.choice(JUNK)
        elif kind < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["zz", "help", "resume", "../x"])] = rng.choice(JUNK)
        yield mutated


def test_fuzzed_config_and_anchors_load_or_fail_in_one_line(run_dir, tmp_path):
    rng = random.Random(0)
    config = json.loads((run_dir / "config.json").read_text())
    anchors = json.loads((run_dir / "anchors.json").read_text())
    before = snapshot(run_dir)
    for mutated in mutations(config, rng, 300):
        (run_dir / "config.json").write_text(json.dumps(mutated))
        try:
            load_run_config(run_dir)
        except UsageError as err:
            assert "\n" not in str(err) and "config.json" in str(err)
    for mutated in mutations(anchors, rng, 300):
        try:
            check_anchor_index(mutated)
        except UsageError as err:
            assert "\n" not in str(err)
    (run_dir / "config.json").write_bytes(before["config.json"])
    assert snapshot(run_dir) == before


def test_fuzzed_suite_files_load_or_fail_in_one_line(tmp_path):
    import tomllib

    text = (HERE / "experiments" / "mountaincar-rare.toml").read_text()
    suite = tomllib.loads(text)
    rng = random.Random(1)
    for k, mutated in enumerate(mutations(suite, rng, 200)):
        path = tmp_path / f"s{k}.toml"
        path.write_text(_toml(mutated))
        try:
            load_suite(path)
        except UsageError as err:
            assert "\n" not in str(err)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".toml"] * 200


def test_fuzzed_run_logs_report_or_fail_in_one_line(run_dir):
    """What the report's readers accept, the report's tables can use: a mutated summary.json, metrics
    record or random_policy.json either reports or is one line naming the file."""
    from mario_apo.report import _per_run_table, load_run
    from mario_apo.report_progress import onset_section
    from mario_apo.run_logs import read_random_policies
    from mario_apo.suite import RunSpec

    spec, rng = RunSpec("cartpole", "apo", 1), random.Random(2)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["budget_evals"] = {"256": {"at_step": 256, **summary["final_eval"]}}  # as --final-eval-at writes it
    metrics = (run_dir / "metrics.jsonl").read_text()
    episode = next(json.loads(line) for line in metrics.splitlines() if "charts/episodic_return" in line)
    measured = {"cartpole": {"episodes": 200, "success_rate": 0.0, "wilson_95": [0.0, 0.0188], "env": {}}}

    def report_or_one_line(name: str) -> None:
        try:
            run = load_run(run_dir, spec)
            _per_run_table({"apo": [run]}, run.final_eval is not None)
            onset_section({"apo": [run]}, read_random_policies(run_dir / "random_policy.json").get("cartpole"))
            run.final_success("sampled"), run.windowed_success(np.linspace(0, 512, 5))
        except UsageError as err:
            assert "\n" not in str(err) and name in str(err), err

    for mutated in mutations(summary, rng, 200):
        (run_dir / "summary.json").write_text(json.dumps(mutated))
        report_or_one_line("summary.json")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    for mutated in mutations(episode, rng, 100):
        (run_dir / "metrics.jsonl").write_text(metrics + json.dumps(mutated) + "\n")
        report_or_one_line("metrics.jsonl")
    (run_dir / "metrics.jsonl").write_text(metrics)
    for mutated in mutations(measured, rng, 100):
        (run_dir / "random_policy.json").write_text(json.dumps(mutated))
        report_or_one_line("random_policy.json")


def test_fuzzed_level_calibrations_give_the_progress_reference_or_fail_in_one_line(tmp_path):
    """The report's random-policy reference comes from a committed calibration-<level>.json: a mutated
    one gives a reference, none (other env settings), or one line naming the file."""
    from mario_apo.calibrate import DEFAULT_OUT
    from mario_apo.config import EnvConfig
    from mario_apo.report_progress import random_policy_progress

    record = json.loads((DEFAULT_OUT / "calibration-1-1.json").read_text())
    record = {key: record[key] for key in ("level", "env", "episodes", "curve")}  # what the report reads
    refused = 0
    for mutated in mutations(record, random.Random(3), 300):
        (tmp_path / "calibration-1-1.json").write_text(json.dumps(mutated))
        try:
            random_policy_progress("1-1", EnvConfig(), tmp_path)
        except UsageError as err:
            assert "\n" not in str(err) and "calibration-1-1.json" in str(err), err
            refused += 1
    assert refused > 50  # the mutations reach what is read, not only what is ignored


def _toml(record: dict) -> str:
    """A suite record as TOML (values JSON-encoded: TOML has no null, so None becomes a string)."""

    def value(v):
        if v is None or (isinstance(v, float) and v != v):
            return '"null"'
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "\n".join(f"{json.dumps(key)} = {value(v)}" for key, v in record.items()) + "\n"


def test_wandb_online_without_a_key_or_network_is_one_line_before_any_run_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), "--wandb", "online"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--wandb online needs a W&B API key")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), "--wandb", "online"]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot reach 127.0.0.1:9")
    assert not (tmp_path / "runs").exists()


def test_a_reader_that_leaves_early_and_a_closed_stderr_are_not_errors(tmp_path):
    import subprocess
    import sys

    listing = subprocess.Popen(
        [sys.executable, "-m", "mario_apo.cli", "tasks"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    listing.stdout.close()  # the reader is gone before anything is written (as head -1 after its line)
    assert listing.wait(timeout=60) == 0 and listing.stderr.read() == b""
    closed = subprocess.run(
        f"{sys.executable} -m mario_apo.cli train --task cartpole --total-steps 512 --wandb disabled "
        f"--final-eval-episodes 2 --final-eval-greedy 1 --run-dir {tmp_path} 2>&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert closed.returncode == 0 and '"global_step": 512' in closed.stdout


def test_an_output_folder_that_is_a_file_is_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("mine\n")
    argv = ["calibrate", "--task", "minigrid:DoorKey-5x5", "--episodes", "5", "--workers", "1"]
    assert main([*argv, "--out", str(tmp_path / "file")]) == 2
    assert_one_line_error(capsys.readouterr().err, "is not a folder")
    assert (tmp_path / "file").read_text() == "mine\n"
