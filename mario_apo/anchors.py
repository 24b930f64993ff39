"""APO's anchor buffer and anchor KL: the whole difference between APO and PPO, with one loss term.

The buffer keeps the K highest-return episodes seen so far (the *anchors*). For
every step of an anchor it holds the observation and the behaviour policy's
log-probabilities *at collection time* (``p_best``, never recomputed), plus the
action taken, so an anchored Mario episode can be replayed on the emulator.

Episodes are recorded per env across rollout boundaries, so an episode longer
than one rollout is still admitted whole. Frame-stacked observations are stored
as their newest frame only (4x less memory) and re-stacked on sampling, with
the same first-frame padding gymnasium's ``FrameStackObservation`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mario_apo.config import AnchorConfig


def anchor_kl(best_logprobs: torch.Tensor, logits: torch.Tensor, direction: str = "forward") -> torch.Tensor:
    """Mean categorical KL between the anchored and the current policy.

    forward: ``KL(p_best || pi_theta)`` = sum_a p_best (log p_best - log pi), mode-covering:
    pi must keep mass on every action the anchor used (the spec's default).
    reverse: ``KL(pi_theta || p_best)``, which keeps pi inside the anchor's support (an ablation).
    """
    logprobs = F.log_softmax(logits, dim=-1)
    if direction == "forward":
        return (best_logprobs.exp() * (best_logprobs - logprobs)).sum(-1).mean()
    if direction == "reverse":
        return (logprobs.exp() * (logprobs - best_logprobs)).sum(-1).mean()
    raise ValueError(f"unknown KL direction {direction!r}: valid are forward, reverse")


@dataclass(eq=False)
class Anchor:
    """One admitted episode."""

    frames: np.ndarray
    """(length, ...) observations, or their newest frame when frame-stacked; uint8 for images."""
    logprobs: np.ndarray
    """(length, num_actions) float32 behaviour log-probabilities at collection time."""
    actions: np.ndarray
    """(length,) actions taken (replay re-runs them on the emulator)."""
    episode_return: float
    success: bool
    max_x: int
    episode_id: int
    """Global index of the episode among all episodes finished in the run."""
    admitted_update: int
    """The PPO update during which it was admitted (for ``anchor/mean_age_updates``)."""

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.logprobs.nbytes + self.actions.nbytes


class AnchorBuffer:
    """Top-K episodes by return, capped in MB, sampled uniformly over their states."""

    def __init__(self, cfg: AnchorConfig, num_envs: int, frame_stack: int | None, seed: int):
        """
        :param cfg: K, admission rule, memory cap
        :param num_envs: envs recorded in parallel
        :param frame_stack: frames per observation for image tasks (store the newest only), None for vectors
        :param seed: seed of the sampler's own generator (torch's RNG is left untouched, so
            training with beta = 0 stays bit-identical to PPO)
        """
        self.cfg = cfg
        self.frame_stack = frame_stack
        self.anchors: list[Anchor] = []
        self.rng = np.random.default_rng(seed)
        self._open: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[] for _ in range(num_envs)]
        self._episodes_seen = 0
        self._sample_index: np.ndarray | None = None

    # -- recording -----------------------------------------------------------------

    def observe(
        self,
        obs: np.ndarray,
        logprobs: np.ndarray,
        actions: np.ndarray,
        finished: dict[int, dict[str, Any]],
        update: int,
        first_env: int = 0,
    ) -> list[Anchor]:
        """Record one step of the envs ``first_env, first_env + 1, ...``; offer every episode
        that ended in it. Returns those admitted.

        :param obs: (envs, ...) observations the actions were taken from
        :param logprobs: (envs, num_actions) behaviour log-probabilities
        :param actions: (envs,) actions taken
        :param finished: index within these envs -> ``info["episode"]`` for episodes that ended
        """
        admitted = []
        for i in range(len(actions)):
            steps = self._open[first_env + i]
            frame = obs[i, -1] if self.frame_stack else obs[i]
            steps.append((frame.copy(), logprobs[i].copy(), int(actions[i])))
            if i in finished:
                anchor = self._close(steps, finished[i], update)
                self._open[first_env + i] = []
                if anchor is not None:
                    admitted.append(anchor)
        return admitted

    def reset_open_episodes(self) -> None:
        """Drop partly recorded episodes (the envs were reset, e.g. on resume)."""
        self._open = [[] for _ in self._open]

    def _close(self, steps, episode: dict[str, Any], update: int) -> Anchor | None:
        self._episodes_seen += 1
        ret, success = float(episode["r"]), bool(episode["success"])
        if self.cfg.anchor_admit == "success" and not success:
            return None
        if len(self.anchors) >= self.cfg.anchors and ret <= self.worst_return:
            return None  # ties keep the anchor found first
        frames, logprobs, actions = zip(*steps)
        anchor = Anchor(
            frames=np.stack(frames),
            logprobs=np.stack(logprobs).astype(np.float32),
            actions=np.asarray(actions, dtype=np.int64),
            episode_return=ret,
            success=success,
            max_x=int(episode.get("max_x", 0)),
            episode_id=self._episodes_seen,
            admitted_update=update,
        )
        self.anchors.append(anchor)
        # Best first; among equal returns the older (smaller id) first, so it survives eviction.
        self.anchors.sort(key=lambda a: (-a.episode_return, a.episode_id))
        del self.anchors[self.cfg.anchors:]
        while self.nbytes > self.cfg.anchor_max_mb * 2**20 and len(self.anchors) > 1:
            self.anchors.pop()
        self._sample_index = None
        return anchor if anchor in self.anchors else None

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.anchors)

    @property
    def worst_return(self) -> float:
        return self.anchors[-1].episode_return

    @property
    def best(self) -> Anchor | None:
        return self.anchors[0] if self.anchors else None

    def stacked_obs(self, anchor: Anchor, steps: np.ndarray) -> np.ndarray:
        """Observations at ``steps`` of an anchor, re-stacked from stored frames."""
        if not self.frame_stack:
            return anchor.frames[steps]
        offsets = np.arange(-self.frame_stack + 1, 1)
        # Before the first frame, FrameStackObservation pads with the reset frame.
        return anchor.frames[np.maximum(steps[:, None] + offsets[None, :], 0)]

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` states drawn uniformly over all anchor steps: (obs, p_best log-probs)."""
        if self._sample_index is None:
            self._sample_index = np.concatenate(
                [np.stack([np.full(a.length, k), np.arange(a.length)], 1) for k, a in enumerate(self.anchors)]
            )
        picks = self._sample_index[self.rng.integers(len(self._sample_index), size=batch_size)]
        obs, logprobs = [], []
        for k in np.unique(picks[:, 0]):
            steps = picks[picks[:, 0] == k, 1]
            obs.append(self.stacked_obs(self.anchors[k], steps))
            logprobs.append(self.anchors[k].logprobs[steps])
        return np.concatenate(obs), np.concatenate(logprobs)

    def metrics(self, update: int) -> dict[str, float]:
        metrics = {"anchor/count": len(self.anchors), "anchor/mb": self.nbytes / 2**20}
        if self.anchors:
            metrics["anchor/best_return"] = self.anchors[0].episode_return
            metrics["anchor/mean_age_updates"] = float(np.mean([update - a.admitted_update for a in self.anchors]))
            metrics["anchor/steps"] = sum(a.length for a in self.anchors)
        return metrics

    # -- checkpointing -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchors": [vars(a) for a in self.anchors],
            "rng": self.rng.bit_generator.state,
            "episodes_seen": self._episodes_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors = [Anchor(**a) for a in state["anchors"]]
        self.rng.bit_generator.state = state["rng"]
        self._episodes_seen = state["episodes_seen"]
        self._sample_index = None
        self.reset_open_episodes()
