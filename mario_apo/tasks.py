"""Task strings -> wrapped gymnasium envs -> vector envs.

A task is named by one string:

- ``mario:W-S[:REWARD]``: Super Mario Bros level W-S (W 1-8, S 1-4) with reward
  mode ``dense`` (default), ``sparse`` (flag only) or ``goal:X``
  (e.g. ``mario:1-1:goal:1000``, ``mario:4-2:sparse``);
- ``cartpole``: CartPole-v1, the sanity task (success: return >= 475);
- ``mountaincar``: MountainCar-v0, a cheap classic sparse task (success: the car
  reached the flag before the 200-step limit);
- ``minigrid:NAME[:max_steps:N]``: Farama MiniGrid env ``MiniGrid-NAME-v0`` (e.g.
  ``minigrid:DoorKey-8x8``), optionally with a shorter step limit (success: reached the
  goal; reward ``1 - 0.9 t / max_steps`` there, 0 otherwise).

Vector envs use gymnasium's ``AutoresetMode.SAME_STEP``: when a sub-env's
episode ends, the step that ends it returns the *reset* observation of the next
episode and keeps the true last observation in ``info["final_obs"]``. So every
transition the trainer stores is a real one (no dummy step after a done, as in
the default ``NEXT_STEP`` mode), and a truncated episode can still be
bootstrapped from its final observation.
"""

from __future__ import annotations

import functools
import signal
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation, ResizeObservation, TimeLimit

from mario_apo.config import EnvConfig
from mario_apo.errors import TaskError
from wrappers.episode import EpisodeStats, success_from_info
from wrappers.mario import ACTION_SETS, LEVELS, MarioEnv, parse_level
from wrappers.minigrid import MINIGRID_EXAMPLES, make_minigrid, minigrid_id
from wrappers.record import FrameRecorder
from wrappers.reward import REWARD_MODES, MarioReward, parse_reward
from wrappers.skip import MaxAndSkip
from wrappers.stall import StallTruncation
from wrappers.sticky import StickyActions

CLASSIC_TASKS = {"cartpole": "CartPole-v1", "mountaincar": "MountainCar-v0"}
TASK_FORMS = "mario:W-S[:dense|sparse|goal:X], cartpole, mountaincar, minigrid:NAME[:max_steps:N]"


@dataclass(frozen=True)
class Task:
    """A parsed task string."""

    name: str
    """The canonical task string (``mario:1-1:dense``, ``cartpole``)."""
    family: str
    """``mario``, ``cartpole``, ``mountaincar`` or ``minigrid``."""
    level: str | None = None
    """Mario level ``W-S``, or the MiniGrid env's name (``DoorKey-8x8``)."""
    reward: str | None = None
    """Mario reward mode: ``dense``, ``sparse`` or ``goal:X``."""
    max_steps: int | None = None
    """MiniGrid: the step limit, when not the env's own."""

    @property
    def is_mario(self) -> bool:
        return self.family == "mario"


def parse_task(spec: str) -> Task:
    """Parse a task string; raise ``TaskError`` with one line naming what is valid."""
    if spec in CLASSIC_TASKS:
        return Task(name=spec, family=spec)
    parts = spec.split(":", 2)
    if parts[0] == "minigrid" and len(parts) >= 2:
        return _parse_minigrid(spec, parts)
    if parts[0] != "mario" or len(parts) < 2:
        raise TaskError(f"unknown task {spec!r}: valid tasks are {TASK_FORMS}")
    level = parts[1]
    reward = parts[2] if len(parts) == 3 else "dense"
    try:
        parse_level(level)
        parse_reward(reward)
    except ValueError as err:
        raise TaskError(str(err)) from None
    return Task(name=f"mario:{level}:{reward}", family="mario", level=level, reward=reward)


def _parse_minigrid(spec: str, parts: list[str]) -> Task:
    name, max_steps = parts[1], None
    if len(parts) == 3:
        key, _, value = parts[2].partition(":")
        if key != "max_steps" or not value.isdigit() or not 1 <= int(value) <= 100_000:
            raise TaskError(
                f"unknown task {spec!r}: a MiniGrid task is minigrid:NAME or minigrid:NAME:max_steps:N "
                "with N in 1-100000"
            )
        max_steps = int(value)
    try:
        minigrid_id(name)
    except ValueError as err:
        raise TaskError(str(err)) from None
    canonical = f"minigrid:{name}" + ("" if max_steps is None else f":max_steps:{max_steps}")
    return Task(name=canonical, family="minigrid", level=name, max_steps=max_steps)


def _cartpole_success(episode_return: float, terminated: bool, info: dict[str, Any]) -> bool:
    return episode_return >= 475.0


def _mountaincar_success(episode_return: float, terminated: bool, info: dict[str, Any]) -> bool:
    # MountainCar terminates only at the flag; the time limit truncates.
    return terminated


def _minigrid_success(episode_return: float, terminated: bool, info: dict[str, Any]) -> bool:
    # The goal pays 1 - 0.9 t / max_steps > 0; lava and the like terminate with 0.
    return terminated and episode_return > 0


def make_env(task: Task, cfg: EnvConfig, render_mode: str | None = None, record_frames: bool = False) -> gym.Env:
    """One fully wrapped env: Mario frames come out as uint8 ``(stack, 84, 84)``.

    :param record_frames: Mario only: keep every emulated frame in colour (``FrameRecorder``,
        reachable as ``env.get_wrapper_attr("frames")``) for videos
    """
    if task.family == "cartpole":
        return EpisodeStats(gym.make(CLASSIC_TASKS["cartpole"], render_mode=render_mode), task.name, _cartpole_success)
    if task.family == "mountaincar":
        env = gym.make(CLASSIC_TASKS["mountaincar"], render_mode=render_mode)
        return EpisodeStats(env, task.name, _mountaincar_success)
    if task.family == "minigrid":
        return EpisodeStats(make_minigrid(task.level, task.max_steps, render_mode), task.name, _minigrid_success)
    # Gray straight from the emulator's buffer: gymnasium's GrayscaleObservation
    # (a float64 weighted sum) alone costs a fifth of the emulator's time.
    env = MarioEnv(task.level, cfg.action_set, obs_type="gray", render_mode=render_mode)
    if cfg.sticky_actions > 0:  # per emulator frame, so below the frame skip
        env = StickyActions(env, cfg.sticky_actions)
    if record_frames:
        env = FrameRecorder(env)
    env = MarioReward(env, task.reward)
    env = MaxAndSkip(env, cfg.frame_skip)
    if cfg.stall_steps:
        env = StallTruncation(env, cfg.stall_steps)
    env = TimeLimit(env, cfg.max_episode_steps)
    env = EpisodeStats(env, task.name, success_from_info)
    env = ResizeObservation(env, (84, 84))
    return FrameStackObservation(env, cfg.frame_stack)


def make_vec_env(task: Task, cfg: EnvConfig, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies of the task: subprocesses for Mario, in-process otherwise.

    The emulator is CPU-bound, so Mario envs run in worker processes that write
    observations into shared memory; CartPole and MountainCar step in
    microseconds and MiniGrid in ~0.2 ms, where a pipe round trip costs about as much as the step.
    """
    if num_envs < 1:
        raise TaskError(f"--num-envs must be a positive integer, got {num_envs}")
    if task.is_mario:
        env_fns = [functools.partial(_make_worker_env, task, cfg) for _ in range(num_envs)]
        return AsyncVectorEnv(env_fns, shared_memory=True, autoreset_mode=AutoresetMode.SAME_STEP)
    env_fns = [functools.partial(make_env, task, cfg) for _ in range(num_envs)]
    return SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)


def _make_worker_env(task: Task, cfg: EnvConfig) -> gym.Env:
    """``make_env`` in an env worker process, which leaves Ctrl-C to the trainer: a terminal sends
    SIGINT to every process of its group, and a worker interrupted mid-step would end the run
    instead of letting the trainer finish its update and checkpoint (it closes the workers)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # forked from a thread other than the main one (a population's learner actor)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # this process's only thread: the same effect
    return make_env(task, cfg)


def task_listing() -> str:
    """The text of ``mario-apo tasks``."""
    return "\n".join(
        [
            "Task strings (pass one to --task):",
            "  mario:W-S[:REWARD]   Super Mario Bros, one level; the episode ends at the first life lost,",
            "                       at the flag, or at --max-episode-steps",
            f"    levels: {' '.join(LEVELS)}",
            f"    rewards: {REWARD_MODES}; default dense",
            f"    action sets (--actions): {', '.join(f'{k} ({len(v)})' for k, v in ACTION_SETS.items())}",
            "  cartpole             CartPole-v1 (sanity task; success = return >= 475)",
            "  mountaincar          MountainCar-v0 (sparse classic; success = reached the flag)",
            "  minigrid:NAME[:max_steps:N]",
            "                       Farama MiniGrid-NAME-v0, a fixed-mission env; the policy sees its 7x7 symbolic",
            "                       view; success = reached the goal; N: a shorter step limit (rarer goal)",
            f"    names: {MINIGRID_EXAMPLES}, ... (DoorKey: the rarity ladder)",
            "Examples: mario:1-1:goal:1000  mario:4-2:sparse  mario:1-1  cartpole  minigrid:DoorKey-8x8",
        ]
    )


class EnvGroups:
    """The vector env split into groups that step while the learner acts for another group.

    With one vector env the learner waits for every worker, then the workers wait
    for the learner's forward pass. With two groups, group A's emulators run while
    the policy computes group B's actions and vice versa. Env ``i`` is still seeded
    ``seed + i`` and every env's trajectory is the same as in one vector env.
    The vector tasks (CartPole, MountainCar, MiniGrid) step in-process, so they use a single group.
    Every env keeps its own seed (``reset(seeds)``), whatever group it is in.
    """

    def __init__(self, task: Task, cfg: EnvConfig, num_envs: int):
        half = num_envs // 2 if task.is_mario else 0
        self.slices = [slice(0, num_envs - half)] + ([slice(num_envs - half, num_envs)] if half else [])
        sizes = [sl.stop - sl.start for sl in self.slices]
        self.envs = []
        try:
            for size in sizes:
                self.envs.append(make_vec_env(task, cfg, size))
        except BaseException:
            self.close(terminate=True)
            raise
        self.single_observation_space = self.envs[0].single_observation_space
        self.single_action_space = self.envs[0].single_action_space
        self._pending: dict[int, tuple] = {}

    @property
    def groups(self) -> range:
        return range(len(self.envs))

    def reset(self, seeds: list[int]) -> list[np.ndarray]:
        """First observations, one array per group; env ``i`` is seeded ``seeds[i]``."""
        return [envs.reset(seed=seeds[sl])[0] for envs, sl in zip(self.envs, self.slices, strict=True)]

    def send(self, group: int, actions: np.ndarray) -> None:
        """Start stepping ``group`` (in-process groups step right away)."""
        envs = self.envs[group]
        if isinstance(envs, AsyncVectorEnv):
            envs.step_async(actions)
        else:
            self._pending[group] = envs.step(actions)

    def receive(self, group: int) -> tuple:
        """Wait for ``group``'s step: (obs, rewards, terminated, truncated, infos)."""
        envs = self.envs[group]
        return envs.step_wait() if isinstance(envs, AsyncVectorEnv) else self._pending.pop(group)

    def close(self, terminate: bool = False) -> None:
        """Close every group; ``terminate`` kills the workers without waiting for pending steps
        (after an error, when a worker may be dead and a normal close would wait on it)."""
        for envs in self.envs:
            if terminate and isinstance(envs, AsyncVectorEnv):
                # gymnasium's close(terminate=True) still reads the pending step's reply
                # first, which raises EOFError when that worker is dead.
                for process in envs.processes:
                    if process.is_alive():
                        process.terminate()
                    process.join()
                for pipe in envs.parent_pipes:
                    pipe.close()
                envs.closed = True
            else:
                envs.close()
