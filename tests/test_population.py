"""Populations on Ray (shared anchors, a learner killed and restarted, stop and resume) and suites on the
Ray backend: a real local Ray instance (ray.init(num_cpus=2)), real CartPole training, no mocks. The
hub's ranking is checked without Ray. Tests never connect to another host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mario_apo.anchors import Anchor
from mario_apo.cli import main
from mario_apo.config import AnchorConfig
from mario_apo.population import AnchorHub
from mario_apo.runs import lock_holder
from mario_apo.seeding import SeedStreams

from conftest import assert_one_line_error, assert_tables_on_grid

# 2 learners x 4,096 CartPole steps (16 updates of 8 envs x 32 steps): episodes of every length end
# in every update, so the hub's top K changes often and draws from both learners.
POPULATION = ["train", "--task", "cartpole", "--algo", "apo", "--learners", "2", "--total-steps", "4096"]
QUIET = ["--no-progress", "--wandb", "disabled", "--final-eval-episodes", "4", "--final-eval-greedy", "2"]


def anchor(episode_return: float, finder: int, episode_id: int) -> Anchor:
    return Anchor(
        frames=np.zeros((3, 4), np.float32),
        logprobs=np.full((3, 2), np.log(0.5), np.float32),
        actions=np.zeros(3, np.int64),
        episode_return=episode_return,
        success=False,
        max_x=0,
        episode_id=episode_id,
        admitted_update=1,
        discounted_return=episode_return,
        finder=finder,
    )


@pytest.mark.parametrize(("ties", "kept"), [("newer", (1, 7)), ("older", (0, 7))])
def test_the_hub_ranks_offers_as_a_learner_would_and_versions_its_top_k(ties, kept):
    hub = AnchorHub(AnchorConfig(anchors=2, anchor_ties=ties))
    version, top, accepted = hub.sync([anchor(5.0, finder=0, episode_id=7), anchor(1.0, finder=0, episode_id=8)], -1)
    assert (version, accepted) == (1, 2) and [a.episode_return for a in top] == [5.0, 1.0]
    assert hub.sync([], version) == (1, None, 0)  # nothing changed: nothing copied
    # a tie with the best, from another learner: the newer wins only with ties = newer
    version, top, accepted = hub.sync([anchor(5.0, finder=1, episode_id=7)], version)
    assert accepted == 1 and (top[0].finder, top[0].episode_id) == kept
    assert hub.sync([anchor(0.5, finder=1, episode_id=9)], version) == (version, None, 0)  # below the worst
    # rebuilt from checkpoints holding copies of the same anchors: each once, the order kept
    rebuilt = AnchorHub(AnchorConfig(anchors=2, anchor_ties=ties))
    assert rebuilt.restore(top + [top[1], anchor(0.1, finder=0, episode_id=1)]) == 2
    assert [(a.finder, a.episode_id) for a in rebuilt.buffer.anchors] == [(a.finder, a.episode_id) for a in top]


def test_the_hub_holds_the_memory_cap_once():
    one = anchor(1.0, finder=0, episode_id=1).nbytes  # 96 bytes
    hub = AnchorHub(AnchorConfig(anchors=8, anchor_max_mb=2.5 * one / 2**20))
    hub.sync([anchor(float(k), finder=k % 2, episode_id=k) for k in range(6)], -1)
    assert len(hub.buffer) == 2 and hub.stats()["mb"] * 2**20 <= 2.5 * one
    assert [a.episode_return for a in hub.buffer.anchors] == [5.0, 4.0]  # the lowest-ranked were evicted


def test_learner_seeds_are_distinct_and_derived_from_the_run_seed():
    seeds = SeedStreams(1).learner_seeds(4)
    assert (
        len(set(seeds)) == 4 and seeds == SeedStreams(1).learner_seeds(4) and seeds != SeedStreams(2).learner_seeds(4)
    )
    assert set(seeds).isdisjoint({1, 2, 3, 4})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learners", "0"], "expected a positive integer"),
        (["--learners", "2", "--share-anchors", "--algo", "ppo"], "--algo ppo keeps none"),
        (["--share-anchors"], "add --learners N"),
        (["--address", "auto"], "--address is the Ray cluster of a population"),
        (["--learners", "2", "--address", "127.0.0.1:1"], "cannot reach a Ray cluster"),  # this machine, closed
    ],
)
def test_bad_population_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    assert main(["train", "--task", "cartpole", "--run-dir", str(tmp_path / "runs"), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "runs").exists()


def test_without_the_ray_extra_populations_and_the_ray_backend_say_how_to_install_it(tmp_path):
    # a Python that cannot import ray (as without the extra), running the real CLI
    for argv in (POPULATION, ["suite", "run", "experiments/none.toml", "--backend", "ray"]):
        code = "import sys; sys.modules['ray'] = None; from mario_apo.cli import main; sys.exit(main(sys.argv[1:]))"
        if argv[0] == "suite":
            (tmp_path / "experiments").mkdir(exist_ok=True)
            (tmp_path / "experiments" / "none.toml").write_text(
                'name = "none"\ntasks = ["cartpole"]\nseeds = [1]\ntotal_steps = 512\n[algos.ppo]\nalgo = "ppo"\n'
            )
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert (
            done.stderr.strip() == "mario-apo: error: populations and --backend ray need Ray: pip install -e '.[ray]'"
        )
        assert not (tmp_path / "runs").exists()


needs_ray = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None,
    reason="the ray extra is not installed (pip install -e '.[ray]')",
)


def metric_lines(run_dir: Path, key: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if key in r]


@pytest.mark.slow
@needs_ray
def test_a_shared_anchor_population_anchors_each_learner_to_the_others_episodes(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [*POPULATION, "--share-anchors", "--name", "pop", "--run-dir", str(runs), *QUIET]
    assert main(argv) == 0
    pop = runs / "pop"
    summary = json.loads((pop / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["hub"]["anchors"] == 8
    record = json.loads((pop / "population.json").read_text())["population"]
    assert record["learner_seeds"] == SeedStreams(1).learner_seeds(2) and record["share_anchors"] is True
    for i in (0, 1):
        learner = pop / f"learner-{i}"
        assert json.loads((learner / "config.json").read_text())["seed"] == record["learner_seeds"][i]
        assert (learner / "summary.json").exists() and (learner / "checkpoint.pt").exists()
        # it anchored to the other learner's episodes at some update, and offered its own
        foreign = [r["anchor/foreign_fraction"] for r in metric_lines(learner, "anchor/foreign_fraction")]
        assert len(foreign) == 16 and max(foreign) > 0
        finders = {a["finder"] for a in json.loads((learner / "anchors.json").read_text())["anchors"]}
        assert finders <= {0, 1}
    # the population metrics, on all learners' steps together
    population = metric_lines(pop, "population/best_return")
    assert population[-1]["global_step"] == 2 * 4096 and population[-1]["population/episodes"] > 0
    assert population[-1]["population/best_return"] == max(
        r["charts/episodic_return"]
        for i in (0, 1)
        for r in metric_lines(pop / f"learner-{i}", "charts/episodic_return")
    )
    # eval works on a learner's run dir; on the population dir it says where the learners are
    assert main(["eval", str(pop / "learner-1"), "--episodes", "2"]) == 0
    assert main(["eval", str(pop)]) == 2
    assert "learner-<i>" in capsys.readouterr().err


@pytest.fixture
def start_cli(tmp_path):
    """``start_cli(*argv)``: ``mario-apo ARGV`` in a real process of its own session (as a terminal's:
    a Ctrl-C reaches the driver and Ray's own processes) in tmp_path. One still running at teardown
    (its test failed) is killed with its Ray instance, so that it does not train on beside the next tests."""
    started: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mario_apo.cli", *argv],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.fixture
def start_population(start_cli):
    """``start_population(*flags)``: a 2-learner CartPole population ``runs/pop`` (``start_cli``)."""
    return lambda *extra: start_cli(
        *POPULATION, "--name", "pop", "--run-dir", "runs", *QUIET, "--checkpoint-every", "2", *extra
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
@needs_ray
def test_a_killed_learner_is_restarted_by_ray_and_resumes_while_the_other_goes_on(tmp_path, start_population):
    proc = start_population("--total-steps", "16384", "--share-anchors")  # long enough to be killed mid-run
    learner = tmp_path / "runs" / "pop" / "learner-0"
    wait_for(lambda: (learner / "checkpoint.pt").exists(), proc)
    pid = int((learner / ".lock").read_text().split()[1])  # the lock names its holder: the learner's process
    os.kill(pid, signal.SIGKILL)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    assert "learner-0: resuming from its checkpoint" in output
    summary = json.loads((tmp_path / "runs" / "pop" / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["failed"] == {}
    updates = [r["charts/update"] for r in metric_lines(learner, "charts/update")]
    assert updates == list(range(1, 65))  # every update once: resumed at its checkpoint, not started over


@pytest.mark.slow
@needs_ray
def test_ctrl_c_stops_every_learner_with_a_checkpoint_and_resume_rebuilds_the_hub(tmp_path, start_population):
    proc = start_population("--total-steps", "1000000", "--share-anchors")  # stopped long before its end
    pop = tmp_path / "runs" / "pop"
    wait_for(lambda: all((pop / f"learner-{i}" / "checkpoint.pt").exists() for i in (0, 1)), proc)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the driver and Ray's processes in its group
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert "stopping every learner" in output and not (pop / "summary.json").exists()
    assert json.loads(output.strip().splitlines()[-1])["interrupted"] is True
    for i in (0, 1):
        assert not (pop / f"learner-{i}" / "summary.json").exists()
    # resume to a budget a few updates past where the later learner stopped (8 envs x 32 steps an update)
    stopped = max(torch.load(pop / f"learner-{i}" / "checkpoint.pt", weights_only=True)["update"] for i in (0, 1))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mario_apo.cli",
            "train",
            "--resume",
            "runs/pop",
            "--total-steps",
            str((stopped + 8) * 256),
            "--no-progress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((pop / "summary.json").read_text())
    assert summary["finished"] == [0, 1] and summary["hub"]["anchors"] == 8
    for i in (0, 1):
        updates = [r["charts/update"] for r in metric_lines(pop / f"learner-{i}", "charts/update")]
        assert updates == list(range(1, stopped + 9))  # the stopped ones once, then the rest up to the new budget


RAY_SUITE = """
name = "tiny"
tasks = ["cartpole"]
seeds = [1, 2]
total_steps = 1024
jobs = 2
checkpoint_every = 2

[train]
final_eval_episodes = 4
final_eval_greedy = 2
wandb = "disabled"

[algos.apo]
algo = "apo"
"""


@pytest.mark.slow
@needs_ray
def test_a_suite_on_the_ray_backend_finishes_the_same_runs_as_the_local_backend(tmp_path, monkeypatch, capsys):
    finished = {}
    for backend in ("local", "ray"):
        where = tmp_path / backend
        (where / "experiments").mkdir(parents=True)
        (where / "experiments" / "tiny.toml").write_text(RAY_SUITE)
        monkeypatch.chdir(where)
        assert main(["suite", "run", "experiments/tiny.toml", "--backend", backend]) == 0
        assert "0 already finished, 2 ran, 0 failed" in capsys.readouterr().out
        finished[backend] = sorted(p.parent.name for p in (where / "runs" / "tiny").glob("*/summary.json"))
        assert main(["suite", "run", "experiments/tiny.toml", "--backend", backend]) == 0  # skips what finished
        assert "2 already finished, 0 ran" in capsys.readouterr().out
    assert finished["local"] == finished["ray"] and len(finished["ray"]) == 2
    # same seed, same settings: the same training, whichever backend ran it
    for name in finished["ray"]:
        local, ray = (
            json.loads((tmp_path / b / "runs" / "tiny" / name / "summary.json").read_text()) for b in finished
        )
        assert local["final_eval"] == ray["final_eval"]
    assert main(["suite", "run", "experiments/tiny.toml", "--gpus-per-run", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--backend ray")


@pytest.mark.slow
@needs_ray
def test_ctrl_c_stops_a_suite_on_ray_with_a_checkpoint_in_every_run(tmp_path, start_cli):
    (tmp_path / "experiments").mkdir()
    # 3 cells on 2 CPUs: the third waits for one, and must not start after the stop
    suite = RAY_SUITE.replace("1024", "1000000").replace("seeds = [1, 2]", "seeds = [1, 2, 3]")  # stopped long before
    (tmp_path / "experiments" / "tiny.toml").write_text(suite)
    proc = start_cli("suite", "run", "experiments/tiny.toml", "--backend", "ray")
    runs = [tmp_path / "runs" / "tiny" / f"apo-cartpole-s{seed}" for seed in (1, 2, 3)]
    wait_for(lambda: sum((run / "checkpoint.pt").exists() for run in runs) == 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    assert "mario-apo: SIGINT: suite: stopping the runs" in output and "3 stopped" in output, output
    started = [run for run in runs if (run / "checkpoint.pt").exists()]
    assert len(started) == 2, output
    for run in started:  # each stopped after an update, with its checkpoint: none finished, none still training
        assert not (run / "summary.json").exists() and lock_holder(run) is None
        assert torch.load(run / "checkpoint.pt", weights_only=True)["update"] >= 1


POPULATION_SUITE = """
name = "pops"
description = "two tiny CartPole populations per seed"
tasks = ["cartpole"]
seeds = [1, 2]
total_steps = 1024
jobs = 1
checkpoint_every = 2

[train]
learners = 2
final_eval_episodes = 4
final_eval_greedy = 2
wandb = "disabled"

[algos.independent]
algo = "apo"

[algos.shared]
algo = "apo"
share_anchors = true
"""


@pytest.mark.slow
@needs_ray
def test_a_population_suite_runs_reports_and_packs_its_learners(tmp_path, monkeypatch, capsys):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "pops.toml").write_text(POPULATION_SUITE)
    monkeypatch.chdir(tmp_path)
    assert main(["suite", "run", "experiments/pops.toml", "--backend", "ray"]) == 0  # the cells join its cluster
    assert "0 already finished, 4 ran, 0 failed" in capsys.readouterr().out
    assert main(["suite", "report", "experiments/pops.toml"]) == 0
    summary = json.loads(Path("experiments/results/pops/summary.json").read_text())
    # the mean learner's final-policy success, by hand from the learners' own summaries
    for label in ("independent", "shared"):
        by_hand = [
            np.mean(
                [
                    json.loads(Path(f"runs/pops/{label}-cartpole-s{seed}/learner-{i}/summary.json").read_text())[
                        "final_eval"
                    ]["sampled"]["success_rate"]
                    for i in (0, 1)
                ]
            )
            for seed in (1, 2)
        ]
        assert summary["tasks"]["cartpole"]["arms"][label]["mean_final_success"] == pytest.approx(by_hand)
    comparison = summary["tasks"]["cartpole"]["comparisons"][0]
    assert (comparison["a"], comparison["b"], comparison["n"]) == ("shared", "independent", 2)
    report = Path("experiments/results/pops/report.md").read_text()
    assert "| shared - independent |" in report
    assert_tables_on_grid(report)
    assert main(["suite", "pack", "experiments/pops.toml"]) == 0
    with tarfile.open("experiments/results/pops/finished-runs.tar.gz") as tar:
        names = set(tar.getnames())
    assert "shared-cartpole-s1/population.json" in names and "shared-cartpole-s1/learner-1/metrics.jsonl" in names
    # a shared population log that says how many learners it has wrongly is one line, not a traceback
    pop_summary = Path("runs/pops/shared-cartpole-s1/summary.json")
    pop_summary.write_text(json.dumps({**json.loads(pop_summary.read_text()), "learners": "2"}))
    capsys.readouterr()
    assert main(["suite", "report", "experiments/pops.toml", "--out", "damaged"]) == 2
    assert_one_line_error(capsys.readouterr().err, 'learners is "2"; a log written by mario-apo holds an integer')
    assert not Path("damaged").exists()


@pytest.mark.slow
@needs_ray
def test_a_mario_population_shares_anchors_that_replay_verifies(tmp_path, capsys):
    # env workers forked from a learner actor's thread; anchors found by either learner replay on the emulator
    argv = ["train", "--task", "mario:1-1:goal:300", "--algo", "apo", "--learners", "2", "--share-anchors"]
    argv += ["--num-envs", "2", "--num-steps", "64", "--total-steps", "128", "--num-minibatches", "2"]
    argv += [
        "--update-epochs",
        "1",
        "--video-every",
        "0",
        "--max-episode-steps",
        "400",
        "--name",
        "pop",
        "--run-dir",
        str(tmp_path),
        *QUIET,
    ]
    assert main(argv) == 0
    learner = tmp_path / "pop" / "learner-0"
    anchors = json.loads((learner / "anchors.json").read_text())["anchors"]
    assert anchors and {a["finder"] for a in anchors} <= {0, 1}
    # an anchor the other learner found, if the hub kept one (else the best), verified frame by frame
    rank = next((a["rank"] for a in anchors if a["finder"] == 1), 0)
    capsys.readouterr()
    assert main(["replay", str(learner), "--episode", str(rank), "--out", str(tmp_path / "anchor.mp4")]) == 0
    assert ": verified" in capsys.readouterr().out
