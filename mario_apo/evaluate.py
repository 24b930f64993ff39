"""Run a policy on fresh envs and summarise its episodes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mario_apo.config import EnvConfig, RunConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.errors import CheckpointError, first_line
from mario_apo.normalize import Normalizer
from mario_apo.stats import wilson_interval
from mario_apo.tasks import Task, make_env, make_vec_env, parse_task
from mario_apo.video import VideoWriter
from models.actor_critic import act, make_model, model_device


def evaluate(
    model: nn.Module,
    task: Task,
    env_cfg: EnvConfig,
    episodes: int,
    greedy: bool = True,
    seed: int = 0,
    video_path: Path | None = None,
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Play ``episodes`` episodes one after another on one fresh env.

    :param greedy: take the most probable action; else sample from the policy
    :param video_path: record the first episode there (.mp4 or .gif): every emulated
        frame in colour for Mario, the env's own rendering for the classic tasks
    :param obs_transform: the run's observation normalisation (its saved statistics), if any
    :return: success rate, mean/median return, mean max-x, mean length, episode count, and how many
        of the episodes were distinct (different observation sequences; a greedy policy on a
        deterministic env plays one episode over and over)
    """
    env = make_env(
        task,
        env_cfg,
        render_mode=None if task.is_mario or video_path is None else "rgb_array",
        record_frames=task.is_mario and video_path is not None,
    )
    generator = torch.Generator().manual_seed(seed)
    results = []
    try:
        for episode in range(episodes):
            video = VideoWriter(video_path, scale=2 if task.is_mario else 1) if episode == 0 and video_path else None
            results.append(_play(model, env, task, greedy, generator, seed + episode, video, obs_transform))
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
        "distinct_episodes": len({r["fingerprint"] for r in results}),
    }


def _play(
    model,
    env,
    task: Task,
    greedy: bool,
    generator: torch.Generator,
    seed: int,
    video: VideoWriter | None,
    obs_transform: Callable[[np.ndarray], np.ndarray] | None,
) -> dict:
    """One episode; returns its ``info["episode"]`` and a ``fingerprint`` of its observations."""
    obs, _ = env.reset(seed=seed)
    device = model_device(model)
    fingerprint = hashlib.blake2b(obs.tobytes(), digest_size=16)
    step, episode_return, info = 0, 0.0, {}
    with video if video is not None else contextlib.nullcontext():
        while True:
            if video is not None:
                frames = env.get_wrapper_attr("frames") if task.is_mario else [(env.render(), 0)]
                for rgb, x_pos in frames:
                    video.add(
                        rgb, [f"step {step}  return {episode_return:.2f}"] + ([f"x {x_pos}"] if task.is_mario else [])
                    )
                frames.clear()
            if "episode" in info:
                return {**info["episode"], "fingerprint": fingerprint.hexdigest()}
            with torch.inference_mode():
                policy_obs = obs if obs_transform is None else obs_transform(obs[None])[0]
                action = int(act(model, torch.as_tensor(policy_obs[None]).to(device), greedy, generator).actions[0])
            obs, reward, _, _, info = env.step(action)
            fingerprint.update(obs[-1].tobytes() if task.is_mario else obs.tobytes())
            step, episode_return = step + 1, episode_return + float(reward)


def evaluate_final_policy(
    model: nn.Module,
    task: Task,
    env_cfg: EnvConfig,
    episodes: dict[str, int],
    num_envs: int,
    seeds: list[int],
    obs_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    stop: Callable[[], bool] = lambda: False,
    progress: bool = False,
) -> dict | None:
    """The benchmark's metric: the final policy on fresh episodes, ``num_envs`` at a time.

    :param episodes: how many episodes per policy, ``{"sampled": 100, "greedy": 20}`` (0 skips one);
        sampled actions are the policy training used, greedy is its most probable action
    :param seeds: ``num_envs + 1`` seeds: the envs' (each seeds its sticky-action stream), the sampler's
    :param stop: polled every step; when it turns true the evaluation is abandoned (returns None)
    :return: per policy: episodes, successes, success rate with its Wilson 95% interval, mean return,
        length and max x, and the agent steps it ran; ``steps``: all of them (not part of the training budget)
    """
    envs = make_vec_env(task, env_cfg, num_envs)
    generator = torch.Generator().manual_seed(seeds[num_envs])
    result: dict = {"num_envs": num_envs, "sticky_actions": env_cfg.sticky_actions if task.is_mario else None}
    try:
        with tqdm(total=sum(episodes.values()), desc="final eval", unit="episode", disable=not progress) as bar:
            for policy, count in episodes.items():
                if count > 0:
                    obs, _ = envs.reset(seed=seeds[:num_envs])
                    result[policy] = _vector_episodes(
                        model, envs, obs, count, policy == "greedy", generator, obs_transform, stop, bar
                    )
                    if result[policy] is None:
                        return None
                    if not task.is_mario:
                        del result[policy]["mean_max_x"]
    finally:
        envs.close()
    result["steps"] = sum(result[policy]["steps"] for policy in episodes if policy in result)
    return result


def _vector_episodes(model, envs, obs, count, greedy, generator, obs_transform, stop, bar) -> dict | None:
    """``count`` episodes over the vector env's envs; env ``i`` plays ``(count + i) // n`` of them,
    so that short episodes, which end first, are not over-counted (as SB3's evaluate_policy)."""
    n = envs.num_envs
    quota = np.array([(count + i) // n for i in range(n)])
    played = np.zeros(n, dtype=int)
    returns, lengths, successes, max_xs = [], [], [], []
    steps, device = 0, model_device(model)
    while (played < quota).any():
        if stop():
            return None
        with torch.inference_mode():
            policy_obs = torch.as_tensor(obs if obs_transform is None else obs_transform(obs)).to(device)
            actions = act(model, policy_obs, greedy, generator).actions
        obs, _, terminated, truncated, infos = envs.step(actions.numpy())
        steps += n
        for episode in EpisodeEnd.ended_at(infos, truncated & ~terminated):
            if played[episode.env] < quota[episode.env]:
                played[episode.env] += 1
                returns.append(episode.episode_return)
                lengths.append(episode.length)
                successes.append(episode.success)
                max_xs.append(episode.max_x)
                bar.update()
    low, high = wilson_interval(sum(successes), count)
    return {
        "episodes": count,
        "successes": sum(successes),
        "success_rate": sum(successes) / count,
        "wilson95": [low, high],
        "mean_return": float(np.mean(returns)),
        "mean_length": float(np.mean(lengths)),
        "mean_max_x": float(np.mean(max_xs)),
        "steps": steps,
    }


def policy_from_checkpoint(
    cfg: RunConfig, state: dict, where: Path, device: torch.device | None = None
) -> tuple[nn.Module, Callable[[np.ndarray], np.ndarray]]:
    """A run's trained policy: its model with the checkpoint's weights (on ``device``, default the CPU),
    and its observation normalisation with the checkpoint's statistics (the identity when the run had none)."""
    task = parse_task(cfg.task)
    probe = make_env(task, cfg.env)
    model = make_model(probe.observation_space, probe.action_space)
    normalizer = Normalizer(probe.observation_space.shape, 1, cfg.ppo.gamma, cfg.ppo.norm_obs, norm_reward=False)
    probe.close()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {where} does not fit this run's model: {first_line(err)}") from None
    normalizer.load_state_dict(state.get("normalizer"))
    return model.to(device or torch.device("cpu")).eval(), normalizer.obs
