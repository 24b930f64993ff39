"""Observation and reward normalisation with running statistics, as Stable-Baselines3's ``VecNormalize``.

rl-baselines3-zoo trains MountainCar with ``normalize: true``: observations are
standardised by a running mean and variance (then clipped to +-10), and rewards are
divided by the running standard deviation of the discounted return (then clipped).
A PPO without it is not the zoo's PPO, so the baseline would be handicapped.

The statistics are updated from the observations and rewards of training rollouts
only, saved in checkpoints, and applied (without updating) wherever the policy sees an
observation: evaluation, the truncation bootstrap, and APO's anchor states, which are
stored raw and normalised with the current statistics when sampled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLIP = 10.0
EPSILON = 1e-8  # in the denominator of the standardisation
PSEUDO_COUNT = 1e-4  # the statistics' starting weight (SB3's), so the first update is well defined


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update)."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = PSEUDO_COUNT

    def update(self, batch: np.ndarray) -> None:
        batch_mean, batch_var, batch_count = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var, self.count = m2 / total, total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = np.asarray(state["mean"]), np.asarray(state["var"]), float(state["count"])


class Normalizer:
    """The running statistics of one run (either part may be off)."""

    def __init__(self, obs_shape: tuple[int, ...], num_envs: int, gamma: float, norm_obs: bool, norm_reward: bool):
        self.norm_obs, self.norm_reward, self.gamma = norm_obs, norm_reward, gamma
        self.obs_rms = RunningMeanStd(obs_shape)
        self.return_rms = RunningMeanStd()
        self._returns = np.zeros(num_envs)  # each env's discounted return so far, for return_rms

    def observe(self, obs: np.ndarray) -> None:
        """Update the observation statistics with a batch the envs returned (training rollouts only)."""
        if self.norm_obs:
            self.obs_rms.update(obs)

    def obs(self, obs: np.ndarray) -> np.ndarray:
        """Observations as the policy sees them (the same array when observation normalisation is off)."""
        if not self.norm_obs:
            return obs
        return np.clip((obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + EPSILON), -CLIP, CLIP).astype(np.float32)

    def reward(self, rewards: np.ndarray, ended: np.ndarray, envs: slice) -> np.ndarray:
        """One step's rewards of the envs ``envs`` as the learner sees them; updates the return statistics."""
        if not self.norm_reward:
            return rewards
        self._returns[envs] = self._returns[envs] * self.gamma + rewards
        self.return_rms.update(self._returns[envs])
        self._returns[envs][ended] = 0.0
        return np.clip(rewards / np.sqrt(self.return_rms.var + EPSILON), -CLIP, CLIP)

    def state_dict(self) -> dict[str, Any]:
        return {"obs": self.obs_rms.state_dict(), "return": self.return_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:  # checkpoints from before normalisation existed have none
            self.obs_rms.load_state_dict(state["obs"])
            self.return_rms.load_state_dict(state["return"])
