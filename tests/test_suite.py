"""Suites: matrix expansion, bad suite files, skip/resume, locks shared by runners, SIGTERM, status, the
random-policy baseline, a tiny real suite."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from mario_apo import stats
from mario_apo.calibrate import random_episodes
from mario_apo.checkpoint import load_checkpoint
from mario_apo.cli import main
from mario_apo.config import EnvConfig
from mario_apo.errors import SuiteError
from mario_apo.runs import RunLock, lock_holder
from mario_apo.suite import expand, load_suite, measure_random_policies, run_state, train_command
from mario_apo.tasks import parse_task

from conftest import assert_one_line_error, assert_tables_on_grid, wandb_records

TINY = """
name = "tiny"
description = "2 seeds x 2 algos on CartPole, a few thousand steps"
tasks = ["cartpole"]
seeds = [1, 2]
total_steps = 2048
jobs = 2
checkpoint_every = 2

[train]
final_eval_episodes = 20
final_eval_greedy = 4
wandb = "disabled"  # a run's W&B files are tested in test_train; the report's W&B run has its own --wandb

[algos.ppo]
algo = "ppo"

[algos.apo]
algo = "apo"
beta = 0.5
"""


def write_suite(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / "experiments" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_matrix_expansion_and_commands(tmp_path):
    text = TINY.replace('tasks = ["cartpole"]', 'tasks = ["cartpole", "mario:1-1:goal:600"]').replace(
        "[1, 2]", "[1, 2, 3]"
    )
    suite = load_suite(write_suite(tmp_path, text.replace("[train]\n", "[train]\nmax_episode_steps = 500\n")))
    specs = expand(suite)
    assert len(specs) == 2 * 2 * 3 and len({s.name for s in specs}) == 12
    assert "apo-mario-1-1-goal-600-s3" in {s.name for s in specs}
    apo = train_command(suite, specs[3], "new", threads=1)
    ppo = train_command(suite, specs[0], "new", threads=1)
    assert "--beta=0.5" in apo and not any(arg.startswith("--beta") for arg in ppo)
    assert "--max-episode-steps=500" in ppo and ppo[ppo.index("--seed") + 1] == "1"
    assert ppo[ppo.index("--wandb-group") + 1] == "tiny"
    resume = train_command(suite, specs[0], "resume", threads=3)
    assert resume[-2:] == ["--resume", "runs/tiny/ppo-cartpole-s1"]
    # a resumed run takes the resuming runner's threads (another machine, or a machine now shared)
    assert resume[resume.index("--torch-threads") + 1] == "3"


@pytest.mark.parametrize(
    "edit, valid",
    [
        (lambda t: t.replace('tasks = ["cartpole"]', 'tasks = ["mario:9-9"]'), "valid levels"),
        (lambda t: t.replace('algo = "ppo"', 'algo = "dqn"'), "algo must be one of ppo, apo, sil"),
        (lambda t: t.replace("seeds = [1, 2]\n", ""), "lacks seeds"),
        (lambda t: "bogus = 1\n" + t, "unknown keys"),
        (lambda t: t + "\nbetta = 1\n", "has no run setting 'betta'"),
        (lambda t: t.replace("beta = 0.5", "beta = -1"), "beta must be a finite number >= 0"),
        (lambda t: t.replace("seeds = [1, 2]", 'seeds = "12"'), "seeds must be a non-empty list of integers"),
        (lambda t: t.replace("seeds = [1, 2]", "seeds = []"), "seeds must be a non-empty list"),
        (lambda t: t.replace("jobs = 2", "jobs = 0"), "jobs must be an integer in 1-1,024"),
        (lambda t: t.replace('name = "tiny"', 'name = "../x"'), "is not a valid name"),
        (lambda t: t.replace('name = "tiny"', 'name = "/tmp/x"'), "is not a valid name"),
        (lambda t: t + '\nresume = "runs/other"\n', "the suite runner sets it"),
        (lambda t: t + "\nhelp = true\n", "has no run setting 'help'"),
        (lambda t: t + "\nseed = 3\n", "the suite runner sets it"),
        (lambda t: t + "\ngae_lambda = 1.5\n", "gae_lambda must be a number in"),
        (lambda t: t.replace("[algos.ppo]", "[algos.ppo"), "not valid TOML"),
    ],
)
def test_bad_suite_files_are_one_line_exit_2(tmp_path, capsys, edit, valid):
    path = write_suite(tmp_path, edit(TINY))
    with pytest.raises(SuiteError, match=valid):
        load_suite(path)
    assert main(["suite", "run", str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, valid)


@pytest.mark.slow
def test_tiny_real_suite_runs_skips_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_suite(tmp_path, TINY)
    assert main(["suite", "run", str(path)]) == 0
    assert "0 already finished, 4 ran, 0 failed" in capsys.readouterr().out
    runs = tmp_path / "runs" / "tiny"
    assert all(run_state(runs / s.name) == "done" for s in expand(load_suite(path)))

    # finished runs are skipped
    assert main(["suite", "run", str(path)]) == 0
    assert "4 already finished, 0 ran" in capsys.readouterr().out

    # an interrupted run (checkpoint, no summary) resumes; one that died before its first checkpoint restarts
    interrupted, stale = runs / "apo-cartpole-s1", runs / "ppo-cartpole-s2"
    (interrupted / "summary.json").unlink()
    shutil.rmtree(stale)
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    assert run_state(interrupted) == "resume" and run_state(stale) == "stale"
    # status counts what is left of both, their final evaluations included (as long as the finished runs')
    spent = [
        json.loads((runs / n / "summary.json").read_text())["final_eval"]["steps"]
        for n in ("ppo-cartpole-s1", "apo-cartpole-s2")
    ]
    capsys.readouterr()
    assert main(["suite", "status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["remaining_eval_steps"] == 2 * int(np.median(spent)) > 0
    assert status["remaining_steps"] == 2048 + status["remaining_eval_steps"]  # the interrupted run had trained it all
    # --cpus-per-run sets each run's torch threads here too (two suites sharing a machine)
    assert main(["suite", "run", str(path), "--cpus-per-run", "1"]) == 0
    assert "2 already finished, 2 ran, 0 failed" in capsys.readouterr().out
    steps = [json.loads(line)["global_step"] for line in (interrupted / "metrics.jsonl").open() if "charts/SPS" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 2048
    assert json.loads((stale / "config.json").read_text())["seed"] == 2
    assert json.loads((stale / "config.json").read_text())["torch_threads"] == 1
    # the resumed run had finished training: resuming ran only its final-policy evaluation
    assert json.loads((interrupted / "summary.json").read_text())["final_eval"]["sampled"]["episodes"] == 20

    assert main(["suite", "report", str(path)]) == 0
    out = tmp_path / "experiments" / "results" / "tiny"
    report = (out / "report.md").read_text()
    for text in ("## cartpole", "final-policy success, sampled", "Per run", "IQM", "P(apo > ppo)", "| apo - ppo |"):
        assert text in report, text
    assert "n = 2 < 10: these intervals are approximate" in report and "Pre-protocol" not in report
    assert_tables_on_grid(report)
    assert (out / "curves-cartpole.png").stat().st_size > 1000 and (out / "episodes-cartpole.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["cartpole"]["algos"]["ppo"]["n"] == 2 and summary["missing_runs"] == []

    # the paired interval, by hand from the runs' own summary.json
    def sampled(name):
        return json.loads((runs / name / "summary.json").read_text())["final_eval"]["sampled"]["success_rate"]

    differences = np.array([sampled(f"apo-cartpole-s{s}") - sampled(f"ppo-cartpole-s{s}") for s in (1, 2)])
    half = 12.706204736174707 * differences.std(ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    (paired,) = [
        c for c in summary["tasks"]["cartpole"]["comparisons"] if (c["a"], c["metric"]) == ("apo", "final_success")
    ]
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(differences.mean())
    assert paired["t95"] == pytest.approx([differences.mean() - half, differences.mean() + half])
    # the verdict section states the same difference in words
    assert "## Verdict: final-policy success, sampled (paired by seed)" in report
    assert f"  - apo - ppo: {differences.mean():+.3f}, t 95% [{differences.mean() - half:+.3f}," in report

    # the finished runs' logs pack into one archive from which the report regenerates
    assert main(["suite", "pack", str(path)]) == 0
    with tarfile.open(out / "finished-runs.tar.gz") as tar:
        members = set(tar.getnames())
    assert "apo-cartpole-s1/anchors.json" in members and "ppo-cartpole-s2/metrics.jsonl" in members
    assert not any(name.endswith(".pt") or "wandb" in name for name in members) and len(members) == 4 * 3 + 2
    # a fresh clone: the report regenerates from the archive alone, the same numbers
    clone = tmp_path / "clone"
    (clone / "runs" / "tiny").mkdir(parents=True)
    with tarfile.open(out / "finished-runs.tar.gz") as tar:
        tar.extractall(clone / "runs" / "tiny", filter="data")
    shutil.copytree(tmp_path / "experiments", clone / "experiments", ignore=shutil.ignore_patterns("results"))
    monkeypatch.chdir(clone)
    assert main(["suite", "report", "experiments/tiny.toml", "--out", "regenerated", "--wandb", "disabled"]) == 0
    assert json.loads(Path("regenerated/summary.json").read_text()) == summary
    # a damaged or crafted log in a shared archive: one line naming the file and what is valid, exit 2,
    # and no report folder; the untouched logs report again as before
    run = Path("runs/tiny/apo-cartpole-s1")
    final = json.loads((run / "summary.json").read_text())["final_eval"]
    crafted = {
        "summary.json": json.dumps({"final_eval": {**final, "sampled": {**final["sampled"], "successes": 21}}}),
        "metrics.jsonl": '{"global_step": 8, "charts/episodic_return": "9", "charts/success": 1}\n',
        "../random_policy.json": '{"cartpole": {"episodes": 200, "success_rate": 1.5}}',
    }
    for name, text in crafted.items():
        kept = (run / name).read_bytes() if (run / name).exists() else None
        with (run / name).open("a" if name == "metrics.jsonl" else "w") as damaged:
            damaged.write(text)
        capsys.readouterr()
        assert main(["suite", "report", "experiments/tiny.toml", "--out", "damaged", "--wandb", "disabled"]) == 2
        valid = {"summary.json": "integer in [0, 20]", "metrics.jsonl": "a number", "../random_policy.json": "[0, 1]"}
        err = capsys.readouterr().err
        assert_one_line_error(err, valid[name])
        assert str(run / name).replace("apo-cartpole-s1/../", "") in err
        assert not Path("damaged").exists()
        if name == "metrics.jsonl":  # status still shows every run, and says which log is damaged and why
            assert main(["suite", "status", "experiments/tiny.toml"]) == 0
            status = capsys.readouterr().out
            assert "4 finished, 0 running, 0 interrupted, 0 pending (1 with a damaged log)" in status
            assert re.search(r"apo-cartpole-s1 +finished +.*metrics.jsonl.*a number", status)
        if kept is None:
            (run / name).unlink()
        else:
            (run / name).write_bytes(kept)
    assert main(["suite", "report", "experiments/tiny.toml", "--out", "damaged", "--wandb", "disabled"]) == 0
    assert json.loads(Path("damaged/summary.json").read_text()) == summary
    monkeypatch.chdir(tmp_path)

    # the same comparison as a W&B summary run (offline), read back from its files
    records = wandb_records(runs / "report")
    history = [item for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item]
    logged = {item.key or item.nested_key[0] for item in history}  # media are logged as nested keys
    # a line_series chart is stored as its data table, "<key>_table", with the chart spec in the config
    assert {
        "comparison",
        "success_curves/cartpole_table",
        "figures/curves-cartpole",
        "figures/episodes-cartpole",
    } <= logged
    assert any(r.run.job_type == "report" and r.run.run_group == "tiny" for r in records if r.HasField("run"))
    (table_file,) = (runs / "report" / "wandb").glob("offline-run-*/files/media/table/comparison_*.table.json")
    table = json.loads(table_file.read_text())
    rows = {row[table["columns"].index("algo")]: dict(zip(table["columns"], row, strict=True)) for row in table["data"]}
    assert rows["apo"]["minus_baseline"] == pytest.approx(differences.mean())
    assert rows["apo"]["minus_baseline_t_low"] == pytest.approx(differences.mean() - half)
    assert rows["ppo"]["n"] == 2 and rows["ppo"]["minus_baseline"] is None


@pytest.mark.slow
def test_report_uses_only_seeds_finished_for_every_algo(tmp_path, monkeypatch):
    from mario_apo.report import write_report

    monkeypatch.chdir(tmp_path)
    suite = load_suite(write_suite(tmp_path, TINY.replace("total_steps = 2048", "total_steps = 512")))
    assert main(["suite", "run", str(suite.path)]) == 0
    (tmp_path / "runs" / "tiny" / "ppo-cartpole-s2" / "summary.json").unlink()  # seed 2 half done
    summary = json.loads((write_report(suite).parent / "summary.json").read_text())
    algos = summary["tasks"]["cartpole"]["algos"]
    assert algos["ppo"]["n"] == algos["apo"]["n"] == 1
    assert sorted(summary["missing_runs"]) == ["apo-cartpole-s2", "ppo-cartpole-s2"]


@pytest.mark.slow
def test_the_suites_action_set_reaches_the_random_policy_baseline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = TINY.replace('tasks = ["cartpole"]', 'tasks = ["mario:1-1:goal:300", "mario:1-1:goal:600"]')
    suite = load_suite(
        write_suite(
            tmp_path, text.replace("[train]\n", '[train]\nactions = "right"\nmax_episode_steps = 400\nnum_steps = 64\n')
        )
    )
    suite.random_policy_episodes = 4
    measured = measure_random_policies(suite)
    assert measured["mario:1-1:goal:300"]["env"]["action_set"] == "right"
    # both rungs read off one set of dense episodes: as many successes as goal:X envs played themselves
    for x in (300, 600):
        rung = measured[f"mario:1-1:goal:{x}"]
        assert rung["played"] == "mario:1-1:dense" and rung["episodes"] == 4
        env_cfg = EnvConfig(**rung["env"])
        itself = random_episodes(parse_task(f"mario:1-1:goal:{x}"), env_cfg, 4, workers=2, progress=False)
        assert rung["success_rate"] == np.mean([e.success for e in itself])
    assert measured["mario:1-1:goal:300"]["success_rate"] > 0
    # measured once per setting: the same settings read the file, another episode count measures again
    assert measure_random_policies(suite) == measured
    suite.random_policy_episodes = 2
    assert {rung["episodes"] for rung in measure_random_policies(suite).values()} == {2}


def hold_locks(run_dirs):
    """Hold the run-dir locks as another runner's training processes would."""
    stack = contextlib.ExitStack()
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        stack.enter_context(RunLock(run_dir))
    return stack


def test_a_suite_whose_every_unfinished_run_is_trained_elsewhere_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_suite(tmp_path, TINY)
    suite = load_suite(path)
    with hold_locks(suite.runs_dir / spec.name for spec in expand(suite)):
        assert main(["suite", "run", str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "is being trained elsewhere")


@pytest.mark.slow
def test_two_runners_share_a_suite_and_sigterm_stops_one_with_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_suite(tmp_path, TINY.replace("total_steps = 2048", "total_steps = 400000"))
    suite = load_suite(path)
    held, *others = [suite.runs_dir / spec.name for spec in expand(suite)]
    with hold_locks([held]):
        runner = subprocess.Popen(
            [sys.executable, "-m", "mario_apo.cli", "suite", "run", str(path)], stdout=subprocess.PIPE, text=True
        )
        deadline = time.time() + 120
        while not all((run_dir / "checkpoint.pt").exists() for run_dir in others[:2]):  # jobs = 2
            assert runner.poll() is None and time.time() < deadline
            time.sleep(0.2)
        assert main(["suite", "status", str(path), "--json"]) == 0
        status = {cell["run"]: cell for cell in json.loads(capsys.readouterr().out)["cells"]}
        assert status[held.name]["state"] == "running" and f"pid {os.getpid()}" in status[held.name]["holder"]
        assert [status[d.name]["state"] for d in others] == ["running", "running", "pending"]
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0
    assert "0 ran, 0 failed, 1 running elsewhere, 3 stopped" in out
    for run_dir in others[:2]:  # each finished its update and checkpointed; none is locked any more
        step = load_checkpoint(run_dir / "checkpoint.pt")["global_step"]
        assert step > 0 and step == json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["global_step"]
        assert lock_holder(run_dir) is None and not (run_dir / "summary.json").exists()
    assert main(["suite", "status", str(path)]) == 0
    text = capsys.readouterr().out
    assert "2 interrupted, 2 pending" in text and "at step" in text


@pytest.mark.slow
def test_two_runners_started_at_once_both_finish_with_counts_that_add_up(tmp_path, monkeypatch):
    """Each cell is claimed by one runner (no runner takes the other's fresh run dir for stale and
    deletes it); between them the runners run every cell exactly once."""
    monkeypatch.chdir(tmp_path)
    path = write_suite(tmp_path, TINY.replace("jobs = 2", "jobs = 1"))
    command = [sys.executable, "-m", "mario_apo.cli", "suite", "run", str(path)]
    runners = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [runner.communicate(timeout=240)[0] for runner in runners]
    assert [runner.returncode for runner in runners] == [0, 0], outputs
    ran = [int(re.search(r"(\d+) ran, 0 failed", out).group(1)) for out in outputs]
    assert sum(ran) == 4, outputs
    suite = load_suite(path)
    assert all(run_state(suite.runs_dir / spec.name) == "done" for spec in expand(suite))


def test_the_ladder_figure_tables_every_rung_rarest_first_and_keeps_tied_algos_apart(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mario_apo.report import DODGE, _ladder_figure

    class KeepAxes:
        """plt, keeping the figure's axes to read the drawn points back."""

        def subplots(self, *args, **kwargs):
            fig, self.ax = plt.subplots(*args, **kwargs)
            return fig, self.ax

    common, unsolved = "mario:1-1:goal:1144", "mario:1-1:goal:3000"

    def difference(algo):  # apo and apo-success tie on both rungs
        return {"a": algo, "b": "ppo", "metric": "final_success", "mean": 0.02, "bootstrap95": [-0.03, 0.07], "n": 5}

    summary = {
        "tasks": {task: {"comparisons": [difference("apo"), difference("apo-success")]} for task in (common, unsolved)}
    }
    random_policy = {
        common: {"success_rate": 0.1, "wilson_95": [0.08, 0.12]},
        unsolved: {"success_rate": 0.0, "wilson_95": [0.0, 0.004]},
    }
    keep = KeepAxes()
    lines = _ladder_figure(
        [common, unsolved], "ppo", ["ppo", "apo", "apo-success"], summary, random_policy, tmp_path, keep
    )
    assert [line for line in lines if line.startswith("| mario")] == [
        f"| {unsolved} | 0.000 | 0.02 [-0.03, 0.07] (5) | 0.02 [-0.03, 0.07] (5) |",
        f"| {common} | 0.100 | 0.02 [-0.03, 0.07] (5) | 0.02 [-0.03, 0.07] (5) |",
    ]
    assert (tmp_path / "ladder.png").stat().st_size > 1000
    apo, apo_success = (line.get_xdata() for line in keep.ax.lines if line.get_marker() == "o")
    np.testing.assert_allclose(apo_success / apo, DODGE)  # side by side, not on top of each other
    np.testing.assert_allclose(np.sqrt(apo * apo_success), [1e-3, 0.1])  # centred on the rungs (unsolved: the floor)
    (rungs,) = keep.ax.child_axes  # the rung names, along the top edge, each above its rung
    np.testing.assert_allclose(rungs.get_xticks(), [1e-3, 0.1])
    assert [tick.get_text() for tick in rungs.get_xticklabels()] == ["goal:3000", "goal:1144"]


def test_a_verdict_needs_spread_between_seeds():
    from mario_apo.report import _verdict

    def difference(per_seed):
        x, zeros = np.asarray(per_seed), np.zeros(len(per_seed))
        point, low, high = stats.paired_t_ci(x, zeros)
        return {"mean": point, "t95": [low, high], "bootstrap95": list(stats.paired_difference_ci(x, zeros)[1:])}

    # two seeds, each one success in a hundred ahead (0.01 up to rounding): both intervals are a point, no evidence
    assert _verdict(difference([0.05 - 0.04, 0.03 - 0.02])).startswith(
        "undecided: every seed differs by the same amount"
    )
    assert _verdict(difference([0.0, 0.0])) == "no detectable difference"
    assert _verdict(difference([0.3, 0.32, 0.28, 0.31, 0.29])) == "higher (both intervals exclude 0)"


def test_the_progress_section_windows_max_x_and_flags_beside_the_calibrated_random_policy(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mario_apo.config import EnvConfig
    from mario_apo.report import RunData
    from mario_apo.report_progress import onset_section, progress_section, random_policy_progress, windowed
    from mario_apo.suite import RunSpec

    random = random_policy_progress("1-1", EnvConfig())  # the committed calibration's settings are the defaults
    assert random is not None and 600 < random["mean_max_x"] < 900 and random["episodes"] == 1000
    assert random_policy_progress("1-1", EnvConfig(sticky_actions=0.0)) is None  # other settings: no reference
    steps = np.array([10, 20, 60, 90])
    np.testing.assert_array_equal(windowed(steps, np.array([1.0, 3.0, 5.0, 7.0]), np.array([0, 50, 100])), [2, 6])

    def run(seed, max_x, flags):
        spec = RunSpec("mario:1-1:dense", "ppo", seed)
        final = {"sampled": {"mean_max_x": 900.0, "success_rate": 0.01}}
        n = len(max_x)
        budgets = {"50": {"at_step": 60, "sampled": {"success_rate": 0.1 * seed}}}
        return RunData(
            spec, steps, np.zeros(4), steps, np.zeros(n), np.array(flags), final, {}, np.array(max_x), budgets
        )

    runs = {"ppo": [run(1, [400, 600, 800, 3200], [0, 0, 0, 1]), run(2, [500, 700, 900, 1000], [0, 0, 0, 0])]}
    lines, numbers = progress_section("mario:1-1:dense", runs, EnvConfig(), 100, tmp_path, plt)
    algo = numbers["algos"]["ppo"]
    assert algo["flags"] == [1, 0] and algo["episodes"] == [4, 4]
    # window (0, 5]: no episode ended in any run; (5, 10]: the first episode of each run
    assert np.isnan(algo["mean_max_x"][0]) and algo["mean_max_x"][1] == 450.0
    assert any(line.startswith("| 100 | ") for line in lines) and (tmp_path / "progress-mario-1-1-dense.png").exists()
    assert f"mean max x {random['mean_max_x']:.0f}" in "\n".join(lines)
    onset_lines, onset = onset_section(runs, {"success_rate": 0.05})
    assert onset["ppo"]["50"]["rates"] == [0.1, 0.2] and onset["ppo"]["final"]["rates"] == [0.01, 0.01]
    assert onset["ppo"]["50"]["t95"][0] == pytest.approx(0.15) and any(
        line.startswith("| 50 |") and "(n=2: 0.10, 0.20)" in line for line in onset_lines
    )
    one_seed_lines, _ = onset_section({"ppo": runs["ppo"][:1]}, None)
    assert any(line.startswith("| 50 |") and "0.10 (n=1, no interval)" in line for line in one_seed_lines)


def test_agent_step_axes_read_in_thousands_and_millions():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mario_apo.report_progress import label_agent_steps

    fig, ax = plt.subplots()
    label_agent_steps(ax)
    short = ax.xaxis.get_major_formatter()
    assert [short(x, None) for x in (0, 25_000, 200_000, 1_500_000)] == ["0", "25k", "200k", "1.5M"]
    assert ax.get_xlabel() == "agent steps"
    plt.close(fig)


def test_a_run_that_found_the_goal_kept_it_or_lost_it_by_its_final_policy():
    from mario_apo.report import RunData, _algo_row
    from mario_apo.suite import RunSpec

    steps = np.array([10, 20, 30])

    def run(seed, successes, final_rate):
        final = {"sampled": {"success_rate": final_rate}, "greedy": {"success_rate": 0.0}}
        spec = RunSpec("mountaincar", "ppo", seed)
        return RunData(spec, steps, np.zeros(3), steps, np.zeros(3), np.array(successes), final, {}, np.zeros(3), {})

    data = [run(1, [0, 1, 1], 0.9), run(2, [0, 1, 0], 0.0), run(3, [0, 0, 0], 0.0)]
    metrics = {"final_success": ("final", lambda r: r.final_success("sampled"))}
    row = _algo_row(data, metrics, np.array([0, 15, 30]))
    assert (row["kept_first_success"], row["lost_first_success"], row["never_succeeded"]) == (1, 1, 1)
    assert row["median_steps_to_first_success"] == 20.0


def test_list_settings_and_new_arms_pass_through_a_suite_file(tmp_path):
    from mario_apo.suite import RunSpec, run_config

    text = TINY.replace('wandb = "disabled"', 'wandb = "disabled"\nfinal_eval_at = [512, 1024]\ndevice = "cuda:1"')
    text += '\n[algos.sil]\nalgo = "sil"\nsil_batch = 64\n\n[algos.taken]\nalgo = "apo"\nanchor_target = "taken"\n'
    suite = load_suite(write_suite(tmp_path, text))  # a GPU device loads (and reports) on a CPU machine
    sil = run_config(suite, RunSpec("cartpole", "sil", 1))
    assert sil.log.final_eval_at == [512, 1024] and sil.device == "cuda:1" and sil.sil.sil_batch == 64
    assert run_config(suite, RunSpec("cartpole", "taken", 1)).anchor.anchor_target == "taken"


# What a run's algo uses beyond PPO and the env: anchors for APO, SIL's settings for SIL.
ALGO_PARTS = {"ppo": (), "apo": ("anchor",), "sil": ("sil",)}


def test_every_committed_suite_still_resolves_to_the_settings_its_packed_runs_were_made_with():
    """A fresh clone regenerates the committed results: each suite file whose runs are packed under
    experiments/results/ resolves today to the settings those runs recorded in config.json (PPO, env,
    and what the algo uses). A changed default that would make a suite file train something else fails
    here; such a suite pins the settings it was run with. Options added after a run was made (absent
    from its config.json) are left out: their defaults reproduce what the run did."""
    import dataclasses

    from mario_apo.suite import run_config

    root = Path(__file__).resolve().parent.parent
    checked, differ = 0, []
    for path in sorted((root / "experiments").glob("*.toml")):
        suite = load_suite(path)
        pack = root / "experiments" / "results" / suite.name / "finished-runs.tar.gz"
        if not pack.exists():
            continue
        with tarfile.open(pack) as tar:
            configs = {}
            for member in tar.getmembers():  # a run's config.json, or its population's first learner's
                run, _, rest = member.name.partition("/")
                if rest in ("config.json", "learner-0/config.json"):
                    configs[run] = json.load(tar.extractfile(member))
        for spec in expand(suite):
            if spec.name not in configs:
                continue
            cfg, recorded = run_config(suite, spec), configs[spec.name]
            for part in ("ppo", "env", *ALGO_PARTS[cfg.algo]):
                now, then = dataclasses.asdict(getattr(cfg, part)), recorded.get(part, {})
                differ += [f"{path.name} {spec.name} {part}.{key}: ran {then[key]!r}, now {now[key]!r}"
                           for key in then.keys() & now.keys() if then[key] != now[key]]  # fmt: skip
            checked += 1
    assert not differ, "\n".join(differ)
    assert checked >= 500  # every packed run of every committed suite (521 when this was written)
