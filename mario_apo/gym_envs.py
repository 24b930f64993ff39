"""The benchmark's Mario and MiniGrid envs for other libraries, by gymnasium id.

``import mario_apo`` registers ``mario_apo/SuperMario-v0`` and ``mario_apo/MiniGrid-v0``
(this module is loaded only when an env is made)::

    import gymnasium, mario_apo
    env = gymnasium.make("mario_apo/SuperMario-v0", level="1-1", reward="goal:1000", sticky_actions=0.25)
    envs = gymnasium.make_vec("mario_apo/SuperMario-v0", num_envs=4, vectorization_mode="async", level="1-1")
    env = gymnasium.make("mario_apo/MiniGrid-v0", name="DoorKey-8x8")  # flat view, layout seeds

Keyword arguments are the task (``level``, ``reward``) and the ``EnvConfig`` fields
(``action_set``, ``frame_skip``, ``frame_stack``, ``sticky_actions``, ``stall_steps``,
``episode_steps``), with the defaults of a training run, so an env made this way is
the env the benchmark trains on. (``max_episode_steps`` is gymnasium's own argument:
it adds an outer time limit; ours is ``episode_steps``.)
"""

from __future__ import annotations

import gymnasium as gym

from mario_apo.config import EnvConfig
from mario_apo.tasks import make_env, parse_task

ENV_ID = "mario_apo/SuperMario-v0"
MINIGRID_ENV_ID = "mario_apo/MiniGrid-v0"


def make_super_mario(
    level: str = "1-1", reward: str = "dense", render_mode: str | None = None, episode_steps: int | None = None, **env
) -> gym.Env:
    """The fully wrapped Mario env of a task: uint8 observations ``(frame_stack, 84, 84)``."""
    cfg = EnvConfig(**env)
    if episode_steps is not None:
        cfg.max_episode_steps = episode_steps
    cfg.validate()
    return make_env(parse_task(f"mario:{level}:{reward}"), cfg, render_mode=render_mode)


def make_minigrid_task(name: str = "DoorKey-5x5", max_steps: int | None = None, render_mode: str | None = None):
    """The wrapped env of task ``minigrid:NAME[:max_steps:N]``: flat uint8 view, episode statistics."""
    task = f"minigrid:{name}" + ("" if max_steps is None else f":max_steps:{max_steps}")
    return make_env(parse_task(task), EnvConfig(), render_mode=render_mode)
