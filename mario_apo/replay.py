"""Replay anchored Mario and MiniGrid episodes in a fresh env, verify them, and render them as video.

The NES is deterministic: re-running an episode's recorded actions from reset
through the same wrappers reproduces it; with sticky actions, the episode's
recorded ``sticky_seed`` reproduces which frames repeated the previous action. A MiniGrid
episode's recorded ``layout_seed`` reproduces its layout. Replay checks that the episode
came back, step by step against the observations stored with the anchor and at the end
against the recorded return, length, max x-position and success; a mismatch names the
first diverging step and no video is written.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from mario_apo.config import EnvConfig
from mario_apo.errors import ReplayError, ReplayMismatch
from mario_apo.tasks import Task, make_env
from mario_apo.video import VideoWriter
from wrappers.episode import EPISODE_SEEDS

REPLAYABLE = ("mario", "minigrid")
"""The task families whose episodes are fixed by their recorded seeds and actions (a CartPole or
MountainCar episode's random start state is not recorded)."""


def replay(
    task: Task,
    env_cfg: EnvConfig,
    actions: list[int] | np.ndarray,
    expected: dict[str, Any],
    stored_frames: np.ndarray | None = None,
    video: VideoWriter | None = None,
    seeds: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Re-run ``actions`` from reset, streaming every rendered frame to ``video``.

    :param expected: the recorded ``return``, ``length``, ``max_x`` and ``success``
    :param stored_frames: per step, the observation the policy saw (Mario: its newest 84x84 frame), if kept
    :param seeds: the episode's seeds (``wrappers.episode.EPISODE_SEEDS``; other keys and None are ignored):
        a sticky-action Mario episode needs its ``sticky_seed``, a MiniGrid episode its ``layout_seed``
    :return: the replayed episode's ``info["episode"]``
    :raises ReplayMismatch: naming the first diverging step (the caller's video is then discarded)
    """
    if task.family not in REPLAYABLE:
        raise ReplayError(
            f"replay re-simulates Mario and MiniGrid episodes; a {task.name!r} episode's start state is not recorded"
        )
    options = {key: int(seeds[key]) for key in EPISODE_SEEDS if (seeds or {}).get(key) is not None}
    if task.is_mario and env_cfg.sticky_actions > 0 and "sticky_seed" not in options:
        raise ReplayError(
            f"the episode ran with sticky actions (p = {env_cfg.sticky_actions}) but its sticky_seed was not "
            "recorded, so which frames repeated an action is unknown: it cannot be replayed exactly"
        )
    if not task.is_mario and "layout_seed" not in options:
        raise ReplayError("the episode's layout_seed was not recorded, so its layout is unknown: it cannot be replayed")
    env = make_env(task, env_cfg, render_mode=None if task.is_mario else "rgb_array", record_frames=task.is_mario)
    try:
        obs, info = env.reset(seed=0, options=options or None)
        episode_return, success = 0.0, False
        for step in range(len(actions) + 1):
            for rgb, position in _new_screens(env, task):  # the frames this step drew
                if video is not None:
                    video.add(rgb, [f"step {step}  return {episode_return:.2f}", position + ("  SUCCESS" * success)])
            if step == len(actions):
                break
            if "episode" in info:
                raise ReplayMismatch(
                    f"replay diverges at step {step}: the episode already ended, but {len(actions)} steps were recorded"
                )
            seen = obs[-1] if task.is_mario else obs
            if stored_frames is not None and not np.array_equal(seen, stored_frames[step]):
                raise ReplayMismatch(f"replay diverges at step {step}: the observation differs from the recorded one")
            obs, reward, _, _, info = env.step(int(actions[step]))
            episode_return += reward
            success = bool(info["episode"]["success"]) if "episode" in info else bool(info.get("success"))
        if "episode" not in info:
            raise ReplayMismatch(f"replay diverges at step {len(actions)}: the episode goes on after the recorded end")
        _check_outcome(info["episode"], expected)
        return info["episode"]
    finally:
        env.close()


def _new_screens(env: gym.Env, task: Task) -> list[tuple[np.ndarray, str]]:
    """The full-colour frames drawn since the last call, each with its position line: Mario's every
    emulated frame (``FrameRecorder``, drained) with its x-position; MiniGrid's rendered grid."""
    if not task.is_mario:
        return [(env.render(), "")]
    recorded = env.get_wrapper_attr("frames")
    screens = [(rgb, f"x {x_pos}") for rgb, x_pos in recorded]
    recorded.clear()
    return screens


def _check_outcome(episode: dict[str, Any], expected: dict[str, Any]) -> None:
    replayed = {
        "return": episode["r"],
        "length": episode["l"],
        "max_x": episode["max_x"],
        "success": episode["success"],
    }
    for key, value in replayed.items():
        same = (
            math.isclose(value, expected[key], rel_tol=1e-9, abs_tol=1e-9)
            if key == "return"
            else value == expected[key]
        )
        if not same:
            raise ReplayMismatch(
                f"replay diverges at step {episode['l']} (the end): {key} {value!r}, recorded {expected[key]!r}"
            )
