"""Run a policy on fresh envs and summarise its episodes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mario_apo.tasks import EnvConfig, Task, make_env


def evaluate(model: nn.Module, task: Task, env_cfg: EnvConfig, episodes: int, greedy: bool = True, seed: int = 0) -> dict:
    """Play ``episodes`` episodes one after another on one fresh env.

    :param greedy: take the most probable action; else sample from the policy
    :return: success rate, mean/median return, mean max-x, mean length, episode count
    """
    env = make_env(task, env_cfg)
    generator = torch.Generator().manual_seed(seed)
    results = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            while True:
                with torch.inference_mode():
                    logits, _ = model(torch.as_tensor(obs[None]))
                if greedy:
                    action = int(logits.argmax(-1))
                else:
                    action = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    results.append(info["episode"])
                    break
    finally:
        env.close()
    returns = np.array([r["r"] for r in results])
    return {
        "task": task.name,
        "episodes": episodes,
        "policy": "greedy" if greedy else "sample",
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_return": float(returns.mean()),
        "median_return": float(np.median(returns)),
        "mean_max_x": float(np.mean([r["max_x"] for r in results])),
        "mean_length": float(np.mean([r["l"] for r in results])),
    }
