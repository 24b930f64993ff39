"""The training loop, PPO and APO alike, in named phases.

``train()`` reads top to bottom: schedules -> ``collect_rollout`` -> GAE and
``update_policy`` -> ``log_update`` -> ``maybe_checkpoint``. ``Trainer`` holds the
run's parts (envs, model, optimizer, rollout storage, logger, counters).

APO and SIL enter only through ``trainer.hooks`` (``mario_apo.hooks``; ``make_hooks``
picks ``mario_apo.anchors`` or ``mario_apo.sil``): its ``start_update`` in
``apply_schedules``, its ``record`` after each rollout, its ``loss`` inside
``ppo_update``, and its metrics, checkpoint state and files. For PPO it is a
``NoHooks`` whose hooks do nothing.
"""

from __future__ import annotations

import collections
import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from mario_apo.anchors import Anchoring, Hub, SharedAnchoring
from mario_apo.checkpoint import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from mario_apo.config import RunConfig
from mario_apo.device import resolve_device
from mario_apo.episodes import RECENT_EPISODES, EpisodeEnd
from mario_apo.errors import CheckpointError, NonFiniteLoss, TrainingError, first_line
from mario_apo.evaluate import evaluate, evaluate_final_policy
from mario_apo.hooks import NoHooks, ObsTransform
from mario_apo.logger import RunLogger
from mario_apo.normalize import Normalizer
from mario_apo.ppo import Rollout, compute_gae, ppo_update
from mario_apo.runs import RunFiles, read_run_record, write_json
from mario_apo.seeding import SeedStreams
from mario_apo.sil import SelfImitation
from mario_apo.stopping import StopFlag, StopRequest
from mario_apo.tasks import EnvGroups, Task, parse_task
from models.actor_critic import act, make_model


class RecentEpisode(NamedTuple):
    """What the recent-episodes window keeps of an episode (a checkpoint stores it as a plain tuple)."""

    episode_return: float
    success: bool
    max_x: int


@dataclass
class TrainState:
    """The counters a checkpoint carries, so that a resumed run continues where it stopped."""

    global_step: int = 0
    """Agent steps over all envs so far."""
    update: int = 0
    """The last finished PPO update."""
    episodes_done: int = 0
    recent: collections.deque[RecentEpisode] = field(default_factory=lambda: collections.deque(maxlen=RECENT_EPISODES))
    """The last ``RECENT_EPISODES`` finished episodes."""
    budget_evals: dict[str, dict] = field(default_factory=dict)
    """The final-policy evaluations run at ``--final-eval-at`` budgets so far, by budget."""

    def window_metrics(self) -> dict[str, float]:
        """``charts/success_rate`` and the window's mean return and max x (empty before the first episode)."""
        if not self.recent:
            return {}
        return {
            "charts/success_rate": float(np.mean([e.success for e in self.recent])),
            "charts/return_mean_100": float(np.mean([e.episode_return for e in self.recent])),
            "charts/max_x_mean_100": float(np.mean([e.max_x for e in self.recent])),
        }


class StageTimer:
    """Seconds per stage of training (``with timer("env"):``), for the ``perf/*_fraction`` metrics."""

    def __init__(self):
        self.seconds: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def fractions(self) -> dict[str, float]:
        total = self.total
        return {f"perf/{stage}_fraction": seconds / total for stage, seconds in self.seconds.items()}


def train(
    cfg: RunConfig, run_dir: Path, resume: bool = False, stop: StopFlag | None = None, hub: Hub | None = None
) -> dict[str, Any]:
    """Train one run in ``run_dir`` (new, or resumed from its checkpoint); return the final summary.

    :param stop: what asks the run to stop early (default: the first SIGINT or SIGTERM)
    :param hub: a population's anchor hub (``--share-anchors``), for APO
    """
    trainer = Trainer(cfg, run_dir, resume, hub)
    if resume:  # the run is unfinished again; only now that it has everything it needs to go on
        trainer.files.summary.unlink(missing_ok=True)
    ppo, state = cfg.ppo, trainer.state
    progress = tqdm(
        total=ppo.num_updates * ppo.batch_size,
        initial=state.global_step,
        unit="step",
        desc=f"{cfg.algo} {trainer.task.name}",
        disable=not cfg.log.progress,
        dynamic_ncols=True,
    )
    try:
        with stop or StopRequest() as stop:
            for update in range(state.update + 1, ppo.num_updates + 1):
                state.update = update
                update_start = time.perf_counter()
                clip_coef = trainer.apply_schedules(run_fraction=(update - 1) / ppo.num_updates)

                trainer.collect_rollout()
                # APO, SIL: record the rollout's episodes (a population: sync the hub); the stage keeps APO's name
                with trainer.timer("anchors"):
                    trainer.hooks.record(trainer.rollout, update)
                metrics = trainer.update_policy(clip_coef)

                metrics = trainer.log_update(metrics, clip_coef, seconds=time.perf_counter() - update_start)
                show_progress(progress, ppo.batch_size, metrics)
                trainer.evaluate_at_budgets(stop=lambda: stop.requested)
                trainer.maybe_checkpoint(force=stop.requested)
                if stop.requested:
                    break
            if state.update == ppo.num_updates and not stop.requested:
                progress.close()
                trainer.evaluate_final_policy(stop=lambda: stop.requested)
    except BaseException:
        trainer.close(failed=True)
        raise
    else:
        trainer.close()
    finally:
        progress.close()
    return trainer.summary()


def make_hooks(
    cfg: RunConfig, task: Task, rng: np.random.Generator, obs_transform: ObsTransform, hub: Hub | None = None
) -> NoHooks:
    """The run's hooks: APO's ``Anchoring`` (``SharedAnchoring`` with a population's hub), SIL's
    ``SelfImitation``, or PPO's ``NoHooks``.

    :param rng: their own generator (torch's is left alone, so a weight of 0 stays bit-for-bit PPO)
    """
    if cfg.algo == "sil":
        return SelfImitation(cfg, task, rng, obs_transform)
    if cfg.algo != "apo":
        return NoHooks()
    if hub is None:
        return Anchoring(cfg, task, rng, obs_transform)
    return SharedAnchoring(cfg, task, rng, obs_transform, hub)


def show_progress(progress: tqdm, steps: int, metrics: dict[str, float]) -> None:
    progress.update(steps)
    postfix = {"SPS": f"{metrics['charts/SPS']:.0f}"}
    if "charts/success_rate" in metrics:
        postfix["ret100"] = f"{metrics['charts/return_mean_100']:.2f}"
        postfix["success"] = f"{metrics['charts/success_rate']:.2f}"
    progress.set_postfix(postfix)


def seed_everything(streams: SeedStreams, torch_threads: int) -> None:
    random.seed(streams.python)
    np.random.seed(streams.numpy)
    torch.manual_seed(streams.torch)
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)


class Trainer:
    """One run's parts, and the phases of an update as methods."""

    def __init__(self, cfg: RunConfig, run_dir: Path, resume: bool, hub: Hub | None = None):
        self.cfg, self.run_dir, self.files = cfg, run_dir, RunFiles(run_dir)
        self.task = parse_task(cfg.task)
        self.frames_per_step = cfg.env.frame_skip if self.task.is_mario else 1  # NES frames per agent step
        ppo = cfg.ppo
        self.streams = SeedStreams(cfg.seed)
        seed_everything(self.streams, cfg.torch_threads)
        checkpoint = load_checkpoint(self.files.checkpoint, self.task.name) if resume else None

        self.device = resolve_device(cfg.device)
        self.envs = EnvGroups(self.task, cfg.env, ppo.num_envs)
        try:
            obs_space, action_space = self.envs.single_observation_space, self.envs.single_action_space
            self.model = make_model(obs_space, action_space).to(self.device)
            self.normalizer = Normalizer(obs_space.shape, ppo.num_envs, ppo.gamma, ppo.norm_obs, ppo.norm_reward)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=ppo.learning_rate, eps=1e-5)
            self.hooks = make_hooks(cfg, self.task, self.streams.anchors(), self.normalizer.obs, hub)
            self.state = TrainState()
            if checkpoint is not None:
                self._restore(checkpoint)

            self.logger = RunLogger(run_dir, read_run_record(run_dir), self.state.global_step if resume else None)
            obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
            self.rollout = Rollout.allocate(
                ppo.num_steps,
                ppo.num_envs,
                obs_space.shape,
                obs_dtype,
                action_space.n,
                norm_obs=ppo.norm_obs,
                device=self.device,
            )
            self.timer = StageTimer()
            self.final_eval: dict | None = None
            # Resumed envs start fresh episodes (emulator state is not checkpointed) from fresh
            # seeds, so a resumed run does not replay its first episodes.
            self.next_obs = self.envs.reset(self.streams.env_seeds(ppo.num_envs, start_update=self.state.update))
            for obs in self.next_obs:
                self.normalizer.observe(obs)
        except BaseException:
            self.envs.close(terminate=True)
            raise

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint in {self.run_dir} does not fit this model: {first_line(err)}") from None
        self.hooks.load_state_dict(checkpoint["anchors"])
        self.normalizer.load_state_dict(checkpoint.get("normalizer"))
        set_rng_states(checkpoint["rng"])
        self.state = TrainState(checkpoint["global_step"], checkpoint["update"], checkpoint["episodes_done"])
        self.state.recent.extend(RecentEpisode(*episode) for episode in checkpoint["recent_episodes"])
        self.state.budget_evals = checkpoint.get("budget_evals", {})

    # ---- one update ---------------------------------------------------------------------

    def apply_schedules(self, run_fraction: float) -> float:
        """Set this update's learning rate and APO's beta; return the clip epsilon."""
        ppo = self.cfg.ppo
        if ppo.anneal_lr:
            self.optimizer.param_groups[0]["lr"] = ppo.learning_rate * (1.0 - run_fraction)
        self.hooks.start_update(run_fraction)
        return ppo.clip_coef * (1.0 - run_fraction) if ppo.anneal_clip else ppo.clip_coef

    def collect_rollout(self) -> None:
        """Fill the rollout storage: each env group steps while the policy acts for the other."""
        self.rollout.episodes = []
        for group in self.envs.groups:
            self._act(0, group)
        for step in range(self.cfg.ppo.num_steps):
            for group in self.envs.groups:
                self._receive(step, group)
                if step + 1 < self.cfg.ppo.num_steps:
                    self._act(step + 1, group)

    def _act(self, step: int, group: int) -> None:
        """Policy forward for one env group at ``step``; its envs start stepping."""
        with self.timer("inference"):
            envs_in_group, rollout = self.envs.slices[group], self.rollout
            rollout.obs[step, envs_in_group] = torch.from_numpy(self.normalizer.obs(self.next_obs[group]))
            if self.normalizer.norm_obs:  # APO's anchors keep what the env returned
                rollout.raw_obs[step, envs_in_group] = torch.from_numpy(self.next_obs[group])
            with torch.inference_mode():
                try:
                    actions, logprobs_all, values = act(self.model, rollout.obs[step, envs_in_group])
                except FloatingPointError as err:
                    raise NonFiniteLoss(f"{err} at step {self.state.global_step}") from None
            rollout.actions[step, envs_in_group] = actions
            rollout.behaviour_logprobs[step, envs_in_group] = logprobs_all
            rollout.logprobs[step, envs_in_group] = logprobs_all.gather(1, actions.to(self.device)[:, None]).squeeze(1)
            rollout.values[step, envs_in_group] = values
            with self._env_worker_errors():
                self.envs.send(group, actions.numpy())

    @contextlib.contextmanager
    def _env_worker_errors(self) -> Iterator[None]:
        """A worker process that died or raised ends the run in one line, whether its pipe broke on
        the send (BrokenPipeError) or on the receive (EOFError)."""
        try:
            yield
        except Exception as err:
            raise TrainingError(
                f"an env worker failed at step {self.state.global_step}: {type(err).__name__}: {err}"
            ) from err

    def _receive(self, step: int, group: int) -> None:
        """Wait for one env group's step at ``step`` and store its outcome."""
        with self.timer("env"), self._env_worker_errors():
            self.next_obs[group], rewards, terminated, truncated, infos = self.envs.receive(group)
        with self.timer("bookkeeping"):
            envs_in_group = self.envs.slices[group]
            self.state.global_step += len(rewards)
            self.rollout.env_rewards[step, envs_in_group] = torch.from_numpy(rewards)
            ended = terminated | truncated
            self.normalizer.observe(self.next_obs[group])
            rewards = torch.as_tensor(self.normalizer.reward(rewards, ended, envs_in_group), dtype=torch.float32)
            # Truncation is not termination: bootstrap with V(final observation).
            cut = np.flatnonzero(truncated & ~terminated)
            if cut.size:
                final_obs = torch.as_tensor(self.normalizer.obs(np.stack([infos["final_obs"][i] for i in cut])))
                with torch.inference_mode():
                    rewards[cut] += self.cfg.ppo.gamma * self.model(final_obs.to(self.device))[1].cpu()
            self.rollout.rewards[step, envs_in_group] = rewards
            self.rollout.episode_ends[step, envs_in_group] = torch.as_tensor(ended, dtype=torch.float32)
            for episode in EpisodeEnd.ended_at(infos, truncated & ~terminated, step, envs_in_group.start):
                self._episode_ended(episode)

    def _episode_ended(self, episode: EpisodeEnd) -> None:
        state = self.state
        state.episodes_done += 1
        state.recent.append(RecentEpisode(episode.episode_return, episode.success, episode.max_x))
        self.rollout.episodes.append(episode)
        self.logger.log(
            state.global_step,
            {
                "charts/episodic_return": episode.episode_return,
                "charts/episodic_length": episode.length,
                "charts/success": int(episode.success),
                "charts/max_x": episode.max_x,
                "charts/episode": state.episodes_done,
            },
        )

    def update_policy(self, clip_coef: float) -> dict[str, float]:
        """GAE over the rollout, then PPO's minibatch epochs (plus APO's anchor term); the loss metrics."""
        ppo = self.cfg.ppo
        with self.timer("learn"):
            with torch.inference_mode():
                next_obs = torch.from_numpy(self.normalizer.obs(np.concatenate(self.next_obs))).to(self.device)
                next_value = self.model(next_obs)[1]
            advantages, returns = compute_gae(
                self.rollout.rewards,
                self.rollout.values,
                self.rollout.episode_ends,
                next_value,
                ppo.gamma,
                ppo.gae_lambda,
            )
            return ppo_update(
                self.model, self.optimizer, self.rollout, advantages, returns, ppo, clip_coef, self.hooks.loss
            )

    def log_update(self, metrics: dict[str, float], clip_coef: float, seconds: float) -> dict[str, float]:
        """Add the update's charts, timing, anchor and evaluation metrics to ``metrics`` and log them."""
        state = self.state
        metrics.update(
            {
                "charts/SPS": self.cfg.ppo.batch_size / seconds,
                "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
                "charts/clip_coef": clip_coef,
                "charts/update": state.update,
                "charts/frames": state.global_step * self.frames_per_step,
                "charts/episodes": state.episodes_done,
                **state.window_metrics(),
                **self.timer.fractions(),
                **self.hooks.metrics(state.update),
                "charts/train_seconds": self.timer.total,  # training time so far, without evaluation
            }
        )
        if self.cfg.log.eval_every and state.update % self.cfg.log.eval_every == 0:
            metrics.update(self.evaluate())
        self.logger.log(state.global_step, metrics)
        self.hooks.log_media(self.run_dir, self.logger, state.global_step, state.update)
        return metrics

    def evaluate(self) -> dict[str, float]:
        """The greedy policy on a fresh env, as ``eval/*`` metrics."""
        start = time.perf_counter()
        log = self.cfg.log
        seed = self.streams.eval_seed(self.state.update)
        result = evaluate(
            self.model,
            self.task,
            self.cfg.env,
            log.eval_episodes,
            greedy=True,
            seed=seed,
            obs_transform=self.normalizer.obs,
        )
        metrics = {f"eval/{key}": result[key] for key in ("mean_return", "success_rate", "mean_max_x")}
        metrics["eval/seconds"] = time.perf_counter() - start
        return metrics

    def _final_policy_episodes(self) -> dict[str, int]:
        log = self.cfg.log
        return {"sampled": log.final_eval_episodes, "greedy": log.final_eval_greedy}

    def _evaluate_policy(self, stop) -> dict | None:
        """The final-policy evaluation of the policy as it is now: the same fresh episodes every time."""
        num_envs = self.cfg.ppo.num_envs
        return evaluate_final_policy(
            self.model,
            self.task,
            self.cfg.env,
            self._final_policy_episodes(),
            num_envs,
            self.streams.final_eval_seeds(num_envs + 1),
            obs_transform=self.normalizer.obs,
            stop=stop,
            progress=self.cfg.log.progress,
        )

    def _headline(self, prefix: str, result: dict) -> dict[str, float]:
        return {
            f"{prefix}/{policy}_{key}": value
            for policy in self._final_policy_episodes()
            for key, value in result.get(policy, {}).items()
            if key in ("success_rate", "mean_return", "mean_max_x")
        }

    def evaluate_at_budgets(self, stop) -> None:
        """Once training passes each ``--final-eval-at`` budget, the final-policy evaluation there (the
        training envs idle meanwhile): logged as ``eval_at/*`` and kept for summary.json."""
        state = self.state
        for budget in self.cfg.log.final_eval_at:
            if (
                state.global_step < budget
                or str(budget) in state.budget_evals
                or not any(self._final_policy_episodes().values())
            ):
                continue
            result = self._evaluate_policy(stop)
            if result is None:  # stopped: a resumed run evaluates at its next update
                return
            state.budget_evals[str(budget)] = {"at_step": state.global_step, **result}
            self.logger.log(state.global_step, self._headline("eval_at", result))

    def evaluate_final_policy(self, stop) -> None:
        """The benchmark's metric (``summary.json``'s ``final_eval``): the trained policy on fresh
        episodes, in fresh envs; the training envs are closed first, to give it their cores."""
        if not any(self._final_policy_episodes().values()):
            self.final_eval = {}
            return
        self.envs.close()
        self.model.eval()
        self.final_eval = self._evaluate_policy(stop)
        if self.final_eval is not None:
            self.logger.log_summary(self._headline("final", self.final_eval))

    def maybe_checkpoint(self, force: bool = False) -> None:
        """Checkpoint every ``checkpoint_every`` updates, at the last update, and when ``force``d."""
        update = self.state.update
        if force or update % self.cfg.log.checkpoint_every == 0 or update == self.cfg.ppo.num_updates:
            self.save()

    def save(self) -> None:
        state = self.state
        save_checkpoint(
            self.files.checkpoint,
            {
                "task": self.task.name,
                "algo": self.cfg.algo,
                "update": state.update,
                "global_step": state.global_step,
                "episodes_done": state.episodes_done,
                "recent_episodes": [tuple(episode) for episode in state.recent],
                "budget_evals": state.budget_evals,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "anchors": self.hooks.state_dict(),  # APO's anchors or SIL's replay (the key predates SIL)
                "normalizer": self.normalizer.state_dict(),
                "rng": rng_states(),
            },
        )
        self.hooks.save_files(self.run_dir)

    # ---- the end ------------------------------------------------------------------------

    def close(self, failed: bool = False) -> None:
        """Stop the env workers (``failed``: without waiting on one that may be dead) and the logger."""
        try:
            self.envs.close(terminate=failed)
        finally:
            self.logger.close()

    def summary(self) -> dict[str, Any]:
        """The run's final numbers; written as summary.json (marking the run finished) unless interrupted."""
        state = self.state
        window = state.window_metrics()
        summary = {
            "run_dir": str(self.run_dir),
            "global_step": state.global_step,
            "updates": state.update,
            "episodes": state.episodes_done,
            # training done but stopped during the final evaluation: the run is not finished either
            "interrupted": state.update < self.cfg.ppo.num_updates or self.final_eval is None,
            "success_rate_100": window.get("charts/success_rate", 0.0),
            "return_mean_100": window.get("charts/return_mean_100", 0.0),
            "final_eval": self.final_eval,
        }
        if self.cfg.log.final_eval_at:
            summary["budget_evals"] = state.budget_evals
        if not summary["interrupted"]:  # the suite runner skips finished runs
            try:
                write_json(self.files.summary, summary)
            except OSError as err:
                raise TrainingError(f"could not write {self.files.summary} ({err})") from None
        return summary
