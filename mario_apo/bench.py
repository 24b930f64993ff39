"""Throughput benchmarks, measured as ratios against a baseline in the same run.

``bench env``: raw frames/s of the task's own env without our wrappers, one process (Mario:
gym-super-mario-bros' env, one NES frame per step; MiniGrid: the MiniGrid env), agent steps/s of
one fully wrapped env (Mario: frame skip 4), and agent steps/s of the vector env for several sizes.
Bars:

- wrapped single env >= 0.9 x (raw frames/s / frames per agent step)
- best vector env    >= 0.8 x cores x wrapped single env (MiniGrid's vector env is in-process, one
  core: the bar says what subprocess workers could at most add)

``bench train``: our trainer's agent steps/s on Mario at each ``--num-envs`` on one device, and
where the time went (env, inference, learn, ...); APO against our PPO; against Stable-Baselines3
(``mario_apo.bench_sb3``, which also holds ``bench parity``). ``bench population``: a shared-anchor
population against independent runs. Every job runs in a fresh process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mario_apo.bench_jobs import first_solved, machine_record, quiet_run_config, run_jobs
from mario_apo.config import EnvConfig, ppo_defaults
from mario_apo.logger import is_update_record, read_metrics
from mario_apo.runs import RunFiles, create_run
from mario_apo.tasks import Task, make_env, make_vec_env
from mario_apo.train import train
from wrappers.mario import SuperMarioBrosEnv, action_bytes
from wrappers.minigrid import minigrid_id

SINGLE_ENV_BAR = 0.9
VECTOR_ENV_BAR = 0.8


@dataclass
class Timer:
    """Counts units done while the clock runs for at least ``seconds``."""

    seconds: float

    def run(self, step_once) -> float:
        """Call ``step_once()`` (returns units done) until time is up; units/s."""
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < self.seconds:
            done += step_once()
        return done / elapsed


def raw_frames_per_second(task: Task, cfg: EnvConfig, timer: Timer, seed: int) -> float:
    """The package's own env, one NES frame (MiniGrid: one step) per step, random actions, no wrappers."""
    if task.family == "minigrid":
        import gymnasium as gym

        return _random_steps_per_second(gym.make(minigrid_id(task.level)), timer, seed)
    world, stage = (int(part) for part in task.level.split("-"))
    env = SuperMarioBrosEnv(rom_mode="vanilla", target=(world, stage))
    buttons = action_bytes(cfg.action_set)
    rng = np.random.default_rng(seed)
    env.reset()

    def frame() -> int:
        if env.step(buttons[rng.integers(len(buttons))])[2]:
            env.reset()
        return 1

    try:
        return timer.run(frame)
    finally:
        env.close()


def single_env_steps_per_second(task: Task, cfg: EnvConfig, timer: Timer, seed: int) -> float:
    return _random_steps_per_second(make_env(task, cfg), timer, seed)


def _random_steps_per_second(env, timer: Timer, seed: int) -> float:
    """Steps/s of one gymnasium env under uniform-random actions (closed afterwards)."""
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def step() -> int:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        return 1

    try:
        return timer.run(step)
    finally:
        env.close()


def vector_env_steps_per_second(task: Task, cfg: EnvConfig, num_envs: int, timer: Timer, seed: int) -> float:
    envs = make_vec_env(task, cfg, num_envs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    for _ in range(10):  # let every worker warm up before the clock starts
        envs.step(envs.action_space.sample())

    def step() -> int:
        envs.step(envs.action_space.sample())
        return num_envs

    try:
        return timer.run(step)
    finally:
        envs.close()


def bench_env(task: Task, cfg: EnvConfig, num_envs: list[int], seconds: float, seed: int) -> dict:
    """Run every measurement of ``bench env``; return the result record."""
    cores = os.cpu_count() or 1
    timer = Timer(seconds)
    frames_per_step = cfg.frame_skip if task.is_mario else 1
    stages = ["raw env", "wrapped env"] + [f"vector env N={n}" for n in num_envs]
    with tqdm(total=len(stages), desc="bench env", unit="stage") as progress:
        progress.set_postfix_str(stages[0])
        raw_fps = raw_frames_per_second(task, cfg, timer, seed)
        progress.update()
        progress.set_postfix_str(stages[1])
        single_sps = single_env_steps_per_second(task, cfg, timer, seed)
        progress.update()
        vector_sps = {}
        for n in num_envs:
            progress.set_postfix_str(f"vector env N={n}")
            vector_sps[n] = vector_env_steps_per_second(task, cfg, n, timer, seed)
            progress.update()
    best_n = max(vector_sps, key=vector_sps.get)
    single_ratio = single_sps / (raw_fps / frames_per_step)
    vector_ratio = vector_sps[best_n] / (cores * single_sps)
    return {
        "task": task.name,
        "frames_per_step": frames_per_step,
        "seconds_per_measurement": seconds,
        "machine": machine_record(),
        "raw_frames_per_s": raw_fps,
        "wrapped_env_steps_per_s": single_sps,
        "vector_env_steps_per_s": {str(n): sps for n, sps in vector_sps.items()},
        "best_vector_num_envs": best_n,
        "bars": {
            "wrapped_vs_raw": {"ratio": single_ratio, "bar": SINGLE_ENV_BAR, "met": single_ratio >= SINGLE_ENV_BAR},
            "vector_vs_cores_x_single": {
                "ratio": vector_ratio,
                "bar": VECTOR_ENV_BAR,
                "met": vector_ratio >= VECTOR_ENV_BAR,
            },
        },
    }


def format_env_table(result: dict) -> str:
    """The human-readable table of a ``bench_env`` result."""
    skip = result["frames_per_step"]
    raw = result["raw_frames_per_s"]
    single = result["wrapped_env_steps_per_s"]
    raw_name = "raw emulator (1 process)" if result["task"].startswith("mario") else "raw env (1 process)"
    rows = [
        (raw_name, f"{raw:8.0f} frames/s", f"= {raw / skip:6.0f} agent steps/s at {skip} frames per step"),
        ("wrapped env (1 process)", f"{single:8.0f} steps/s", f"{single * skip:6.0f} frames/s"),
    ]
    for n, sps in result["vector_env_steps_per_s"].items():
        rows.append((f"vector env, N={n}", f"{sps:8.0f} steps/s", f"{sps / single:5.2f} x single env"))
    lines = [
        f"bench env: {result['task']}, {result['machine']['cores']} cores, {result['seconds_per_measurement']:g} s each"
    ]
    lines += [f"  {name:<26}{value}   {note}" for name, value, note in rows]
    for name, bar in result["bars"].items():
        verdict = "met" if bar["met"] else "MISSED"
        lines.append(f"  bar {name:<26} ratio {bar['ratio']:.2f} (>= {bar['bar']}): {verdict}")
    return "\n".join(lines)


# ---- bench train: our trainer's throughput, per env count, and where its time goes ----------------

APO_SPS_BAR = 0.9  # APO >= 0.9 x our PPO
STAGES = ("env", "inference", "learn", "bookkeeping", "anchors")
"""The trainer's stages (``perf/<stage>_fraction``): waiting on the env workers, the policy's forward
passes while acting, GAE and the minibatch epochs, per-step bookkeeping, APO's recording."""


def ours_job(job: dict) -> dict:
    """Train our PPO or APO for the job's steps; SPS over the training time (evaluations left out),
    and the share of each stage in the last update's running totals."""
    settings = {"eval_every": job.get("eval_every", 0), "device": job.get("device", "auto")}
    if "num_envs" in job:
        settings["num_envs"] = job["num_envs"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = quiet_run_config(job, tmp, **settings)
        start = time.perf_counter()
        train(cfg, create_run(cfg))
        wall = time.perf_counter() - start
        metrics = list(read_metrics(RunFiles(Path(tmp) / cfg.log.name).metrics))
    updates = [m for m in metrics if is_update_record(m)]
    evals = [m for m in metrics if "eval/mean_return" in m]
    wall -= sum(m["eval/seconds"] for m in evals)  # as for SB3: training time only
    steps = cfg.ppo.num_updates * cfg.ppo.batch_size
    result = {"wall_s": wall, "sps": steps / wall, "num_envs": cfg.ppo.num_envs}
    result["stages"] = {stage: updates[-1].get(f"perf/{stage}_fraction", 0.0) for stage in STAGES}
    # the learner's share of wall time: what a faster device can shrink (the env stage is the emulator's)
    result["learner_fraction"] = result["stages"]["inference"] + result["stages"]["learn"]
    if cfg.log.eval_every:
        result.update(first_solved(evals, "charts/train_seconds"))
    return result


def mario_settings_text() -> str:
    """The Mario defaults as a benchmark table states them."""
    ppo = ppo_defaults("mario")
    lr = f"lr {ppo.learning_rate:g}{' annealed' if ppo.anneal_lr else ''}"
    return (
        f"N envs x {ppo.num_steps} steps, {ppo.num_minibatches} minibatches, {ppo.update_epochs} epochs, {lr}, "
        f"gamma {ppo.gamma:g}, GAE lambda {ppo.gae_lambda:g}, clip {ppo.clip_coef:g}, ent {ppo.ent_coef:g}"
    )


def bench_train(
    mario_steps: int,
    cartpole_steps: int,
    seed: int,
    num_envs: list[int],
    device: str = "auto",
    skip_cartpole: bool = False,
    skip_sb3: bool = False,
) -> dict:
    """Mario 1-1 SPS of our PPO at each of ``num_envs`` on ``device`` with its stage breakdown; APO and
    (unless ``skip_sb3``) Stable-Baselines3 at the first env count; CartPole time to solved."""
    ours = {"run": "mario_apo.bench:ours_job", "impl": "ours"}
    mario = {"task": "mario:1-1:dense", "total_steps": mario_steps, "seed": seed, "device": device}
    jobs = [{**ours, "algo": "ppo", **mario, "num_envs": n} for n in num_envs]
    jobs.append({**ours, "algo": "apo", **mario, "num_envs": num_envs[0]})
    cartpole = {"task": "cartpole", "total_steps": cartpole_steps, "seed": seed, "device": device}
    if not skip_cartpole:  # evaluated every 10 rollouts (2,560 steps at the zoo's 8 x 32)
        jobs.append({**ours, "algo": "ppo", **cartpole, "eval_every": 10})
    if not skip_sb3:
        from mario_apo.bench_sb3 import sb3_train_jobs

        jobs += sb3_train_jobs(mario | {"num_envs": num_envs[0]}, None if skip_cartpole else cartpole)
    results = run_jobs(jobs, "bench train")
    by_envs = {r["num_envs"]: r for r in results if (r["impl"], r["algo"], r["task"]) == ("ours", "ppo", mario["task"])}
    ours_apo = next(r for r in results if r["impl"] == "ours" and r["algo"] == "apo")
    bars = {"ours_apo_vs_ours_ppo": {"ratio": ours_apo["sps"] / by_envs[num_envs[0]]["sps"], "bar": APO_SPS_BAR}}
    if not skip_sb3:
        from mario_apo.bench_sb3 import sb3_bars

        bars.update(sb3_bars(by_envs[num_envs[0]], results))
    for bar in bars.values():
        bar["met"] = bar["ratio"] >= bar["bar"]
    return {
        "machine": machine_record(device),
        "mario_steps": mario_steps,
        "num_envs": num_envs,
        "hyper_parameters": mario_settings_text(),
        "jobs": results,
        "bars": bars,
    }


def format_train_table(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"bench train: {machine['cores']} cores, {machine['device']} ({machine['device_name']}); "
        f"Mario 1-1 for {result['mario_steps']} steps ({result['hyper_parameters']})"
    ]
    stages = "".join(f"{stage:>8}" for stage in ("env", "infer", "learn"))
    lines.append(f"  {'job':<40}{'SPS':>7}{'wall s':>8}{'MB learner':>11}{'MB all':>8}{stages}   CartPole eval>=475")
    for r in result["jobs"]:
        solved = ""
        if "solved_s" in r:
            solved = (
                "not reached" if r["solved_s"] is None else f"{r['solved_s']:.1f} s train time, step {r['solved_step']}"
            )
        name = f"{r['impl']} {r['algo']} {r['task']}" + (f" N={r['num_envs']}" if "num_envs" in r else "")
        name += " (omp default)" if r.get("omp_default") else ""
        shares = "".join(f"{r['stages'][stage]:8.0%}" for stage in ("env", "inference", "learn") if "stages" in r)
        lines.append(
            f"  {name:<40}{r['sps']:7.0f}{r['wall_s']:8.1f}"
            f"{r['learner_peak_rss_mb']:11.0f}{r['tree_peak_rss_mb']:8.0f}{shares:<24}   {solved}".rstrip()
        )
    for name, bar in result["bars"].items():
        lines.append(
            f"  bar {name:<36} ratio {bar['ratio']:.2f} (>= {bar['bar']}): {'met' if bar['met'] else 'MISSED'}"
        )
    return "\n".join(lines)


# ---- bench population: a shared-anchor population vs independent runs --------------------------------


def bench_population(task: str, steps: int, seed: int, out_dir: Path) -> dict:
    """Agent steps/s of a 2-learner population with shared anchors vs two independent APO runs started
    side by side, on this machine, in one invocation: the population's overhead (Ray, the hub's
    round trips, the anchors pulled). Each side's SPS is the sum over its two learners of their
    agent steps per second of training time (``charts/train_seconds``: every stage of an update,
    the hub sync included; Ray's start and the final evaluation are not)."""
    cores = os.cpu_count() or 1
    common = ["train", "--algo", "apo", "--task", task, "--total-steps", str(steps), "--seed", str(seed)]
    common += ["--wandb", "disabled", "--no-progress", "--final-eval-episodes", "0", "--final-eval-greedy", "0"]
    common += ["--video-every", "0", "--run-dir", str(out_dir), "--torch-threads", str(max(1, cores // 2))]
    sides = {
        "independent": [
            [*common, "--name", "independent-0"],
            [*common, "--seed", str(seed + 1), "--name", "independent-1"],
        ],
        "shared": [[*common, "--learners", "2", "--share-anchors", "--name", "shared"]],
    }
    result: dict = {"machine": machine_record(), "task": task, "steps": steps}
    for side, commands in tqdm(sides.items(), desc="bench population", unit="side"):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "mario_apo.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for argv in commands
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"bench population: {side} failed:\n{err.decode()[-3000:]}")
        run_dirs = [out_dir / "independent-0", out_dir / "independent-1"]
        if side == "shared":
            run_dirs = [RunFiles(out_dir / "shared").learner(i) for i in (0, 1)]
        learners = []
        for run_dir in run_dirs:
            last = [r for r in read_metrics(RunFiles(run_dir).metrics) if "charts/train_seconds" in r][-1]
            learners.append(
                {
                    "steps": last["global_step"],
                    "train_seconds": last["charts/train_seconds"],
                    "sps": last["global_step"] / last["charts/train_seconds"],
                    "anchors_fraction": last.get("perf/anchors_fraction", 0.0),
                }
            )
        result[side] = {"learners": learners, "sps": sum(learner["sps"] for learner in learners)}
    result["shared_over_independent"] = result["shared"]["sps"] / result["independent"]["sps"]
    return result


def format_population_table(result: dict) -> str:
    lines = [f"{'side':<12} {'SPS (2 learners)':>17} {'anchors stage':>14}"]
    for side in ("independent", "shared"):
        fraction = np.mean([learner["anchors_fraction"] for learner in result[side]["learners"]])
        lines.append(f"{side:<12} {result[side]['sps']:>17.0f} {fraction:>13.1%}")
    lines.append(f"shared / independent: {result['shared_over_independent']:.2f}")
    return "\n".join(lines)
