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

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mario_apo.config import ALGOS, RunConfig, check_setting
from mario_apo.errors import RunLogError, SuiteError, TaskError, UsageError
from mario_apo.flags import config_fields, flag_dest, resolve_run_config, train_parser
from mario_apo.logger import is_update_record, read_metrics
from mario_apo.run_logs import read_random_policies, read_summary, records
from mario_apo.runs import (
    RunFiles,
    check_name,
    check_output_file,
    lock_holder,
    open_for_append,
    open_new_file,
    refuse_non_regular,
    write_json,
)
from mario_apo.stopping import StopRequest
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

    def trains_populations(self, label: str) -> bool:
        """Whether an algo's cells train populations (``learners = N`` in its table or in [train])."""
        return bool({**self.train, **self.algos[label]}.get("learners"))

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
    try:
        _check_suite_values(data)
    except UsageError as err:
        raise SuiteError(f"{path}: {err}") from None
    suite = Suite(**data, path=path)
    for task in suite.tasks:
        try:
            parse_task(task)
        except TaskError as err:
            raise SuiteError(f"{path}: {err}") from None
    for label, flags in suite.algos.items():
        if flags.get("algo") not in ALGOS:
            raise SuiteError(f"{path}: [algos.{label}] needs algo = one of {', '.join(map(repr, ALGOS))}")
    _check_flags(suite)
    return suite


MAX_CELLS = 100_000
"""The most runs a suite's matrix may hold (tasks x algos x seeds)."""


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_suite_values(data: dict[str, Any]) -> None:
    """Every top-level value of a suite file, by type and range; the settings tables by ``_check_settings``."""
    check_name(data["name"], "the suite's name")  # runs/<name>, experiments/results/<name>
    tasks, seeds, algos = data["tasks"], data["seeds"], data["algos"]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise UsageError(f"tasks must be a non-empty list of task strings, got {tasks!r}")
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s, 0, 2**63 - 1) for s in seeds):
        raise UsageError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"seeds must not repeat, got {seeds!r}")
    limits = {"total_steps": (1, 10**12), "jobs": (1, 1024), "checkpoint_every": (1, 10**9)}
    limits["random_policy_episodes"] = (0, 10**6)
    for key, (low, high) in limits.items():
        if key in data and not _is_int(data[key], low, high):
            raise UsageError(f"{key} must be an integer in {low:,}-{high:,}, got {data[key]!r}")
    if not isinstance(data.get("description", ""), str):
        raise UsageError("description must be a string")
    if not isinstance(algos, dict) or not algos or not all(isinstance(t, dict) for t in algos.values()):
        raise UsageError("algos must hold one table per compared algorithm: [algos.<label>] with algo = ...")
    if len(tasks) * len(seeds) * len(algos) > MAX_CELLS:
        raise UsageError(
            f"the matrix of {len(tasks)} tasks x {len(algos)} algos x {len(seeds)} seeds exceeds {MAX_CELLS:,} runs"
        )
    _check_settings(data.get("train", {}), "[train]")
    for label, settings in algos.items():
        check_name(label, "an algo label ([algos.<label>], part of its runs' names)")
        _check_settings(settings, f"[algos.{label}]")


# The keys a suite's [train] and [algos.*] tables take: the settings of a run, and the population's.
# What a run *is* (its task, seed, budget, name, folder, resumption) belongs to the runner.
_RUNNER_OWNED = {"seed", "total_steps", "run_dir", "name", "checkpoint_every", "progress"}
_POPULATION_KEYS = {"learners": (1, 1024), "share_anchors": None}


def _suite_setting_fields() -> dict[str, Any]:
    fields = {}
    for cls in (RunConfig, *RunConfig.PARTS.values()):
        for f in config_fields(cls):
            if flag_dest(f) not in _RUNNER_OWNED:
                fields[flag_dest(f)] = f
    return fields


def _check_settings(settings: Any, table: str) -> None:
    if not isinstance(settings, dict):
        raise UsageError(f"{table} must be a table of settings")
    fields = _suite_setting_fields()
    for key, value in settings.items():
        if key in _POPULATION_KEYS:
            limits = _POPULATION_KEYS[key]
            valid = isinstance(value, bool) if limits is None else _is_int(value, *limits)
            if not valid:
                raise UsageError(f"{table} {key} must be {'true or false' if limits is None else 'an integer 1-1024'}")
        elif key in fields:
            check_setting(fields[key], value, f"{table} {key}")
        else:
            owner = " (the suite runner sets it for each run)" if key in _RUNNER_OWNED | {"task", "resume"} else ""
            raise UsageError(f"{table} has no run setting {key!r}{owner}: 'mario-apo train --help' lists them")


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
    """``done``, ``running`` (a process holds its lock), ``resume`` (has a checkpoint), ``stale`` (died
    before its first checkpoint) or ``new``."""
    files = RunFiles(run_dir)
    if files.summary.exists():
        return "done"
    if lock_holder(run_dir):
        return "running"
    if any(RunFiles(d).checkpoint.exists() for d in [run_dir, *files.learners()]):  # a run, a population
        return "resume"
    return "stale" if run_dir.exists() else "new"


def _flags(values: dict[str, Any]) -> list[str]:
    args = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):  # a list setting's flag takes its items comma-separated
            args += [flag, ",".join(map(str, value))]
        else:  # one argument: a value that starts with dashes stays a value
            args.append(f"{flag}={value}")
    return args


def train_command(suite: Suite, spec: RunSpec, state: str, threads: int, address: str | None = None) -> list[str]:
    """The cell's ``mario-apo train`` command; ``address``: the Ray cluster a population cell joins."""
    base = [sys.executable, "-m", "mario_apo.cli", "train", "--no-progress"]
    if address and suite.trains_populations(spec.label):
        base += ["--address", address]
    run_dir = suite.runs_dir / spec.name
    threads_flag = ["--torch-threads", str(threads)]
    if state == "resume":  # the suite's budget, so that raising total_steps in the file extends its runs
        return base + ["--total-steps", str(suite.total_steps), *threads_flag, "--resume", str(run_dir)]
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
            *threads_flag,
        ]
    )


class _Children:
    """The runner's live ``mario-apo train`` processes. Each runs in its own session, so a Ctrl-C in
    the terminal reaches only the runner, which forwards one SIGTERM to each: every run finishes
    its update and checkpoints, and no new run starts. A second signal is forwarded too (abort)."""

    def __init__(self):
        self.stopping = False
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def run(self, command: list[str], log: Path, env: dict[str, str]) -> int | None:
        """The exit code of ``command``, or None if the runner is stopping and it was not started (or the
        stop signal reached it before it could checkpoint: it had nothing to save)."""
        with self._lock:
            if self.stopping:
                return None
            with open_for_append(log) as out:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._procs.add(proc)
        code = proc.wait()
        with self._lock:
            self._procs.discard(proc)
        return None if self.stopping and code == -signal.SIGTERM else code

    def stop(self, signum, frame) -> None:
        self.stopping = True
        tqdm.write(f"suite: {signal.Signals(signum).name}: stopping the runs (each checkpoints), starting no new one")
        with self._lock:
            for proc in self._procs:
                proc.send_signal(signal.SIGTERM)


def run_suite(
    suite: Suite,
    jobs: int | None = None,
    backend: str = "local",
    cpus_per_run: int | None = None,
    gpus_per_run: float = 0.0,
) -> dict[str, int]:
    """Run every unfinished cell; returns counts by outcome: ``done`` (finished before), ``ran``,
    ``failed``, ``elsewhere`` (locked by another runner or process) and ``stopped`` (interrupted by a
    stop signal; they resume next time).

    Each run gets ``cpus_per_run`` torch threads (default ``cores // jobs``). ``local``: at most ``jobs``
    processes here. ``ray``: each cell a Ray task (``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs) on the Ray
    instance this process is connected to (``mario_apo.population.start_ray``), running the same command
    in this working directory, so a cluster needs the project and ``runs/`` at the same path on every node.
    """
    jobs = jobs or suite.jobs
    cores = os.cpu_count() or 1
    threads = cpus_per_run or max(1, cores // jobs)  # jobs x threads <= cores: no oversubscription
    suite.runs_dir.mkdir(parents=True, exist_ok=True)
    specs = expand(suite)
    counts = {"done": 0, "ran": 0, "failed": 0, "elsewhere": 0, "stopped": 0}
    todo = []
    for spec in specs:
        state = run_state(suite.runs_dir / spec.name)
        if state in ("done", "running"):
            counts["done" if state == "done" else "elsewhere"] += 1
        else:
            todo.append(spec)
    if not todo and counts["elsewhere"]:
        raise SuiteError(
            f"every unfinished run of suite {suite.name} ({counts['elsewhere']}) is being trained elsewhere; "
            f"'mario-apo suite status {suite.path}' shows them"
        )
    if suite.random_policy_episodes:
        measure_random_policies(suite)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tqdm(total=len(specs), initial=counts["done"], desc=f"suite {suite.name}", unit="run") as progress:

        def finished(spec: RunSpec, outcome: str) -> None:
            counts[outcome] += 1
            if outcome == "failed":
                tqdm.write(f"suite {suite.name}: {spec.name} failed; see {suite.runs_dir / spec.name}.log")
            progress.update()

        if backend == "ray":
            _run_on_ray(suite, todo, threads, gpus_per_run, env, finished)
        else:
            _run_locally(suite, todo, jobs, threads, env, finished)
    return counts


def launch_cell(
    suite: Suite, spec: RunSpec, threads: int, run, address: str | None = None, stopping=lambda: False
) -> str:
    """Take one cell on from where its run dir stands (new; stale: start over; interrupted: resume)
    with ``run(command, log)`` (its exit code, or None if stopped before it started); the outcome.

    The runner first claims the cell (``claim_cell``): two runners of one suite never take the same cell,
    and one never takes another's just-created run dir (no checkpoint yet, not locked yet) for stale."""
    if stopping():
        return "stopped"
    run_dir = suite.runs_dir / spec.name
    with claim_cell(suite.runs_dir / f".{spec.name}.claim") as claimed:
        if not claimed:
            return "elsewhere"
        state = run_state(run_dir)
        if state == "done":  # finished meanwhile, not by this runner (another runner, or a Ray task's first try)
            return "done"
        if state == "running":
            return "elsewhere"
        if state == "stale":  # config and metrics of a run that never reached a checkpoint
            shutil.rmtree(run_dir)
            state = "new"
        code = run(train_command(suite, spec, state, threads, address), suite.runs_dir / f"{spec.name}.log")
    if code is None or (code == 0 and not RunFiles(run_dir).summary.exists()):
        return "stopped"
    if code == 2 and lock_holder(run_dir):  # someone started it by hand between our look and our start
        return "elsewhere"
    return "ran" if code == 0 else "failed"


@contextlib.contextmanager
def claim_cell(path: Path) -> Iterator[bool]:
    """An exclusive OS lock (``flock``) on a cell's claim file while a runner takes the cell on: True when
    this runner got it, False when another holds it. The OS releases it when the runner ends, however."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _run_locally(suite: Suite, todo: list[RunSpec], jobs: int, threads: int, env: dict, finished) -> None:
    children = _Children()
    previous = {signum: signal.signal(signum, children.stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(
                    launch_cell,
                    suite,
                    spec,
                    threads,
                    lambda command, log: children.run(command, log, env),
                    stopping=lambda: children.stopping,
                ): spec
                for spec in todo
            }
            for future in as_completed(futures):
                finished(futures[future], future.result())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ray_cell(suite: Suite, spec: RunSpec, threads: int, env: dict, cwd: str, address: str | None, stop: str) -> str:
    """A cell as a Ray task: the local runner's command, in the driver's working directory. Its run
    dir's state is read when it starts, so a task Ray retries (its node died) resumes the run's
    checkpoint. The file ``stop``, once there, is the driver's Ctrl-C: a running cell stops its run
    with a checkpoint (SIGTERM), a cell not started yet does not start.

    A file on the shared runs file system, polled, because neither Ray way worked here (Ray 2.60):
    ``ray.cancel``'s KeyboardInterrupt never reached a cell waiting on its run, and a cell that asks
    an actor (``ray.get``, even ``ray.wait``) lends its CPU to the next queued cell meanwhile."""
    os.chdir(cwd)
    stop_requested = Path(stop).exists
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # the GPUs Ray gave this task (--gpus-per-run), not the driver's
        env = {**env, "CUDA_VISIBLE_DEVICES": os.environ["CUDA_VISIBLE_DEVICES"]}

    def run(command: list[str], log: Path) -> int | None:
        if stop_requested():
            return None
        with open_for_append(log) as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while proc.poll() is None:
            if stop_requested():
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                return None
            time.sleep(1.0)
        return proc.returncode

    return launch_cell(suite, spec, threads, run, address, stopping=stop_requested)


CELL_RETRIES = 2
"""How often Ray retries a cell whose worker or node died (the retry resumes its checkpoint)."""


def _run_on_ray(suite: Suite, todo: list[RunSpec], threads: int, gpus: float, env: dict, finished) -> None:
    from mario_apo.population import require_ray

    ray = require_ray()
    cluster = ray.get_runtime_context().gcs_address  # population cells join this cluster
    task = ray.remote(max_retries=CELL_RETRIES)(ray_cell)
    stop_file = (suite.runs_dir / f".stop-{uuid.uuid4().hex}").resolve()  # this driver's: never a stale one
    # a population cell's learners ask for their own CPUs: the cell holding some would starve them
    refs = {
        task.options(num_cpus=0 if suite.trains_populations(spec.label) else threads, num_gpus=gpus).remote(
            suite, spec, threads, env, os.getcwd(), cluster, str(stop_file)
        ): spec
        for spec in todo
    }
    try:
        # SIGTERM too (docker stop, kill): Ray's own handler would exit at once
        with StopRequest("suite: stopping the runs (each checkpoints), starting no new one", False) as stop:
            while refs:
                if stop.aborted:
                    raise KeyboardInterrupt
                if stop.requested and not stop_file.exists():
                    stop_file.touch()
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    spec = refs.pop(ref)
                    try:
                        finished(spec, ray.get(ref))
                    except ray.exceptions.RayError as err:
                        tqdm.write(f"suite {suite.name}: {spec.name}: {str(err).strip().splitlines()[-1]}")
                        finished(spec, "failed")
    finally:
        stop_file.unlink(missing_ok=True)


def evaluation_steps(summary_path: Path) -> int:
    """The agent steps a finished run spent on evaluations outside its budget (the final one and those
    at budgets); 0 where its summary cannot be read (status still shows the run)."""
    try:
        summary = read_summary(summary_path)
    except RunLogError:
        return 0
    evaluations = [summary.get("final_eval") or {}, *(summary.get("budget_evals") or {}).values()]
    return sum(evaluation.get("steps", 0) for evaluation in evaluations)


def suite_status(suite: Suite) -> dict[str, Any]:
    """Every cell's state (finished, running, interrupted at a step, pending; ``damaged``: why its
    metrics.jsonl cannot be read) and an ETA from the measured SPS of finished runs, for
    ``mario-apo suite status``. The steps to go count each unfinished run's evaluations too, as
    many as its task's finished runs spent (on MiniGrid 8x8 they are ~40% of the budget); they
    are timed at the training rate, which over-states them a little (evaluating only acts)."""
    cells, sps = [], []
    eval_steps: dict[str, list[int]] = {}
    names = {"done": "finished", "running": "running", "resume": "interrupted", "stale": "pending", "new": "pending"}
    for spec in expand(suite):
        run_dir = suite.runs_dir / spec.name
        state = names[run_state(run_dir)]
        cell = {"run": spec.name, "task": spec.task, "algo": spec.label, "seed": spec.seed, "state": state, "step": 0}
        # a population's progress: its first learner's (they step side by side; the budget is per learner)
        files = RunFiles(RunFiles(run_dir).learner(0) if suite.trains_populations(spec.label) else run_dir)
        if state != "pending" and files.metrics.exists():
            try:
                updates = [r for r in records(files.metrics) if is_update_record(r)]
            except RunLogError as err:  # one damaged log: say which, and still show the other runs
                cell["damaged"], updates = str(err), []
            cell["step"] = updates[-1]["global_step"] if updates else 0
            if state == "finished" and updates:
                sps.append(float(np.mean([r["charts/SPS"] for r in updates])))
        if state == "finished":
            eval_steps.setdefault(spec.task, []).append(evaluation_steps(files.summary))
        if state == "running":
            cell["holder"] = lock_holder(run_dir)
        cells.append(cell)
    unfinished = [cell for cell in cells if cell["state"] != "finished"]
    every_task = [steps for task_steps in eval_steps.values() for steps in task_steps]
    remaining_eval = sum(int(np.median(eval_steps.get(cell["task"]) or every_task or [0])) for cell in unfinished)
    remaining = sum(suite.total_steps - cell["step"] for cell in unfinished) + remaining_eval
    rate = float(np.median(sps)) * suite.jobs if sps else None
    counts = {
        state: sum(cell["state"] == state for cell in cells)
        for state in ("finished", "running", "interrupted", "pending")
    }
    return {
        "suite": suite.name,
        "cells": cells,
        "counts": counts,
        "remaining_steps": remaining,
        "remaining_eval_steps": remaining_eval,
        "steps_per_second": rate,
        "eta_seconds": remaining / rate if rate else None,
    }


def measure_random_policies(suite: Suite) -> dict[str, dict[str, float]]:
    """Success rate of a uniform-random policy per task (the rarity axis of the ladder plot), under the
    env settings the suite's first algo trains with, played by ``mario-apo calibrate``'s code. The
    ``goal:X`` rungs of a level are read off one set of its dense episodes, as the calibration reads
    them (success: max x >= X): the same episodes a goal:X env would play up to X, played once."""
    from dataclasses import asdict

    from mario_apo.calibrate import random_episodes, rung
    from mario_apo.stats import wilson_interval

    path = suite.runs_dir / "random_policy.json"
    measured = read_random_policies(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    played: dict[tuple[str, str], list] = {}
    for task in suite.tasks:
        env_cfg = run_config(suite, RunSpec(task, next(iter(suite.algos)), suite.seeds[0])).env
        n, parsed, env = suite.random_policy_episodes, parse_task(task), asdict(env_cfg)
        known = measured.get(task, {})
        if known.get("episodes") == n and known.get("env") == env:
            continue  # measured before with these settings (another episode count or env: measured again)
        goal_x = int(parsed.reward[len("goal:") :]) if parsed.is_mario and parsed.reward.startswith("goal:") else None
        plays = f"mario:{parsed.level}:dense" if goal_x else task
        key = (plays, json.dumps(env, sort_keys=True))
        if key not in played:
            played[key] = random_episodes(parse_task(plays), env_cfg, n, workers=os.cpu_count() or 1)
        episodes = played[key]
        if goal_x:
            read = rung(episodes, goal_x)
            success_rate, wilson = read["rate"], [read["low"], read["high"]]
        else:
            successes = [e.success for e in episodes]
            success_rate, wilson = float(np.mean(successes)), wilson_interval(sum(successes), n)
        measured[task] = {
            "episodes": n,
            "played": plays,
            "success_rate": success_rate,
            "wilson_95": wilson,
            "mean_max_x": float(np.mean([e.max_x for e in episodes])),
            "env": env,
        }
        write_json(path, measured)
    return measured


PACKED_UPDATE_KEYS = {
    "global_step",
    "charts/SPS",
    "charts/update",
    "charts/success_rate",
    "charts/return_mean_100",
    "charts/train_seconds",
    "losses/entropy",
    "anchor/kl",
    "anchor/count",
    "anchor/best_return",
    "anchor/p_best_entropy",
    "anchor/mean_age_updates",
    "anchor/mean_length",
    "anchor/success_count",
    "anchor/foreign_fraction",
}
"""Of an update's metrics line, what a pack keeps: what reports and ``suite status`` read, and the headline
curves. Every episode line is kept whole. The full lines stay in the run dirs and W&B runs; an update line
holds ~50 numbers, and a 500k-step MountainCar run has ~2,000 of them (the suite's packed logs: 17 MB
whole, a fraction of that trimmed)."""


def pack_finished_runs(suite: Suite, out: Path | None = None) -> tuple[Path, int]:
    """A .tar.gz of every finished run's logs (and the random-policy baseline), to commit beside the
    report so it regenerates from a fresh clone; returns its path and how many runs it holds."""
    import tarfile

    out = check_output_file(out or suite.results_dir / "finished-runs.tar.gz", "suite pack --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    finished = [spec.name for spec in expand(suite) if RunFiles(suite.runs_dir / spec.name).summary.exists()]
    # a stopped pack leaves the previous archive whole: written under a fresh name, renamed when complete
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with open_new_file(partial) as file, tarfile.open(fileobj=file, mode="w:gz") as tar:
            if (suite.runs_dir / "random_policy.json").is_file():
                _pack_file(tar, suite.runs_dir / "random_policy.json", "random_policy.json")
            for name in finished:
                run_dir = suite.runs_dir / name
                for folder in [run_dir, *RunFiles(run_dir).learners()]:  # a run, or a population and its learners
                    for file_name in RunFiles.PACKED:
                        path = folder / file_name
                        if path.is_file() and not path.is_symlink():  # a link's target is not the run's
                            _pack_file(tar, path, str(path.relative_to(suite.runs_dir)))
        refuse_non_regular(out)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out, len(finished)


def _pack_file(tar, path: Path, arcname: str) -> None:
    """One file into the pack; a metrics.jsonl with its update lines trimmed to ``PACKED_UPDATE_KEYS``."""
    import io
    import tarfile

    if path.name != RunFiles(path.parent).metrics.name:
        data = path.read_bytes()
    else:
        lines = []
        for record in read_metrics(path):
            if is_update_record(record):  # an update's line (episode and population lines are kept whole)
                record = {key: value for key, value in record.items() if key in PACKED_UPDATE_KEYS}
            lines.append(json.dumps(record) + "\n")
        data = "".join(lines).encode()
    info = tarfile.TarInfo(arcname)
    info.size, info.mtime = len(data), int(path.stat().st_mtime)
    tar.addfile(info, io.BytesIO(data))
