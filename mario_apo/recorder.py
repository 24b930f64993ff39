"""Whole episodes out of rollouts: each env's open episode is recorded across rollout boundaries and
handed over when it ends, so an episode longer than one rollout is kept whole. APO's anchor buffer and
SIL's replay both keep episodes this way.

Frame-stacked observations are kept as their newest frame only (4x less memory) and re-stacked on
reading (``restack``), with the first-frame padding gymnasium's ``FrameStackObservation`` uses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mario_apo.episodes import EpisodeEnd

Chunk = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Consecutive steps of one env's episode: (frames, behaviour log-probs, actions, rewards)."""


class EpisodeRecorder:
    """Per env, the chunks of its episode so far."""

    def __init__(self, num_envs: int, frame_stack: int | None):
        """:param frame_stack: frames per observation for image tasks (keep the newest only), None for vectors"""
        self.frame_stack = frame_stack
        self.open: list[list[Chunk]] = [[] for _ in range(num_envs)]

    def record_rollout(
        self,
        obs: np.ndarray,
        logprobs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        episodes: list[EpisodeEnd],
        close: Callable[[list[Chunk], EpisodeEnd], None],
    ) -> None:
        """Record one rollout of every env; ``close(chunks, episode)`` each episode that ended in it, in the
        order they ended (its chunks joined by the caller only if it keeps the episode).

        :param obs: (steps, envs, ...) observations the actions were taken from
        :param logprobs: (steps, envs, num_actions) behaviour log-probabilities
        :param actions: (steps, envs) actions taken
        :param rewards: (steps, envs) per-step rewards (which ones is the caller's choice)
        """
        frames = obs[:, :, -1] if self.frame_stack else obs
        first_open_step = [0] * len(self.open)  # per env: the first step not yet recorded

        def keep(env: int, stop: int) -> None:
            # copies: the rollout's storage is overwritten by the next rollout
            steps = slice(first_open_step[env], stop)
            chunk = (frames[steps, env], logprobs[steps, env], actions[steps, env], rewards[steps, env])
            self.open[env].append(tuple(part.copy() for part in chunk))
            first_open_step[env] = stop

        for episode in episodes:
            keep(episode.env, episode.step + 1)
            close(self.open[episode.env], episode)
            self.open[episode.env] = []
        for env in range(len(self.open)):
            if first_open_step[env] < len(actions):
                keep(env, len(actions))

    def reset(self) -> None:
        """Drop partly recorded episodes (the envs were reset, e.g. on resume)."""
        self.open = [[] for _ in self.open]


def joined(chunks: list[Chunk]) -> Chunk:
    """An episode's chunks as one array each."""
    return tuple(np.concatenate(parts) for parts in zip(*chunks, strict=True))


def restack(frames: np.ndarray, steps: np.ndarray, frame_stack: int | None) -> np.ndarray:
    """The observations at ``steps`` of an episode stored as ``frames`` (newest frames when stacked)."""
    if not frame_stack:
        return frames[steps]
    offsets = np.arange(-frame_stack + 1, 1)
    # Before the first frame, FrameStackObservation pads with the reset frame.
    return frames[np.maximum(steps[:, None] + offsets[None, :], 0)]
