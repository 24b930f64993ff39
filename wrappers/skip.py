"""Frame skip with max-pooling over the last two frames actually emulated.

gymnasium's ``MaxAndSkipObservation`` writes frames into its pool only at the
last two indices of the skip, so when an episode ends on an earlier frame it
returns frames left over from the previous step. Here the pool is always the
last two frames of *this* step (or the single frame, if the episode ended on
the first one), and the reward is the sum over the frames emulated.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MaxAndSkip(gym.Wrapper):
    """Repeat the action ``skip`` times; return the max of the last two frames."""

    def __init__(self, env: gym.Env, skip: int = 4):
        if skip < 1:
            raise ValueError(f"frame skip must be >= 1, got {skip}")
        super().__init__(env)
        self.skip = skip

    def step(self, action):
        total_reward = 0.0
        previous = obs = None
        for _ in range(self.skip):
            previous = obs
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += reward
            if terminated or truncated:
                break
        # The NES draws some sprites on alternate frames; the max of the last
        # two frames of this step keeps them visible.
        pooled = obs if previous is None else np.maximum(previous, obs)
        return pooled, total_reward, terminated, truncated, info
