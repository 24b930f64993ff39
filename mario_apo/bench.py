"""Throughput benchmarks, measured as ratios against a baseline in the same run.

``bench env``: raw emulator frames/s (gym-super-mario-bros' own env, one
process), agent steps/s of one fully wrapped env (frame skip 4), and agent
steps/s of the vector env for several sizes. Bars:

- wrapped single env >= 0.9 x (raw frames/s / frame skip)
- best vector env    >= 0.8 x cores x wrapped single env
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mario_apo.config import EnvConfig
from mario_apo.tasks import Task, make_env, make_vec_env, parse_task
from wrappers.mario import SuperMarioBrosEnv, action_bytes

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
    """The package's own env, one NES frame per step, random buttons, no wrappers."""
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
    env = make_env(task, cfg)
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
    stages = ["raw emulator", "wrapped env"] + [f"vector env N={n}" for n in num_envs]
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
    single_ratio = single_sps / (raw_fps / cfg.frame_skip)
    vector_ratio = vector_sps[best_n] / (cores * single_sps)
    return {
        "task": task.name,
        "frame_skip": cfg.frame_skip,
        "seconds_per_measurement": seconds,
        "machine": {
            "cores": cores,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "raw_emulator_frames_per_s": raw_fps,
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
    skip = result["frame_skip"]
    raw = result["raw_emulator_frames_per_s"]
    single = result["wrapped_env_steps_per_s"]
    rows = [
        ("raw emulator (1 process)", f"{raw:8.0f} frames/s", f"= {raw / skip:6.0f} agent steps/s at skip {skip}"),
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


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as out:
        json.dump(result, out, indent=2)


# ---- bench train: our PPO and APO vs Stable-Baselines3 PPO ------------------------------------

TRAIN_SPS_BAR = 1.3  # ours >= 1.3 x SB3 on Mario
APO_SPS_BAR = 0.9  # APO >= 0.9 x our PPO
CARTPOLE_SOLVED = 475.0


class TreeMemory:
    """Samples the resident memory of this process plus all its descendants (env workers,
    forkservers) every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, interval: float = 0.25):
        import threading

        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

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


def _ours_job(job: dict) -> dict:
    import tempfile
    from pathlib import Path

    from mario_apo.config import RunConfig, ppo_defaults
    from mario_apo.runs import create_run
    from mario_apo.train import train

    task = parse_task(job["task"])
    ppo = ppo_defaults(task.family)
    ppo.total_steps = job["total_steps"]
    cfg = RunConfig(algo=job["algo"], task=task.name, seed=job["seed"], ppo=ppo)
    cfg.log.wandb, cfg.log.progress, cfg.log.checkpoint_every = "disabled", False, 10**9
    cfg.log.eval_every = job.get("eval_every", 0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.log.run_dir = tmp
        start = time.perf_counter()
        train(cfg, create_run(cfg))
        wall = time.perf_counter() - start
        if cfg.log.eval_every:
            metrics = [json.loads(line) for line in (Path(tmp) / cfg.log.name / "metrics.jsonl").open()]
            evals = [m for m in metrics if "eval/mean_return" in m]
            wall -= sum(m["eval/seconds"] for m in evals)  # as for SB3: training time only
        result = {"wall_s": wall, "sps": ppo.num_updates * ppo.batch_size / wall}
        if cfg.log.eval_every:
            result.update(_first_solved(evals, "charts/train_seconds"))
    return result


def _first_solved(evals: list[dict], seconds_key: str) -> dict:
    """Training seconds and steps at the first evaluation with mean return >= 475."""
    for record in evals:
        if record["eval/mean_return"] >= CARTPOLE_SOLVED:
            return {"solved_s": record[seconds_key], "solved_step": record["global_step"]}
    return {
        "solved_s": None,
        "solved_step": None,
        "best_eval": max((r["eval/mean_return"] for r in evals), default=None),
    }


def _sb3_ppo(task: Task, envs, seed: int):
    """Stable-Baselines3's PPO with our family's hyper-parameters (for CartPole and MountainCar: rl-zoo's)."""
    from stable_baselines3 import PPO

    from mario_apo.config import ppo_defaults

    ppo = ppo_defaults(task.family)

    def linear(value):
        return lambda remaining: remaining * value

    return PPO(
        "CnnPolicy" if task.is_mario else "MlpPolicy",
        envs,
        n_steps=ppo.num_steps,
        batch_size=ppo.minibatch_size,
        n_epochs=ppo.update_epochs,
        learning_rate=linear(ppo.learning_rate) if ppo.anneal_lr else ppo.learning_rate,
        clip_range=linear(ppo.clip_coef) if ppo.anneal_clip else ppo.clip_coef,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        ent_coef=ppo.ent_coef,
        vf_coef=0.5,  # SB3's value loss is the MSE; ours is 0.5 x MSE with vf_coef 1 where zoo has 0.5
        max_grad_norm=ppo.max_grad_norm,
        seed=seed,
        device="cpu",
        verbose=0,
    )


def _sb3_job(job: dict) -> dict:
    """Stable-Baselines3 PPO with the same hyper-parameters (Mario) or its zoo settings (CartPole)."""
    import functools

    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from mario_apo.config import ppo_defaults

    task = parse_task(job["task"])
    ppo = ppo_defaults(task.family)
    env_fn = functools.partial(make_env, task, EnvConfig())
    start = time.perf_counter()
    vec = SubprocVecEnv if task.is_mario else DummyVecEnv
    envs = vec([env_fn] * ppo.num_envs)
    model = _sb3_ppo(task, envs, job["seed"])

    class EvalEvery(BaseCallback):
        """Greedy evaluation every ``eval_every`` rollouts, its time kept out of the training time."""

        def __init__(self):
            super().__init__()
            self.rollouts, self.eval_seconds, self.evals = 0, 0.0, []

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            self.rollouts += 1
            if job.get("eval_every") and self.rollouts % job["eval_every"] == 0:
                t0 = time.perf_counter()
                mean, _ = evaluate_policy(self.model, DummyVecEnv([env_fn]), n_eval_episodes=10, deterministic=True)
                self.eval_seconds += time.perf_counter() - t0
                self.evals.append(
                    {
                        "eval/mean_return": mean,
                        "global_step": self.num_timesteps,
                        "train_s": time.perf_counter() - start - self.eval_seconds,
                    }
                )

    callback = EvalEvery()
    model.learn(total_timesteps=job["total_steps"], callback=callback)
    envs.close()
    wall = time.perf_counter() - start - callback.eval_seconds
    result = {"wall_s": wall, "sps": model.num_timesteps / wall}
    if job.get("eval_every"):
        result.update(_first_solved(callback.evals, "train_s"))
    return result


def _parity_job(job: dict) -> dict:
    """Train one implementation's PPO on a classic task with the family's (rl-zoo's) settings, then
    evaluate its final policy with our ``evaluate`` on the same episode seeds for both implementations."""
    import functools
    import tempfile
    from pathlib import Path

    import torch

    from mario_apo.checkpoint import load_checkpoint
    from mario_apo.config import RunConfig, ppo_defaults
    from mario_apo.evaluate import evaluate, policy_from_checkpoint
    from mario_apo.runs import create_run
    from mario_apo.train import train

    task = parse_task(job["task"])
    ppo = ppo_defaults(task.family)
    ppo.total_steps = job["total_steps"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if job["impl"] == "ours":
            cfg = RunConfig(algo="ppo", task=task.name, seed=job["seed"], ppo=ppo)
            cfg.log.run_dir, cfg.log.wandb, cfg.log.progress, cfg.log.checkpoint_every = tmp, "disabled", False, 10**9
            cfg.log.final_eval_episodes = cfg.log.final_eval_greedy = 0  # both implementations get the same eval below
            run_dir = create_run(cfg)
            train(cfg, run_dir)
            model, obs_transform = policy_from_checkpoint(cfg, load_checkpoint(run_dir / "checkpoint.pt"), Path(tmp))
        else:
            from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

            envs = DummyVecEnv([functools.partial(make_env, task, EnvConfig())] * ppo.num_envs)
            if ppo.norm_obs or ppo.norm_reward:
                envs = VecNormalize(envs, norm_obs=ppo.norm_obs, norm_reward=ppo.norm_reward, gamma=ppo.gamma)
            sb3 = _sb3_ppo(task, envs, job["seed"])
            sb3.learn(total_timesteps=ppo.total_steps)
            model = _SB3Policy(sb3.policy)
            obs_transform = envs.normalize_obs if isinstance(envs, VecNormalize) else None
    train_s = time.perf_counter() - start
    result = {"train_s": train_s}
    with torch.inference_mode():
        for policy, episodes, greedy in (("sampled", job["episodes"], False), ("greedy", job["greedy_episodes"], True)):
            outcome = evaluate(
                model, task, EnvConfig(), episodes, greedy, seed=job["eval_seed"], obs_transform=obs_transform
            )
            result[f"{policy}_success"] = outcome["success_rate"]
            result[f"{policy}_return"] = outcome["mean_return"]
    return result


class _SB3Policy:
    """SB3's policy as our ``(logits, value)`` model, so that one evaluation code judges both."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, obs):
        obs = obs.float()
        return self.policy.get_distribution(obs).distribution.logits, self.policy.predict_values(obs).squeeze(-1)


def run_job(job: dict) -> dict:
    """One benchmark job, in this (fresh) process; adds its peak memory."""
    import resource

    import torch

    torch.manual_seed(job["seed"])
    with TreeMemory() as memory:
        if job.get("bench") == "parity":
            result = _parity_job(job)
        else:
            result = (_sb3_job if job["impl"] == "sb3" else _ours_job)(job)
    learner_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**job, **result, "learner_peak_rss_mb": learner_mb, "tree_peak_rss_mb": memory.peak_mb}


def _run_in_subprocess(job: dict) -> dict:
    """Each job in its own process: clean peak-RSS numbers, no state shared between jobs."""
    import subprocess
    import sys

    env = dict(os.environ)
    if job.get("omp_default"):
        # An empty value leaves OpenMP at its own default (busy-waiting), as SB3 runs out of the box.
        env["OMP_WAIT_POLICY"] = ""
    proc = subprocess.run(
        [sys.executable, "-m", "mario_apo.bench", json.dumps(job)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark job {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_jobs(jobs: list[dict], what: str) -> list[dict]:
    """Each job in its own fresh process, one after another (so none competes with another for cores)."""
    results = []
    with tqdm(total=len(jobs), desc=what, unit="job") as progress:
        for job in jobs:
            progress.set_postfix_str(f"{job['impl']} {job['algo']} {job['task']} s{job['seed']}")
            results.append(_run_in_subprocess(job))
            progress.update()
    return results


def bench_train(mario_steps: int, cartpole_steps: int, seed: int, skip_cartpole: bool = False) -> dict:
    """Mario 1-1 SPS for ours (PPO, APO) and SB3 PPO, and CartPole time-to-solved; one invocation."""
    jobs = [
        {"impl": "ours", "algo": "ppo", "task": "mario:1-1", "total_steps": mario_steps, "seed": seed},
        {"impl": "ours", "algo": "apo", "task": "mario:1-1", "total_steps": mario_steps, "seed": seed},
        # SB3 with the same OpenMP setting as ours, and as it runs out of the box
        {"impl": "sb3", "algo": "ppo", "task": "mario:1-1", "total_steps": mario_steps, "seed": seed},
        {
            "impl": "sb3",
            "algo": "ppo",
            "task": "mario:1-1",
            "total_steps": mario_steps,
            "seed": seed,
            "omp_default": True,
        },
    ]
    if not skip_cartpole:
        # evaluate every 10 rollouts (2,560 steps at the zoo's 8 x 32)
        jobs += [
            {
                "impl": "ours",
                "algo": "ppo",
                "task": "cartpole",
                "total_steps": cartpole_steps,
                "seed": seed,
                "eval_every": 10,
            },
            {
                "impl": "sb3",
                "algo": "ppo",
                "task": "cartpole",
                "total_steps": cartpole_steps,
                "seed": seed,
                "eval_every": 10,
            },
        ]
    results = run_jobs(jobs, "bench train")
    by_key = {(r["impl"], r["algo"], r["task"], bool(r.get("omp_default"))): r for r in results}
    ours_ppo, ours_apo = by_key["ours", "ppo", "mario:1-1", False], by_key["ours", "apo", "mario:1-1", False]
    sb3, sb3_default = by_key["sb3", "ppo", "mario:1-1", False], by_key["sb3", "ppo", "mario:1-1", True]
    bars = {
        "ours_ppo_vs_sb3": {"ratio": ours_ppo["sps"] / sb3["sps"], "bar": TRAIN_SPS_BAR},
        "ours_ppo_vs_sb3_out_of_box": {"ratio": ours_ppo["sps"] / sb3_default["sps"], "bar": TRAIN_SPS_BAR},
        "ours_apo_vs_ours_ppo": {"ratio": ours_apo["sps"] / ours_ppo["sps"], "bar": APO_SPS_BAR},
    }
    for bar in bars.values():
        bar["met"] = bar["ratio"] >= bar["bar"]
    return {
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "mario_steps": mario_steps,
        "hyper_parameters": "8 envs x 128 steps, minibatch 256, 4 epochs, lr 2.5e-4, clip 0.1, ent 0.01",
        "jobs": results,
        "bars": bars,
    }


def format_train_table(result: dict) -> str:
    lines = [
        f"bench train: {result['machine']['cores']} cores; "
        f"Mario 1-1 for {result['mario_steps']} steps ({result['hyper_parameters']})"
    ]
    lines.append(f"  {'job':<42}{'SPS':>8}{'wall s':>9}{'learner MB':>12}{'all procs MB':>14}   CartPole eval>=475")
    for r in result["jobs"]:
        solved = ""
        if "solved_s" in r:
            solved = (
                "not reached" if r["solved_s"] is None else f"{r['solved_s']:.1f} s train time, step {r['solved_step']}"
            )
        name = f"{r['impl']} {r['algo']} {r['task']}" + (" (omp default)" if r.get("omp_default") else "")
        lines.append(
            f"  {name:<42}{r['sps']:8.0f}{r['wall_s']:9.1f}"
            f"{r['learner_peak_rss_mb']:12.0f}{r['tree_peak_rss_mb']:14.0f}   {solved}"
        )
    for name, bar in result["bars"].items():
        lines.append(
            f"  bar {name:<38} ratio {bar['ratio']:.2f} (>= {bar['bar']}): {'met' if bar['met'] else 'MISSED'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(json.dumps(run_job(json.loads(sys.argv[1]))))


def bench_parity(steps: dict[str, int], seeds: list[int], episodes: int, greedy_episodes: int) -> dict:
    """Our PPO vs Stable-Baselines3's PPO, identical rl-zoo settings (normalisation included), per task and
    seed; final-policy success, paired by seed. Bar: ours is not worse (the paired CI reaches 0 or above)."""
    from mario_apo import stats

    jobs = [
        {"bench": "parity", "impl": impl, "algo": "ppo", "task": task, "seed": seed, "total_steps": total,
         "episodes": episodes, "greedy_episodes": greedy_episodes, "eval_seed": 100_000 + seed}
        for task, total in steps.items() for seed in seeds for impl in ("ours", "sb3")
    ]  # fmt: skip
    results = run_jobs(jobs, "bench parity")
    tasks = {}
    for task, total in steps.items():
        row = {"total_steps": total, "seeds": seeds}
        for policy in ("sampled", "greedy"):
            ours, sb3 = ([r[f"{policy}_success"] for r in results if (r["task"], r["impl"]) == (task, impl)]
                         for impl in ("ours", "sb3"))  # fmt: skip
            difference = stats.paired_difference_ci(ours, sb3)
            row[policy] = {"ours": ours, "sb3": sb3, "ours_minus_sb3": difference, "n": len(seeds)}
        row["met"] = row["sampled"]["ours_minus_sb3"][2] >= 0  # the interval includes or exceeds 0
        tasks[task] = row
    return {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "episodes": {"sampled": episodes, "greedy": greedy_episodes},
        "jobs": results,
        "tasks": tasks,
    }


def format_parity_table(result: dict) -> str:
    episodes = result["episodes"]
    lines = [
        f"bench parity: final-policy success, {episodes['sampled']} sampled and {episodes['greedy']} greedy "
        "episodes per run; ours - SB3 paired by seed, 95% bootstrap CI"
    ]
    for task, row in result["tasks"].items():
        for policy in ("sampled", "greedy"):
            cell = row[policy]
            mean, low, high = cell["ours_minus_sb3"]
            lines.append(
                f"  {task:<12} {policy:<8} ours {np.mean(cell['ours']):.2f}  SB3 {np.mean(cell['sb3']):.2f}  "
                f"ours - SB3 {mean:+.2f} [{low:+.2f}, {high:+.2f}] (n={cell['n']})"
            )
        lines.append(f"  bar {task}: ours not worse than SB3: {'met' if row['met'] else 'MISSED'}")
    return "\n".join(lines)


def bench_population(task: str, steps: int, seed: int, out_dir: Path) -> dict:
    """Agent steps/s of a 2-learner population with shared anchors vs two independent APO runs started
    side by side, on this machine, in one invocation: the population's overhead (Ray, the hub's
    round trips, the anchors pulled). Each side's SPS is the sum over its two learners of their
    agent steps per second of training time (``charts/train_seconds``: every stage of an update,
    the hub sync included; Ray's start and the final evaluation are not)."""
    import subprocess
    import sys

    from mario_apo.logger import read_metrics

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
    result: dict = {"machine": {"cores": cores, "python": platform.python_version()}, "task": task, "steps": steps}
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
            run_dirs = [out_dir / "shared" / f"learner-{i}" for i in (0, 1)]
        learners = []
        for run_dir in run_dirs:
            last = [r for r in read_metrics(run_dir / "metrics.jsonl") if "charts/train_seconds" in r][-1]
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
