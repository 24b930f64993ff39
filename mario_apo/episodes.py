"""Finished episodes as the env workers report them: ``info["final_info"]["episode"]``, written by
``wrappers.episode.EpisodeStats``. One reader for training and evaluation alike."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

RECENT_EPISODES = 100
"""The window of the recent-episode metrics (``charts/success_rate``, ``charts/*_100``), of a
population's progress, and of a report's success among the last training episodes."""


class EpisodeEnd(NamedTuple):
    """An episode that ended at rollout step ``step`` in env ``env``."""

    step: int
    env: int
    episode_return: float
    length: int
    success: bool
    max_x: int
    truncated: bool = False
    """Cut by a time limit or stall truncation (bootstrapped), not terminated by the game."""
    sticky_seed: int | None = None
    """With the actions, reproduces a sticky-action Mario episode (None without sticky actions)."""
    layout_seed: int | None = None
    """With the actions, reproduces a MiniGrid episode (None on other tasks)."""

    @classmethod
    def ended_at(
        cls, infos: dict[str, Any], truncated: np.ndarray, step: int = 0, first_env: int = 0
    ) -> list[EpisodeEnd]:
        """The episodes that ended at this step of a vector env whose first env is ``first_env``.

        :param truncated: per env, whether its episode was truncated (not terminated)
        """
        if "final_info" not in infos:
            return []
        episodes, mask = infos["final_info"]["episode"], infos["final_info"]["_episode"]
        sticky_seeds, layout_seeds = episodes.get("sticky_seed"), episodes.get("layout_seed")
        return [
            cls(
                step=step,
                env=first_env + int(i),
                episode_return=float(episodes["r"][i]),
                length=int(episodes["l"][i]),
                success=bool(episodes["success"][i]),
                max_x=int(episodes["max_x"][i]),
                truncated=bool(truncated[i]),
                sticky_seed=None if sticky_seeds is None else int(sticky_seeds[i]),
                layout_seed=None if layout_seeds is None else int(layout_seeds[i]),
            )
            for i in np.flatnonzero(mask)
        ]
