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

import numpy as np
from tqdm import tqdm

from mario_apo.tasks import EnvConfig, Task, make_env, make_vec_env
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
        "machine": {"cores": cores, "processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "raw_emulator_frames_per_s": raw_fps,
        "wrapped_env_steps_per_s": single_sps,
        "vector_env_steps_per_s": {str(n): sps for n, sps in vector_sps.items()},
        "best_vector_num_envs": best_n,
        "bars": {
            "wrapped_vs_raw": {"ratio": single_ratio, "bar": SINGLE_ENV_BAR, "met": single_ratio >= SINGLE_ENV_BAR},
            "vector_vs_cores_x_single": {"ratio": vector_ratio, "bar": VECTOR_ENV_BAR, "met": vector_ratio >= VECTOR_ENV_BAR},
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
    lines = [f"bench env: {result['task']}, {result['machine']['cores']} cores, {result['seconds_per_measurement']:g} s each"]
    lines += [f"  {name:<26}{value}   {note}" for name, value, note in rows]
    for name, bar in result["bars"].items():
        verdict = "met" if bar["met"] else "MISSED"
        lines.append(f"  bar {name:<26} ratio {bar['ratio']:.2f} (>= {bar['bar']}): {verdict}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> None:
    with open(path, "w") as out:
        json.dump(result, out, indent=2)
