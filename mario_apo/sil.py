"""PPO + Self-Imitation Learning (Oh, Guo, Singh, Lee, ICML 2018): the published control for "learn from
your own good episodes". SIL imitates a past action only where the return that followed it beat the
current value estimate:

    L_sil = E_{(s, a, R) in D} [ -log pi(a|s) (R - V(s))+  +  beta_sil * 1/2 ((R - V(s))+)^2 ]

over a prioritised replay D of past episodes' steps, R the discounted return-to-go of the rewards the
learner saw (normalised where ``--norm-reward`` is on, a truncated episode's bootstrap included).

It enters the loop through the same hooks as APO (``mario_apo.hooks``): ``record`` keeps every finished
episode, ``loss`` adds ``sil_coef * L_sil`` on a fresh replay minibatch to each of the first
``sil_updates`` PPO minibatch steps of an update (the published code's M SIL updates per iteration, each
here sharing a gradient step with a PPO minibatch, so the loop learns nothing new), ``metrics`` and the
checkpoint state. With ``sil_coef`` 0 nothing is computed: the run is bit-for-bit PPO.

Settings from the published code (junhyukoh/self-imitation-learning, ``baselines/common/self_imitation.py``,
its A2C+SIL defaults): 4 SIL minibatches per update of 512 samples, value weight 0.01, (R - V) clipped to
[0, 1] (the value term is then a Huber loss, as the code's clipped gradient), -log pi clipped at 5 in value
(not in gradient), the sums divided by the number of samples with R > V but at least 64, a prioritised
replay (alpha 0.6, importance weights with beta 0.1, new steps at the highest priority so far). Left out:
the code's entropy term (not in the paper's loss). The replay is capped in MB (the paper's 10^5 steps of
Atari frames would be 2.8 GB); the oldest episodes go first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mario_apo.config import RunConfig, SILConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.hooks import NoHooks, ObsTransform
from mario_apo.ppo import Rollout
from mario_apo.recorder import Chunk, EpisodeRecorder, joined, restack
from mario_apo.tasks import Task
from models.actor_critic import model_device

ADVANTAGE_CLIP = 1.0
"""(R - V)+ is clipped to [0, 1] in both terms (the published code's ``clip``)."""
MAX_NLOGP = 5.0
"""-log pi(a|s) is clipped at 5 in value (the gradient is not), so one unlikely action cannot dominate."""
MIN_BATCH = 64
"""The sums are divided by the number of samples with R > V, but by no fewer than this."""
PRIORITY_FLOOR = 1e-6
"""A step whose (R - V)+ fell to 0 keeps this priority, so it can be drawn again once V has moved."""


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """R_t = sum_k gamma^(k - t) r_k to the episode's end, per step (float64)."""
    returns = np.empty(len(rewards))
    following = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        following = float(rewards[t]) + gamma * following
        returns[t] = following
    return returns


def sil_loss(
    logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    """SIL's two terms on one replay minibatch (importance ``weights``); ``advantage`` is each sample's
    clipped (R - V)+, the replay's new priority (no gradient)."""
    valid = (returns > values).float()
    count = valid.sum().clamp(min=MIN_BATCH)
    advantage = (returns - values).clamp(0.0, ADVANTAGE_CLIP)
    nlogp = -F.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
    clipped_nlogp = nlogp - (nlogp - MAX_NLOGP).clamp(min=0.0).detach()
    policy = (weights * advantage.detach() * clipped_nlogp).sum() / count
    huber = F.huber_loss(values, returns, reduction="none", delta=ADVANTAGE_CLIP)
    value = (weights * valid * huber).sum() / count
    return {"policy": policy, "value": value, "advantage": advantage.detach(), "valid": valid.mean()}


@dataclass(eq=False)
class ReplayEpisode:
    frames: np.ndarray
    """(length, ...) observations, or their newest frame when frame-stacked."""
    actions: np.ndarray
    returns: np.ndarray
    """(length,) float64 discounted returns-to-go."""
    priorities: np.ndarray
    """(length,) float64 sampling priorities: the last (R - V)+ seen, or the highest so far when new."""

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.actions.nbytes + self.returns.nbytes + self.priorities.nbytes


class Replay:
    """Every finished episode's steps, the oldest evicted past the MB cap, drawn by priority."""

    def __init__(self, cfg: SILConfig, num_envs: int, frame_stack: int | None, rng: np.random.Generator, gamma: float):
        self.cfg, self.gamma, self.rng = cfg, gamma, rng
        self.recorder = EpisodeRecorder(num_envs, frame_stack)
        self.episodes: list[ReplayEpisode] = []
        self.max_priority = 1.0

    def __len__(self) -> int:
        return sum(len(e.actions) for e in self.episodes)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.episodes)

    def record_rollout(self, obs, logprobs, actions, rewards, episodes: list[EpisodeEnd]) -> int:
        """Record one rollout (as ``EpisodeRecorder``); keep each episode that ended. How many."""
        ended = []
        self.recorder.record_rollout(obs, logprobs, actions, rewards, episodes, lambda chunks, _: ended.append(chunks))
        for chunks in ended:
            self._keep(chunks)
        return len(ended)

    def _keep(self, chunks: list[Chunk]) -> None:
        frames, _, actions, rewards = joined(chunks)
        priorities = np.full(len(actions), self.max_priority)
        self.episodes.append(
            ReplayEpisode(frames, actions.astype(np.int64), returns_to_go(rewards, self.gamma), priorities)
        )
        while self.nbytes > self.cfg.sil_max_mb * 2**20 and len(self.episodes) > 1:
            self.episodes.pop(0)

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``batch_size`` steps drawn with probability proportional to priority^alpha: their observations,
        actions, returns-to-go, importance weights (normalised by the largest possible) and indices."""
        priorities = np.concatenate([e.priorities for e in self.episodes]) ** self.cfg.sil_alpha
        probabilities = priorities / priorities.sum()
        picks = self.rng.choice(len(probabilities), size=batch_size, p=probabilities)
        weights = (len(probabilities) * probabilities[picks]) ** -self.cfg.sil_beta
        weights /= (len(probabilities) * probabilities.min()) ** -self.cfg.sil_beta
        starts = np.cumsum([0] + [len(e.actions) for e in self.episodes])
        episode_of = np.searchsorted(starts, picks, side="right") - 1
        steps = picks - starts[episode_of]
        obs = np.stack(
            [
                restack(self.episodes[k].frames, np.array([t]), self.recorder.frame_stack)[0]
                for k, t in zip(episode_of, steps, strict=True)
            ]
        )
        actions = np.array([self.episodes[k].actions[t] for k, t in zip(episode_of, steps, strict=True)])
        returns = np.array([self.episodes[k].returns[t] for k, t in zip(episode_of, steps, strict=True)])
        return obs, actions, returns, weights, np.stack([episode_of, steps], 1)

    def update_priorities(self, index: np.ndarray, advantages: np.ndarray) -> None:
        priorities = np.maximum(advantages, PRIORITY_FLOOR)
        for (k, t), priority in zip(index, priorities, strict=True):
            self.episodes[k].priorities[t] = priority
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict[str, Any]:
        return {
            "episodes": [vars(e) for e in self.episodes],
            "rng": self.rng.bit_generator.state,
            "max_priority": self.max_priority,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes = [ReplayEpisode(**{k: np.asarray(v) for k, v in e.items()}) for e in state["episodes"]]
        self.rng.bit_generator.state = state["rng"]
        self.max_priority = float(state["max_priority"])
        self.recorder.reset()


class SelfImitation(NoHooks):
    """PPO + SIL: the replay, and SIL's loss on the first ``sil_updates`` minibatch steps of each update."""

    def __init__(self, cfg: RunConfig, task: Task, rng: np.random.Generator, obs_transform: ObsTransform):
        self.cfg, self.obs_transform = cfg.sil, obs_transform
        frame_stack = cfg.env.frame_stack if task.is_mario else None
        self.replay = Replay(cfg.sil, cfg.ppo.num_envs, frame_stack, rng, cfg.ppo.gamma)
        self._steps_left = 0
        self._added = 0
        self._sums: dict[str, float] = {}

    def start_update(self, run_fraction: float) -> None:
        self._steps_left, self._sums = self.cfg.sil_updates, {}

    def record(self, rollout: Rollout, update: int) -> None:
        self._added = self.replay.record_rollout(
            rollout.raw_obs.cpu().numpy(),
            rollout.behaviour_logprobs.cpu().numpy(),
            rollout.actions.cpu().numpy(),
            rollout.rewards.cpu().numpy(),
            rollout.episodes,
        )

    def loss(self, model: nn.Module, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        if self.cfg.sil_coef == 0 or self._steps_left == 0 or not self.replay.episodes:
            return 0.0  # nothing computed: the update stays bit-for-bit PPO's
        self._steps_left -= 1
        obs, actions, returns, weights, index = self.replay.sample(self.cfg.sil_batch)
        device = model_device(model)
        logits, values = model(torch.from_numpy(self.obs_transform(obs)).to(device))
        sil = sil_loss(
            logits,
            values,
            torch.from_numpy(actions).to(device),
            torch.from_numpy(returns).float().to(device),
            torch.from_numpy(weights).float().to(device),
        )
        self.replay.update_priorities(index, sil["advantage"].cpu().numpy().astype(np.float64))
        for name in ("policy", "value", "valid"):
            self._sums[name] = self._sums.get(name, 0.0) + sil[name].item()
        self._sums["steps"] = self._sums.get("steps", 0) + 1
        return self.cfg.sil_coef * (sil["policy"] + self.cfg.sil_value_coef * sil["value"])

    def metrics(self, update: int) -> dict[str, float]:
        metrics = {
            "sil/episodes_added": self._added,
            "sil/steps": len(self.replay),
            "sil/mb": self.replay.nbytes / 2**20,
        }
        steps = self._sums.get("steps", 0)
        if steps:
            metrics.update({f"sil/{name}": self._sums[name] / steps for name in ("policy", "value", "valid")})
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return self.replay.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.replay.load_state_dict(state)
