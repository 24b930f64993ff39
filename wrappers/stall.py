"""Stall truncation: end a Mario episode that has stopped making progress.

An episode whose furthest x-position has not grown for ``steps`` agent steps is
*truncated*, like the time limit, not terminated: the trainer bootstraps it with
V(final observation), because standing still is not a terminal state of the game.
Common in Mario RL; here an option whose default was decided by measurement
(BENCHMARKS.md), since it also cuts off the slow random walks that reach far.
"""

from __future__ import annotations

import gymnasium as gym


class StallTruncation(gym.Wrapper):
    """Truncate when max x has not grown for ``steps`` agent steps (wraps the frame-skipped env)."""

    def __init__(self, env: gym.Env, steps: int):
        if steps < 1:
            raise ValueError(f"stall steps must be >= 1, got {steps}")
        super().__init__(env)
        self.steps = steps
        self._max_x = 0
        self._since_progress = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._max_x, self._since_progress = info.get("x_pos", 0), 0
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if info["x_pos"] > self._max_x:
            self._max_x, self._since_progress = info["x_pos"], 0
        else:
            self._since_progress += 1
        if self._since_progress >= self.steps and not terminated:
            truncated = info["stalled"] = True
        return obs, reward, terminated, truncated, info
