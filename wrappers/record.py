"""Keep every emulated frame in full colour, for replay and evaluation videos.

Sits directly on ``MarioEnv`` (below the frame skip), so a video shows all 60
frames a second the NES drew, not the 84x84 gray input the agent saw.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class FrameRecorder(gym.Wrapper):
    """Appends ``(rgb_frame, x_pos)`` of the reset frame and of every frame stepped to ``self.frames``;
    the reader drains the list (a long episode's frames would not fit in memory)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.frames: list[tuple[np.ndarray, int]] = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.frames.clear()
        self.frames.append((self.env.unwrapped.render(), int(info["x_pos"])))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append((self.env.unwrapped.render(), int(info["x_pos"])))
        return obs, reward, terminated, truncated, info
