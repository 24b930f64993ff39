"""Stable-Baselines3 beside our PPO: the SB3 side of ``bench train`` (SPS at equal settings) and
``bench parity`` (final-policy success of both, trained with identical rl-zoo settings and judged by
one evaluation code on the same episode seeds, paired by seed). SB3 is the ``bench`` extra: this
module is imported only where a job needs it.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import stable_baselines3
import torch
from gymnasium.wrappers import DtypeObservation
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize
from torch import nn

import mario_apo
from mario_apo import stats
from mario_apo.bench_jobs import JobResults, first_solved, machine_record, quiet_run_config, run_jobs
from mario_apo.checkpoint import load_checkpoint
from mario_apo.config import EnvConfig, PPOConfig, ppo_defaults
from mario_apo.device import resolve_device
from mario_apo.evaluate import evaluate, policy_from_checkpoint
from mario_apo.runs import RunFiles, create_run
from mario_apo.tasks import Task, make_env, parse_task
from mario_apo.train import train

TRAIN_SPS_BAR = 1.3  # ours >= 1.3 x SB3 on Mario


def sb3_train_jobs(mario: dict, cartpole: dict | None) -> list[dict]:
    """``bench train``'s SB3 jobs: Mario with our OpenMP setting and as SB3 runs out of the box; CartPole."""
    jobs = [
        {"run": "mario_apo.bench_sb3:sb3_train_job", "impl": "sb3", "algo": "ppo", **mario},
        {"run": "mario_apo.bench_sb3:sb3_train_job", "impl": "sb3", "algo": "ppo", **mario, "omp_default": True},
    ]
    if cartpole is not None:
        jobs.append(
            {"run": "mario_apo.bench_sb3:sb3_train_job", "impl": "sb3", "algo": "ppo", **cartpole, "eval_every": 10}
        )
    return jobs


def sb3_bars(ours_ppo: dict, results: list[dict]) -> dict:
    """Our Mario PPO's SPS against SB3's, with our OpenMP setting and out of the box."""
    sb3 = {bool(r.get("omp_default")): r for r in results if r["impl"] == "sb3" and r["task"] == ours_ppo["task"]}
    return {
        "ours_ppo_vs_sb3": {"ratio": ours_ppo["sps"] / sb3[False]["sps"], "bar": TRAIN_SPS_BAR},
        "ours_ppo_vs_sb3_out_of_box": {"ratio": ours_ppo["sps"] / sb3[True]["sps"], "bar": TRAIN_SPS_BAR},
    }


def sb3_ppo(task: Task, envs, seed: int, device: str = "cpu"):
    """Stable-Baselines3's PPO with our family's hyper-parameters (for CartPole, MountainCar and MiniGrid:
    rl-zoo's)."""
    ppo = ppo_defaults(task.family)

    def linear(value):
        return lambda remaining: remaining * value

    model = PPO(
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
        # SB3's value loss is the MSE, ours 0.5 x MSE: on the zoo's tasks SB3 gets the zoo's 0.5; on
        # Mario, where there is no zoo setting, our own loss exactly (and our value clipping)
        vf_coef=0.5 * ppo.vf_coef if task.is_mario else 0.5,
        clip_range_vf=ppo.clip_coef if task.is_mario and ppo.clip_vloss else None,
        max_grad_norm=ppo.max_grad_norm,
        seed=seed,
        device=device,
        verbose=0,
    )
    # SB3's default logger makes an empty folder in the temp dir per run even when it logs nothing
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def sb3_train_job(job: dict) -> dict:
    """Stable-Baselines3 PPO with the same hyper-parameters (Mario) or its zoo settings (CartPole)."""
    task = parse_task(job["task"])
    env_fn = functools.partial(make_env, task, EnvConfig())
    start = time.perf_counter()
    vec = SubprocVecEnv if task.is_mario else DummyVecEnv
    envs = vec([env_fn] * job.get("num_envs", ppo_defaults(task.family).num_envs))
    model = sb3_ppo(task, envs, job["seed"], str(resolve_device(job.get("device", "auto"))))

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
        result.update(first_solved(callback.evals, "train_s"))
    return result


def parity_job(job: dict) -> dict:
    """Train one implementation's PPO with the family's settings (rl-zoo's on the classic tasks, ours on
    Mario), then evaluate its final policy with our ``evaluate`` on the same episode seeds for both."""
    task = parse_task(job["task"])
    ppo = ppo_defaults(task.family)
    ppo.total_steps = job["total_steps"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if job["impl"] == "ours":
            cfg = quiet_run_config(job, tmp, device="cpu")  # both implementations get the same eval below
            run_dir = create_run(cfg)
            train(cfg, run_dir)
            model, obs_transform = policy_from_checkpoint(cfg, load_checkpoint(RunFiles(run_dir).checkpoint), Path(tmp))
        else:
            envs = sb3_envs(task, ppo)
            sb3 = sb3_ppo(task, envs, job["seed"])
            sb3.learn(total_timesteps=ppo.total_steps)
            model = SB3Policy(sb3.policy)
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
            result[f"{policy}_max_x"] = outcome["mean_max_x"]
    return result


def sb3_envs(task: Task, ppo: PPOConfig):
    """SB3's vectorised env for parity: the family's env count, VecNormalize where ours normalises."""
    vec = SubprocVecEnv if task.is_mario else DummyVecEnv  # the emulator in worker processes, as ours

    def make():
        env = make_env(task, EnvConfig())
        # SB3 (2.x) sizes its rollout buffer by the env's observation dtype, and VecNormalize keeps an
        # integer Box as it is: MiniGrid's normalised view was stored cast back to uint8 and SB3 trained
        # on that (DoorKey-5x5 at the zoo's settings: 0.04 final-policy success over 10 seeds; with float
        # observations seed 1 reached the goal in all its last 100 episodes)
        return DtypeObservation(env, np.float32) if ppo.norm_obs else env

    envs = vec([make] * ppo.num_envs)
    if ppo.norm_obs or ppo.norm_reward:
        envs = VecNormalize(envs, norm_obs=ppo.norm_obs, norm_reward=ppo.norm_reward, gamma=ppo.gamma)
    return envs


class SB3Policy(nn.Module):
    """SB3's policy as our ``(logits, value)`` model, so that one evaluation code judges both."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, obs):
        obs = obs.float()
        return self.policy.get_distribution(obs).distribution.logits, self.policy.predict_values(obs).squeeze(-1)


PARITY_RESULT_KEYS = ("train_s",) + tuple(
    f"{policy}_{metric}" for policy in ("sampled", "greedy") for metric in ("success", "return", "max_x")
)


def bench_parity(
    steps: dict[str, int], seeds: list[int], episodes: int, greedy_episodes: int, keep: Path | None = None
) -> dict:
    """Our PPO vs Stable-Baselines3's PPO, identical rl-zoo settings (normalisation included), per task and
    seed; final-policy success, paired by seed. Bar: ours is not worse (the paired CI reaches 0 or above).

    :param keep: a folder where each finished job's result is kept, and found again by a rerun
    """
    # What a job trained with is part of it, so that a result kept under other defaults or versions is not reused
    made_with = {"mario_apo": mario_apo.__version__, "stable_baselines3": stable_baselines3.__version__}
    jobs = [
        {"run": "mario_apo.bench_sb3:parity_job", "impl": impl, "algo": "ppo", "task": task, "seed": seed,
         "total_steps": total, "episodes": episodes, "greedy_episodes": greedy_episodes, "eval_seed": 100_000 + seed,
         "settings": dataclasses.asdict(ppo_defaults(parse_task(task).family)), "versions": made_with}
        for task, total in steps.items() for seed in seeds for impl in ("ours", "sb3")
    ]  # fmt: skip
    results = run_jobs(jobs, "bench parity", JobResults(keep, PARITY_RESULT_KEYS) if keep is not None else None)
    tasks = {}
    for task, total in steps.items():
        row = {"total_steps": total, "seeds": seeds}
        # Mario's flag is rare at any budget this box allows: how far the policy gets is the metric there
        metric = "max_x" if parse_task(task).is_mario else "success"
        for policy in ("sampled", "greedy"):
            for name in ("success", "max_x") if metric == "max_x" else ("success",):
                ours, sb3 = ([r[f"{policy}_{name}"] for r in results if (r["task"], r["impl"]) == (task, impl)]
                             for impl in ("ours", "sb3"))  # fmt: skip
                difference = stats.paired_difference_ci(ours, sb3)
                key = policy if name == "success" else f"{policy}_max_x"
                row[key] = {"ours": ours, "sb3": sb3, "ours_minus_sb3": difference, "n": len(seeds)}
        # the interval includes or exceeds 0
        row["met"] = row["sampled" if metric == "success" else "sampled_max_x"]["ours_minus_sb3"][2] >= 0
        tasks[task] = row
    return {
        "machine": machine_record(),
        "episodes": {"sampled": episodes, "greedy": greedy_episodes},
        "jobs": results,
        "tasks": tasks,
    }


def format_parity_table(result: dict) -> str:
    episodes = result["episodes"]
    lines = [
        f"bench parity: final-policy success (and on Mario mean max x), {episodes['sampled']} sampled and "
        f"{episodes['greedy']} greedy episodes per run; ours - SB3 paired by seed, 95% bootstrap CI"
    ]
    for task, row in result["tasks"].items():
        for key in [k for k in ("sampled", "greedy", "sampled_max_x", "greedy_max_x") if k in row]:
            cell, digits = row[key], 0 if key.endswith("max_x") else 2
            mean, low, high = cell["ours_minus_sb3"]
            ours, sb3 = np.mean(cell["ours"]), np.mean(cell["sb3"])
            lines.append(
                f"  {task:<20} {key:<14} ours {ours:.{digits}f}  SB3 {sb3:.{digits}f}  "
                f"ours - SB3 {mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] (n={cell['n']})"
            )
        lines.append(f"  bar {task}: ours not worse than SB3: {'met' if row['met'] else 'MISSED'}")
    return "\n".join(lines)
