"""MiniGrid (Farama's ``minigrid``) as a vector task: the agent's 7x7 view, flat, and reproducible layouts.

The observation is the 7x7x3 symbolic egocentric view (object, colour, state per cell)
flattened to 147 uint8 values. rl-baselines3-zoo trains PPO's MlpPolicy on
``FlatObsWrapper``, which is this view plus a one-hot encoding of the mission string; on
the tasks accepted here the mission is the same in every episode, so those extra inputs
are constant (zero after observation normalisation) and carry nothing.

Each episode's layout (the positions of the agent, key, door and goal) comes from a
``layout_seed`` that the wrapper draws from its own stream (seeded by ``reset(seed=...)``,
continued by later resets) and reports in the reset info; the layout seed and the actions
reproduce the episode: ``reset(options={"layout_seed": s})`` replays it.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

# MiniGrid envs whose mission string is the same in every episode (the flat view drops it).
_NAME_RE = re.compile(
    r"^(DoorKey-(5x5|6x6|8x8|16x16)|Empty-(Random-)?\d+x\d+|FourRooms|Unlock|MultiRoom-N\d+(-S\d+)?|"
    r"LavaGapS\d+|(Lava|Simple)CrossingS\d+N\d+|DistShift[12]|Dynamic-Obstacles-(Random-)?\d+x\d+)$"
)
MINIGRID_ACTIONS = 7  # left, right, forward, pickup, drop, toggle, done: the same in every MiniGrid env
MINIGRID_EXAMPLES = "DoorKey-5x5, DoorKey-6x6, DoorKey-8x8, DoorKey-16x16, Empty-8x8, FourRooms, Unlock"


def minigrid_id(name: str) -> str:
    """``"DoorKey-5x5"`` -> ``"MiniGrid-DoorKey-5x5-v0"``; raises ``ValueError`` naming the valid names."""
    gym_id = f"MiniGrid-{name}-v0"
    if _NAME_RE.match(name) is None or gym_id not in _registry():
        raise ValueError(
            f"unknown MiniGrid env {name!r}: valid names are a fixed-mission MiniGrid env without its "
            f"MiniGrid- prefix and -v0 suffix ({MINIGRID_EXAMPLES}, ...)"
        )
    return gym_id


def _registry() -> dict[str, Any]:
    import minigrid  # noqa: F401  (registers the MiniGrid-* ids; 0.4 s, so only when a MiniGrid task is used)

    return gym.registry


def make_minigrid(name: str, max_steps: int | None = None, render_mode: str | None = None) -> gym.Env:
    """The env of ``minigrid:NAME``, flat view and layout seeds; ``max_steps`` overrides its step limit."""
    settings = {} if max_steps is None else {"max_steps": max_steps}
    return LayoutSeeds(FlatView(gym.make(minigrid_id(name), render_mode=render_mode, **settings)))


class FlatView(gym.ObservationWrapper):
    """The symbolic 7x7x3 egocentric view as one flat uint8 vector."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        view = env.observation_space["image"]
        self.observation_space = gym.spaces.Box(0, 255, (int(np.prod(view.shape)),), np.uint8)

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        return observation["image"].reshape(-1)


class LayoutSeeds(gym.Wrapper):
    """Every episode's layout from its own ``layout_seed``, reported in the reset info."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._layout_seeds = np.random.default_rng()  # replaced by the first reset(seed=...)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._layout_seeds = np.random.default_rng(seed)
        options = dict(options or {})
        layout_seed = options.pop("layout_seed", None)
        if layout_seed is None:
            layout_seed = int(self._layout_seeds.integers(2**63))
        obs, info = self.env.reset(seed=layout_seed, options=options or None)
        info["layout_seed"] = layout_seed
        return obs, info
