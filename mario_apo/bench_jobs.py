"""What every benchmark shares: the machine record, a quiet run's settings, and the job runner, which
runs each job in a fresh process of its own (clean peak-memory numbers, nothing shared between jobs).

A job is a JSON-able dict; its ``run`` names the function that performs it (``"module:function"``),
so the SB3 jobs live with SB3 (``mario_apo.bench_sb3``, an optional extra) and ours with ours
(``mario_apo.bench``) without either importing the other.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import torch
from tqdm import tqdm

from mario_apo.config import RunConfig
from mario_apo.device import device_record, resolve_device
from mario_apo.errors import first_line
from mario_apo.runs import read_json, write_json

CARTPOLE_SOLVED = 475.0


def machine_record(device: str | None = None) -> dict:
    """The machine a benchmark ran on (with ``device``: the device its learners used, and its name)."""
    record = {
        "cores": os.cpu_count() or 1,
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device is not None:
        record.update(device_record(resolve_device(device)))
    return record


def quiet_run_config(job: dict, run_dir: str, **settings) -> RunConfig:
    """A benchmark job's run: the family's defaults, recording nothing but its run dir (W&B off, no
    progress bar, one checkpoint at the end, no final evaluation unless ``settings`` ask)."""
    return RunConfig.for_task(
        job["task"],
        job["algo"],
        job["seed"],
        total_steps=job["total_steps"],
        run_dir=run_dir,
        wandb="disabled",
        progress=False,
        checkpoint_every=10**9,
        final_eval_episodes=0,
        final_eval_greedy=0,
        video_every=0,
        **settings,
    )


def first_solved(evals: list[dict], seconds_key: str) -> dict:
    """Training seconds and steps at the first evaluation with mean return >= 475."""
    for record in evals:
        if record["eval/mean_return"] >= CARTPOLE_SOLVED:
            return {"solved_s": record[seconds_key], "solved_step": record["global_step"]}
    return {
        "solved_s": None,
        "solved_step": None,
        "best_eval": max((r["eval/mean_return"] for r in evals), default=None),
    }


class TreeMemory:
    """Samples the resident memory of this process plus all its descendants (env workers,
    forkservers) every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a worker exited between listing and reading
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_job(job: dict) -> dict:
    """One benchmark job, in this (fresh) process; adds its peak memory."""
    torch.manual_seed(job["seed"])
    with TreeMemory() as memory:
        module, function = job["run"].split(":")
        result = getattr(importlib.import_module(module), function)(job)
    learner_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**job, **result, "learner_peak_rss_mb": learner_mb, "tree_peak_rss_mb": memory.peak_mb}


def _run_in_subprocess(job: dict) -> dict:
    """Each job in its own process: clean peak-RSS numbers, no state shared between jobs."""
    env = dict(os.environ)
    if job.get("omp_default"):
        # An empty value leaves OpenMP at its own default (busy-waiting), as SB3 runs out of the box.
        env["OMP_WAIT_POLICY"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "mario_apo.bench_jobs", json.dumps(job)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark job {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class JobResults:
    """Finished jobs' results kept in a folder, one file per job, so that a benchmark of many long jobs
    (Mario parity: an hour or more each on a 2-core box) resumes job by job after an interruption.

    A file's name is a hash of its job (never a name read from a file). A file is used only when it
    holds exactly the job asked for and a number under each of ``keys``; anything else (damaged,
    edited, from other settings) is reported in one line and its job runs again.
    """

    def __init__(self, folder: Path, keys: tuple[str, ...]):
        self.folder, self.keys = folder, keys

    def _path(self, job: dict) -> Path:
        digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:20]
        return self.folder / f"job-{digest}.json"

    def get(self, job: dict) -> dict | None:
        path = self._path(job)
        if not path.exists():
            return None
        try:
            record = read_json(path)
            result = record["result"]
            usable = (
                record["job"] == job
                and isinstance(result, dict)
                and all(isinstance(result[key], int | float) and not isinstance(result[key], bool) for key in self.keys)
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            usable, err_text = False, f"{type(err).__name__}: {first_line(err)}"
        else:
            err_text = "it is not this job's result"
        if not usable:
            print(f"{path}: not used ({err_text}); the job runs again", file=sys.stderr)
            return None
        return {**result, **job}

    def put(self, job: dict, result: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self._path(job), {"job": job, "result": result})


def run_jobs(jobs: list[dict], what: str, kept: JobResults | None = None) -> list[dict]:
    """Each job in its own fresh process, one after another (so none competes with another for cores).

    :param kept: where finished jobs' results are kept: a job found there is not run again
    """
    results = []
    with tqdm(total=len(jobs), desc=what, unit="job") as progress:
        for job in jobs:
            progress.set_postfix_str(f"{job['impl']} {job['algo']} {job['task']} s{job['seed']}")
            result = kept.get(job) if kept is not None else None
            if result is None:
                result = _run_in_subprocess(job)
                if kept is not None:
                    kept.put(job, result)
            results.append(result)
            progress.update()
    return results


if __name__ == "__main__":
    print(json.dumps(run_job(json.loads(sys.argv[1]))))
