"""Replay anchored Mario episodes on a fresh emulator, verify them, and render them as video.

The NES is deterministic: re-running an episode's recorded actions from reset
through the same wrappers reproduces it; with sticky actions, the episode's
recorded ``sticky_seed`` reproduces which frames repeated the previous action. Replay checks that it did, step by step
against the 84x84 frames stored with the anchor and at the end against the
recorded return, length, max x-position and success; a mismatch names the first
diverging step and no video is written.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mario_apo.config import EnvConfig
from mario_apo.errors import ReplayError, ReplayMismatch
from mario_apo.tasks import Task, make_env
from mario_apo.video import VideoWriter


def replay(
    task: Task,
    env_cfg: EnvConfig,
    actions: list[int] | np.ndarray,
    expected: dict[str, Any],
    stored_frames: np.ndarray | None = None,
    video: VideoWriter | None = None,
    sticky_seed: int | None = None,
) -> dict[str, Any]:
    """Re-run ``actions`` from reset, streaming every emulated frame to ``video``.

    :param expected: the recorded ``return``, ``length``, ``max_x`` and ``success``
    :param stored_frames: (length, 84, 84) newest frame of each observation the policy saw, if kept
    :param sticky_seed: the episode's sticky-action seed (needed when ``env_cfg`` has sticky actions)
    :return: the replayed episode's ``info["episode"]``
    :raises ReplayMismatch: naming the first diverging step (the caller's video is then discarded)
    """
    if not task.is_mario:
        raise ReplayError(f"replay renders Mario episodes; task {task.name!r} has no emulator to replay")
    if env_cfg.sticky_actions > 0 and sticky_seed is None:
        raise ReplayError(
            f"the episode ran with sticky actions (p = {env_cfg.sticky_actions}) but its sticky_seed was not "
            "recorded, so which frames repeated an action is unknown: it cannot be replayed exactly"
        )
    env = make_env(task, env_cfg, record_frames=True)
    try:
        obs, info = env.reset(seed=0, options=None if sticky_seed is None else {"sticky_seed": sticky_seed})
        recorded = env.get_wrapper_attr("frames")
        episode_return, success = 0.0, False
        for step in range(len(actions) + 1):
            for rgb, x_pos in recorded:  # the frames this step emulated
                if video is not None:
                    video.add(
                        rgb,
                        [f"step {step}  return {episode_return:.2f}", f"x {x_pos}" + ("  SUCCESS" if success else "")],
                    )
            recorded.clear()
            if step == len(actions):
                break
            if "episode" in info:
                raise ReplayMismatch(
                    f"replay diverges at step {step}: the episode already ended, but {len(actions)} steps were recorded"
                )
            if stored_frames is not None and not np.array_equal(obs[-1], stored_frames[step]):
                raise ReplayMismatch(f"replay diverges at step {step}: the observation differs from the recorded one")
            obs, reward, _, _, info = env.step(int(actions[step]))
            episode_return += reward
            success = bool(info["success"])
        if "episode" not in info:
            raise ReplayMismatch(f"replay diverges at step {len(actions)}: the episode goes on after the recorded end")
        _check_outcome(info["episode"], expected)
        return info["episode"]
    finally:
        env.close()


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
