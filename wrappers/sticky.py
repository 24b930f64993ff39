"""Sticky actions (Machado et al., 2018, "Revisiting the Arcade Learning Environment", JAIR 61).

The NES is deterministic: from the same reset, the same actions replay the same
game. With sticky actions, at every emulator frame and with probability ``p``,
the previous frame's action is repeated instead of the one asked for, so a policy
must act closed-loop and a greedy policy no longer plays one episode forever.

Each episode draws its own ``sticky_seed`` from the env's stream (seeded by
``reset(seed=...)``; later resets continue it) and reports it in the reset info.
That seed and the agent's actions reproduce the episode exactly:
``reset(options={"sticky_seed": s})`` replays it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

NOOP = 0  # index 0 is NOOP in every gym-super-mario-bros action set


class StickyActions(gym.Wrapper):
    """At every frame, with probability ``p``, repeat the previous frame's action (frame-level env)."""

    def __init__(self, env: gym.Env, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"sticky-action probability must be in [0, 1), got {p}")
        super().__init__(env)
        self.p = p
        self._episode_seeds = np.random.default_rng()  # replaced by the first reset(seed=...)
        self._rng = np.random.default_rng()
        self._previous = NOOP

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._episode_seeds = np.random.default_rng(seed)
        options = dict(options or {})
        sticky_seed = options.pop("sticky_seed", None)
        if sticky_seed is None:
            sticky_seed = int(self._episode_seeds.integers(2**63))
        self._rng = np.random.default_rng(sticky_seed)
        self._previous = NOOP
        obs, info = self.env.reset(seed=seed, options=options or None)
        info["sticky_seed"] = sticky_seed
        return obs, info

    def step(self, action):
        if self._rng.random() < self.p:
            action = self._previous
        self._previous = action
        return self.env.step(action)
