"""Per-episode statistics, the same for every task.

At the last step of an episode ``info["episode"]`` holds ``r`` (return), ``l``
(length in agent steps), ``success`` (bool), ``max_x`` (furthest x-position,
Mario only, else 0), ``level`` (the task name) and the seeds that, with its actions, reproduce
the episode (``EPISODE_SEEDS``: a sticky-action Mario episode's ``sticky_seed``, a MiniGrid
episode's ``layout_seed``). The trainer and the report read only these keys, so one code path
covers every task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym

EPISODE_SEEDS = ("sticky_seed", "layout_seed")
"""Reset-info keys of the wrappers that draw an episode's randomness from a seed of its own
(``wrappers.sticky``, ``wrappers.minigrid``): ``reset(options={key: seed})`` replays it."""

# success(episode_return, terminated, last_info) -> bool
SuccessFn = Callable[[float, bool, dict[str, Any]], bool]


def success_from_info(episode_return: float, terminated: bool, info: dict[str, Any]) -> bool:
    """Mario: the reward wrapper already decided (flag or goal reached)."""
    return bool(info.get("success", False))


class EpisodeStats(gym.Wrapper):
    """Accumulates return, length and max x; reports them when an episode ends."""

    def __init__(self, env: gym.Env, level: str, success_fn: SuccessFn = success_from_info):
        super().__init__(env)
        self.level = level
        self.success_fn = success_fn
        self._return = 0.0
        self._length = 0
        self._max_x = 0
        self._seeds: dict[str, int] = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._return, self._length = 0.0, 0
        self._max_x = int(info.get("x_pos", 0))
        self._seeds = {key: info[key] for key in EPISODE_SEEDS if key in info}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._length += 1
        self._max_x = max(self._max_x, int(info.get("x_pos", 0)))
        if terminated or truncated:
            info["episode"] = {
                "r": self._return,
                "l": self._length,
                "success": bool(self.success_fn(self._return, terminated, info)),
                "max_x": self._max_x,
                "level": self.level,
                **self._seeds,
            }
        return obs, reward, terminated, truncated, info
