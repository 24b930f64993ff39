"""Benchmark suites: a TOML file -> a matrix of (task, algo, seed) runs -> a bounded pool of processes.

A suite file (``experiments/<suite>.toml``)::

    name = "cartpole"            # runs land in runs/<name>/, results in experiments/results/<name>/
    description = "..."
    tasks = ["cartpole"]
    seeds = [1, 2, 3]
    total_steps = 100000
    jobs = 2                     # default for --jobs
    checkpoint_every = 20        # updates; what an interrupted run can lose
    random_policy_episodes = 0   # > 0: measure a uniform-random policy's success rate per task

    [train]                      # flags for every run (mario-apo train --KEY VALUE)
    max_episode_steps = 2000

    [algos.ppo]                  # one table per compared algorithm: a label and its flags
    algo = "ppo"
    [algos.apo]
    algo = "apo"
    beta = 0.1

Each run is ``mario-apo train`` in its own process. Finished runs (``summary.json``)
are skipped, runs with a checkpoint are resumed, and runs that died before their
first checkpoint start again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mario_apo.errors import SuiteError, TaskError, UsageError
from mario_apo.flags import resolve_run_config, train_parser
from mario_apo.tasks import parse_task


@dataclass
class Suite:
    name: str
    tasks: list[str]
    seeds: list[int]
    total_steps: int
    algos: dict[str, dict[str, Any]]
    train: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1
    checkpoint_every: int = 20
    random_policy_episodes: int = 0
    description: str = ""
    path: Path | None = None

    @property
    def runs_dir(self) -> Path:
        return Path("runs") / self.name

    @property
    def results_dir(self) -> Path:
        return Path("experiments") / "results" / self.name


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix."""

    task: str
    label: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.label}-{self.task.replace(':', '-')}-s{self.seed}"


def load_suite(path: Path) -> Suite:
    """Parse and check a suite file; errors name the file and what is valid."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path.with_suffix(".toml")
    if not path.exists():
        raise SuiteError(f"no suite file {path} (suites are TOML files, e.g. experiments/cartpole.toml)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path} is not valid TOML: {err}") from None
    missing = [key for key in ("name", "tasks", "seeds", "total_steps", "algos") if key not in data]
    if missing:
        raise SuiteError(f"{path} lacks {', '.join(missing)} (a suite needs name, tasks, seeds, total_steps, algos)")
    known = set(Suite.__dataclass_fields__) - {"path"}
    unknown = set(data) - known
    if unknown:
        raise SuiteError(f"{path}: unknown keys {sorted(unknown)}; valid keys are {sorted(known)}")
    suite = Suite(**data, path=path)
    for task in suite.tasks:
        try:
            parse_task(task)
        except TaskError as err:
            raise SuiteError(f"{path}: {err}") from None
    for label, flags in suite.algos.items():
        if flags.get("algo") not in ("ppo", "apo"):
            raise SuiteError(f'{path}: [algos.{label}] needs algo = "ppo" or "apo"')
    _check_flags(suite)
    return suite


def _check_flags(suite: Suite) -> None:
    """Resolve every algo's settings now, so a typo fails before hours of runs, not in one of them."""
    for label in suite.algos:
        try:
            run_config(suite, RunSpec(suite.tasks[0], label, suite.seeds[0]))
        except UsageError as err:
            raise SuiteError(f"{suite.path}: [algos.{label}] or [train]: {err}") from None


def run_config(suite: Suite, spec: RunSpec):
    """The RunConfig a cell's ``mario-apo train`` resolves: the same flags through the same function."""
    command = train_command(suite, spec, "new", threads=1)
    return resolve_run_config(train_parser().parse_args(command[command.index("train") + 1 :]))


def expand(suite: Suite) -> list[RunSpec]:
    """The run matrix: every task x algo x seed, seed-major, so a suite stopped part-way
    has every (task, algo) pair at the same number of seeds."""
    return [RunSpec(task, label, seed) for seed in suite.seeds for task in suite.tasks for label in suite.algos]


def run_state(run_dir: Path) -> str:
    """``done``, ``resume`` (has a checkpoint), ``stale`` (died before its first checkpoint) or ``new``."""
    if (run_dir / "summary.json").exists():
        return "done"
    if (run_dir / "checkpoint.pt").exists():
        return "resume"
    return "stale" if run_dir.exists() else "new"


def _flags(values: dict[str, Any]) -> list[str]:
    args = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


def train_command(suite: Suite, spec: RunSpec, state: str, threads: int) -> list[str]:
    base = [sys.executable, "-m", "mario_apo.cli", "train", "--no-progress"]
    run_dir = suite.runs_dir / spec.name
    if state == "resume":
        return base + ["--resume", str(run_dir)]
    flags = dict(suite.train)
    flags.update(suite.algos[spec.label])
    return (
        base
        + _flags(flags)
        + [
            "--task",
            spec.task,
            "--seed",
            str(spec.seed),
            "--total-steps",
            str(suite.total_steps),
            "--run-dir",
            str(suite.runs_dir),
            "--name",
            spec.name,
            "--checkpoint-every",
            str(suite.checkpoint_every),
            "--wandb-group",
            suite.name,
            "--wandb-tags",
            f"{suite.name},{spec.label}",
            "--torch-threads",
            str(threads),
        ]
    )


def run_suite(suite: Suite, jobs: int | None = None) -> dict[str, int]:
    """Run every unfinished cell with at most ``jobs`` processes; returns counts by outcome."""
    jobs = jobs or suite.jobs
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)  # jobs x threads <= cores: no oversubscription
    suite.runs_dir.mkdir(parents=True, exist_ok=True)
    specs = expand(suite)
    counts = {"done": 0, "ran": 0, "failed": 0}
    todo = []
    for spec in specs:
        state = run_state(suite.runs_dir / spec.name)
        if state == "done":
            counts["done"] += 1
            continue
        if state == "stale":  # config and metrics of a run that never reached a checkpoint
            shutil.rmtree(suite.runs_dir / spec.name)
            state = "new"
        todo.append((spec, state))
    if suite.random_policy_episodes:
        measure_random_policies(suite)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))

    def launch(spec: RunSpec, state: str) -> tuple[RunSpec, int]:
        log = suite.runs_dir / f"{spec.name}.log"
        with log.open("a") as out:
            proc = subprocess.run(
                train_command(suite, spec, state, threads), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return spec, proc.returncode

    with tqdm(total=len(specs), initial=counts["done"], desc=f"suite {suite.name}", unit="run") as progress:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(launch, spec, state) for spec, state in todo]
            for future in as_completed(futures):
                spec, code = future.result()
                counts["ran" if code == 0 else "failed"] += 1
                if code != 0:
                    tqdm.write(f"suite {suite.name}: {spec.name} exited {code}; see {suite.runs_dir / spec.name}.log")
                progress.update()
    return counts


def measure_random_policies(suite: Suite) -> dict[str, dict[str, float]]:
    """Success rate of a uniform-random policy per task (the rarity axis of the ladder plot), under the
    env settings the suite's first algo trains with, played by ``mario-apo calibrate``'s code."""
    from dataclasses import asdict

    import numpy as np

    from mario_apo.calibrate import random_episodes
    from mario_apo.stats import wilson_interval

    path = suite.runs_dir / "random_policy.json"
    measured = json.loads(path.read_text()) if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    for task in suite.tasks:
        if task in measured:
            continue
        env_cfg = run_config(suite, RunSpec(task, next(iter(suite.algos)), suite.seeds[0])).env
        n = suite.random_policy_episodes
        episodes = random_episodes(parse_task(task), env_cfg, n, workers=os.cpu_count() or 1)
        successes, max_xs = [e.success for e in episodes], [e.max_x for e in episodes]
        measured[task] = {
            "episodes": suite.random_policy_episodes,
            "success_rate": float(np.mean(successes)),
            "wilson_95": wilson_interval(sum(successes), n),
            "mean_max_x": float(np.mean(max_xs)),
            "env": asdict(env_cfg),
        }
        path.write_text(json.dumps(measured, indent=2))
    return measured
