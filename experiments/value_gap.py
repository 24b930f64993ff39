"""How far a run's value estimates sit from their GAE targets, and so how often PPO's value clip binds.

    python experiments/value_gap.py runs/mario-learning/ppo-mario-1-1-s1

One rollout of the run's checkpointed policy, collected as training collects it (its envs and env
settings, sampled actions, num_envs x num_steps), then GAE with the run's gamma and lambda. With
value clipping (``clip_vloss``) a sample whose target lies further than ``clip_coef`` from the
rollout's value moves at most ``clip_coef`` towards it in an update: the share of such samples is
the share of the batch whose value gradient the clip cuts off once its value has moved that far.
Reads the run dir only (config.json, checkpoint.pt); writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mario_apo.checkpoint import load_checkpoint
from mario_apo.evaluate import policy_from_checkpoint
from mario_apo.ppo import compute_gae
from mario_apo.runs import RunFiles, load_run_config
from mario_apo.tasks import make_vec_env, parse_task
from models.actor_critic import act


def main(run_dir: Path, seed: int = 1000) -> None:
    cfg = load_run_config(run_dir)
    state = load_checkpoint(RunFiles(run_dir).checkpoint)
    model, obs_transform = policy_from_checkpoint(cfg, state, run_dir)
    num_envs, num_steps = cfg.ppo.num_envs, cfg.ppo.num_steps
    envs = make_vec_env(parse_task(cfg.task), cfg.env, num_envs)
    obs, _ = envs.reset(seed=list(range(seed, seed + num_envs)))
    sampler = torch.Generator().manual_seed(seed)
    rewards, values, ends = (torch.zeros(num_steps, num_envs) for _ in range(3))
    with torch.inference_mode():
        for t in range(num_steps):
            action = act(model, torch.as_tensor(obs_transform(np.asarray(obs))), generator=sampler)
            values[t] = action.values
            obs, reward, terminated, truncated, _ = envs.step(action.actions.numpy())
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            ends[t] = torch.as_tensor(terminated | truncated, dtype=torch.float32)
        _, next_value = model(torch.as_tensor(obs_transform(np.asarray(obs))))
    envs.close()
    _, targets = compute_gae(rewards, values, ends, next_value, cfg.ppo.gamma, cfg.ppo.gae_lambda)
    gap = (targets - values).abs()
    clip = cfg.ppo.clip_coef
    print(f"{run_dir}: update {state['update']}, {cfg.task}, gamma {cfg.ppo.gamma}, lambda {cfg.ppo.gae_lambda}")
    print(f"  {num_envs} envs x {num_steps} steps, {int(ends.sum())} episodes ended")
    print(f"  reward per agent step {rewards.mean():.3f}")
    print(f"  GAE targets: mean {targets.mean():.2f}, sd {targets.std():.2f}; values: mean {values.mean():.2f}")
    print(f"  |target - value|: median {gap.median():.2f}, mean {gap.mean():.2f}")
    clipped = "clipped" if cfg.ppo.clip_vloss else "not clipped"
    print(f"  share beyond the value clip ({clip}, {clipped} in this run): {(gap > clip).float().mean():.3f}")
    print(f"  share beyond 1.0: {(gap > 1).float().mean():.3f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
