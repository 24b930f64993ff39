"""APO = PPO + this module: the anchor buffer, the anchor KL, and ``Anchoring``, the loop's hooks
(``mario_apo.hooks``) for APO.

The buffer keeps the K highest-return episodes seen so far (the *anchors*). For
every step of an anchor it holds the observation and the behaviour policy's
log-probabilities *at collection time* (``p_best``, never recomputed), plus the
action taken, so an anchored Mario episode can be replayed on the emulator.

Through the hooks: ``start_update`` sets this update's beta from the schedule;
``record`` records every env's steps of the rollout (``mario_apo.recorder``: whole
episodes across rollout boundaries, frame stacks as their newest frame) and offers each
episode that ended; ``loss``, once per PPO minibatch, is ``beta * KL(p_best || pi_theta)``
(or, with ``--anchor-target taken``, ``beta * -log pi(a_t|s_t)``) on a fresh sample of
anchor states (0 with beta 0 or no anchors yet, so APO is then exactly PPO); the rest is
bookkeeping: metrics, checkpoint state, anchors.json and the best anchor's replay video
(``mario_apo.anchor_files``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mario_apo.anchor_files import write_anchor_index, write_best_anchor_video
from mario_apo.config import AnchorConfig, RunConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.hooks import NoHooks, ObsTransform
from mario_apo.logger import RunLogger
from mario_apo.ppo import Rollout
from mario_apo.recorder import Chunk, EpisodeRecorder, joined, restack
from mario_apo.tasks import Task
from models.actor_critic import model_device


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
    sticky_seed: int | None = None
    """With ``actions``, reproduces a sticky-action episode on the emulator (None: deterministic env)."""
    layout_seed: int | None = None
    """With ``actions``, reproduces a MiniGrid episode (None on other tasks)."""
    discounted_return: float = 0.0
    """Sum of gamma^t r_t (``--anchor-rank discounted``)."""
    finder: int | None = None
    """In a population with shared anchors, the learner that found it (None: a single run's own episode)."""
    order: int = 0
    """When it reached the ranker (a run's buffer, or a population's hub): ``--anchor-ties`` compares this."""

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.logprobs.nbytes + self.actions.nbytes


class AnchorBuffer:
    """Top-K episodes by rank (``--anchor-rank``, ties by ``--anchor-ties``), capped in MB, sampled
    uniformly over their states."""

    def __init__(
        self,
        cfg: AnchorConfig,
        num_envs: int,
        frame_stack: int | None,
        rng: np.random.Generator | None,
        gamma: float | None,
    ):
        """
        :param cfg: K, admission rule, memory cap
        :param num_envs: envs recorded in parallel
        :param frame_stack: frames per observation for image tasks (store the newest only), None for vectors
        :param rng: the sampler's own generator (torch's RNG is left untouched, so
            training with beta = 0 stays bit-identical to PPO)
        :param gamma: the run's discount (``--anchor-rank discounted`` ranks by sum of gamma^t r_t); None for
            a buffer that only ranks what others recorded (a population's hub)
        """
        self.cfg = cfg
        self.frame_stack = frame_stack
        self.gamma = gamma
        self.anchors: list[Anchor] = []
        self.rng = rng
        self.recorder = EpisodeRecorder(num_envs, frame_stack)
        self._episodes_seen = 0
        self._last_order = 0  # the order stamped on the last episode offered to the ranking
        self._sample_index: np.ndarray | None = None

    # -- recording -----------------------------------------------------------------

    def record_rollout(
        self,
        obs: np.ndarray,
        logprobs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        episodes: list[EpisodeEnd],
        update: int,
    ) -> list[Anchor]:
        """Record one rollout of every env; offer each episode that ended in it. Returns those admitted.

        :param obs: (steps, envs, ...) observations the actions were taken from
        :param logprobs: (steps, envs, num_actions) behaviour log-probabilities
        :param actions: (steps, envs) actions taken
        :param rewards: (steps, envs) float64 rewards as the env returned them (no normalisation, no bootstrap)
        :param episodes: the episodes that ended in the rollout, in the order they ended
        """
        admitted = []

        def close(chunks: list[Chunk], episode: EpisodeEnd) -> None:
            anchor = self._close(chunks, episode, update)
            if anchor is not None:
                admitted.append(anchor)

        self.recorder.record_rollout(obs, logprobs, actions, rewards, episodes, close)
        return admitted

    def reset_open_episodes(self) -> None:
        """Drop partly recorded episodes (the envs were reset, e.g. on resume)."""
        self.recorder.reset()

    def rank_key(self, value: float, order: int) -> tuple[float, int]:
        """Sort key, best first: the higher rank value, then the tie rule (older: the smaller order first,
        so the first found survives eviction; newer: the larger order first, so the newest does)."""
        return -value, order if self.cfg.anchor_ties == "older" else -order

    def _rank_value(self, episode_return: float, discounted_return: float) -> float:
        return discounted_return if self.cfg.anchor_rank == "discounted" else episode_return

    def key(self, anchor: Anchor) -> tuple[float, int]:
        return self.rank_key(self._rank_value(anchor.episode_return, anchor.discounted_return), anchor.order)

    def admit(self, anchor: Anchor) -> bool:
        """Rank an episode arriving now (newer than every anchor) among the anchors; whether it stays."""
        self._last_order += 1
        anchor.order = self._last_order
        self.anchors.append(anchor)
        self.anchors.sort(key=self.key)
        del self.anchors[self.cfg.anchors :]
        while self.nbytes > self.cfg.anchor_max_mb * 2**20 and len(self.anchors) > 1:
            self.anchors.pop()
        self._sample_index = None
        return anchor in self.anchors

    def replace(self, anchors: list[Anchor]) -> None:
        """Take ``anchors`` (ranked, e.g. a population hub's top K) as the anchors."""
        self.anchors = list(anchors)
        self._last_order = max([self._last_order] + [a.order for a in anchors])
        self._sample_index = None

    def _discounted_return(self, chunks: list[Chunk]) -> float:
        """The episode's sum of gamma^t r_t, step by step in float64 (the order of the operations is part of
        the ranking: anchors.json and resumed runs stay identical)."""
        discounted, discount = 0.0, 1.0
        for reward in np.concatenate([chunk[3] for chunk in chunks]).tolist():
            discounted += discount * reward
            discount *= self.gamma
        return discounted

    def _close(self, chunks: list[Chunk], episode: EpisodeEnd, update: int) -> Anchor | None:
        self._episodes_seen += 1
        if self.cfg.anchor_admit == "success" and not episode.success:
            return None
        discounted_return = self._discounted_return(chunks)
        value = self._rank_value(float(episode.episode_return), discounted_return)
        if len(self.anchors) >= self.cfg.anchors and self.rank_key(value, self._last_order + 1) > self.key(
            self.anchors[-1]
        ):
            return None  # it would rank below the worst anchor (arrays are built only for episodes that enter)
        frames, logprobs, actions, _ = joined(chunks)
        anchor = Anchor(
            frames=frames,
            logprobs=logprobs.astype(np.float32),
            actions=actions.astype(np.int64),
            episode_return=float(episode.episode_return),
            success=bool(episode.success),
            max_x=int(episode.max_x),
            sticky_seed=episode.sticky_seed,
            layout_seed=episode.layout_seed,
            discounted_return=discounted_return,
            episode_id=self._episodes_seen,
            admitted_update=update,
        )
        return anchor if self.admit(anchor) else None

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.anchors)

    @property
    def best(self) -> Anchor | None:
        return self.anchors[0] if self.anchors else None

    def stacked_obs(self, anchor: Anchor, steps: np.ndarray) -> np.ndarray:
        """Observations at ``steps`` of an anchor, re-stacked from stored frames."""
        return restack(anchor.frames, steps, self.frame_stack)

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``batch_size`` states drawn uniformly over all anchor steps: (obs, p_best log-probs, actions taken)."""
        if self._sample_index is None:
            self._sample_index = np.concatenate(
                [np.stack([np.full(a.length, k), np.arange(a.length)], 1) for k, a in enumerate(self.anchors)]
            )
        picks = self._sample_index[self.rng.integers(len(self._sample_index), size=batch_size)]
        obs, logprobs, actions = [], [], []
        for k in np.unique(picks[:, 0]):
            steps = picks[picks[:, 0] == k, 1]
            obs.append(self.stacked_obs(self.anchors[k], steps))
            logprobs.append(self.anchors[k].logprobs[steps])
            actions.append(self.anchors[k].actions[steps])
        return np.concatenate(obs), np.concatenate(logprobs), np.concatenate(actions)

    def metrics(self, update: int) -> dict[str, float]:
        metrics = {"anchor/count": len(self.anchors), "anchor/mb": self.nbytes / 2**20}
        if self.anchors:
            logprobs = np.concatenate([a.logprobs for a in self.anchors])
            metrics["anchor/best_return"] = self.anchors[0].episode_return
            metrics["anchor/mean_age_updates"] = float(np.mean([update - a.admitted_update for a in self.anchors]))
            metrics["anchor/steps"] = sum(a.length for a in self.anchors)
            metrics["anchor/mean_length"] = metrics["anchor/steps"] / len(self.anchors)
            metrics["anchor/success_count"] = sum(a.success for a in self.anchors)
            # the anchors' own entropy: near ln(actions) means they are near-uniform early episodes, and
            # the KL term then acts as an entropy regulariser rather than an anchor
            metrics["anchor/p_best_entropy"] = float(-(np.exp(logprobs) * logprobs).sum(-1).mean())
        return metrics

    # -- checkpointing -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "anchors": [vars(a) for a in self.anchors],
            "rng": self.rng.bit_generator.state,
            "episodes_seen": self._episodes_seen,
            "last_order": self._last_order,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors = anchors_from_state(state)
        self.rng.bit_generator.state = state["rng"]
        self._episodes_seen = state["episodes_seen"]
        # before populations, the order was the episode id
        self._last_order = state.get("last_order", state["episodes_seen"])
        self._sample_index = None
        self.reset_open_episodes()


def anchors_from_state(state: dict[str, Any]) -> list[Anchor]:
    """The anchors of a checkpoint's anchor state (which stores arrays as tensors: mario_apo.checkpoint)."""
    anchors = []
    for fields in state["anchors"]:
        fields = {k: np.asarray(v) if torch.is_tensor(v) else v for k, v in fields.items()}
        fields.setdefault("order", fields["episode_id"])  # checkpoints before populations
        anchors.append(Anchor(**fields))
    return anchors


class Anchoring(NoHooks):
    """APO: the anchor buffer, the beta schedule and the anchor KL term."""

    def __init__(self, cfg: RunConfig, task: Task, rng: np.random.Generator, obs_transform: ObsTransform):
        """
        :param rng: the anchor sampler's generator
        :param obs_transform: raw observations -> what the policy sees (the run's current normalisation)
        """
        self.cfg = cfg.anchor
        self.obs_transform = obs_transform
        self.task, self.env_cfg, self.video_every = task, cfg.env, cfg.log.video_every
        frame_stack = cfg.env.frame_stack if task.is_mario else None
        self.buffer = AnchorBuffer(cfg.anchor, cfg.ppo.num_envs, frame_stack, rng, cfg.ppo.gamma)
        self.beta = self.cfg.beta
        self._admitted: list[Anchor] = []  # in this update
        self._last_video = (None, -(10**9))  # episode id and update of the last best-anchor video

    def start_update(self, run_fraction: float) -> None:
        if self.cfg.beta_schedule == "linear-decay":
            self.beta = self.cfg.beta * (1.0 - run_fraction)
        elif self.cfg.beta_schedule == "linear-warmup":
            self.beta = self.cfg.beta * run_fraction
        else:
            self.beta = self.cfg.beta

    def record(self, rollout: Rollout, update: int) -> None:
        self._admitted = self._record_rollout(rollout, update)

    def _record_rollout(self, rollout: Rollout, update: int) -> list[Anchor]:
        """The buffer records the rollout; the episodes it admitted."""
        return self.buffer.record_rollout(
            rollout.raw_obs.cpu().numpy(),
            rollout.behaviour_logprobs.cpu().numpy(),
            rollout.actions.cpu().numpy(),
            rollout.env_rewards.cpu().numpy(),
            rollout.episodes,
            update,
        )

    def loss(self, model: nn.Module, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        if not self.buffer or self.beta == 0:
            return 0.0  # nothing computed: the update stays bit-for-bit PPO's
        anchor_obs, best_logprobs, actions = self.buffer.sample(self.cfg.anchor_batch)
        device = model_device(model)
        logits, _ = model(torch.from_numpy(self.obs_transform(anchor_obs)).to(device))
        if self.cfg.anchor_target == "taken":  # KL(one-hot || pi) is the cross-entropy -log pi(a_t|s_t)
            terms["anchor/kl"] = F.cross_entropy(logits, torch.from_numpy(actions).to(device))
        else:
            terms["anchor/kl"] = anchor_kl(torch.from_numpy(best_logprobs).to(device), logits, self.cfg.anchor_kl)
        return self.beta * terms["anchor/kl"]

    def metrics(self, update: int) -> dict[str, float]:
        return {"anchor/beta": self.beta, "anchor/admitted": len(self._admitted), **self.buffer.metrics(update)}

    def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.buffer.load_state_dict(state)

    def save_files(self, run_dir: Path) -> None:
        write_anchor_index(run_dir, self.task, self.env_cfg, self.buffer.anchors)

    def log_media(self, run_dir: Path, logger: RunLogger, global_step: int, update: int) -> None:
        """Mario: replay a new best anchor on a fresh emulator (verified step by step) and log its video."""
        best = self.buffer.best
        if not (self.task.is_mario and self.video_every and best is not None):
            return
        last_id, last_update = self._last_video
        if (best.finder, best.episode_id) == last_id or update - last_update < self.video_every:
            return
        self._last_video = ((best.finder, best.episode_id), update)
        path = write_best_anchor_video(run_dir, self.task, self.env_cfg, best)
        if path is not None:
            logger.log_video(global_step, "anchor/best_video", path)


class SharedAnchoring(Anchoring):
    """APO in a population with ``--share-anchors``: the buffer is this learner's copy of the population
    hub's top K (``mario_apo.population``). After each rollout the learner offers the hub the episodes
    its copy admits and, when the hub's top K changed, takes the new one. ``p_best`` stays the finder's
    recorded distribution: an anchor found by another learner is not re-evaluated by this one."""

    def __init__(self, cfg: RunConfig, task: Task, rng: np.random.Generator, obs_transform: ObsTransform, hub: Hub):
        super().__init__(cfg, task, rng, obs_transform)
        self.hub = hub
        self.version = -1  # of the hub's top K this copy holds (-1: none yet)
        self._accepted = 0

    def record(self, rollout: Rollout, update: int) -> None:
        offers = self._record_rollout(rollout, update)
        for anchor in offers:
            anchor.finder = self.hub.learner
        # The copy ranks as the hub does, so an offer the hub rejects is one the copy rejected too, unless
        # another learner changed the hub meanwhile; then the version differs and the copy is replaced.
        self.version, anchors, self._accepted = self.hub.sync(offers, self.version)
        if anchors is not None:
            self.buffer.replace(anchors)

    def metrics(self, update: int) -> dict[str, float]:
        anchors = self.buffer.anchors
        foreign = sum(a.length for a in anchors if a.finder != self.hub.learner)
        return {
            **super().metrics(update),
            "anchor/admitted": self._accepted,
            "anchor/foreign_fraction": foreign / max(1, sum(a.length for a in anchors)),
            "anchor/hub_version": self.version,
        }


class Hub(Protocol):
    """A learner's line to its population's anchor hub."""

    learner: int
    """This learner's index in the population."""

    def sync(self, offers: list[Anchor], version: int) -> tuple[int, list[Anchor] | None, int]:
        """Offer episodes; get the hub's version, its top K if newer than ``version`` (else None), and
        how many of the offers it took."""
