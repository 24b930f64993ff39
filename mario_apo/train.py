"""The training loop, PPO and APO alike: setup -> rollout -> GAE -> update -> log/checkpoint.

APO differs from PPO in two marked places (``# APO``): the anchor buffer records
every step of the rollout, and the update gets one extra loss term.
"""

from __future__ import annotations

import collections
import json
import platform
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import mario_apo
from mario_apo.anchors import AnchorBuffer, anchor_kl
from mario_apo.checkpoint import CHECKPOINT, CheckpointError, load_checkpoint, rng_states, save_checkpoint, set_rng_states
from mario_apo.config import RunConfig
from mario_apo.evaluate import evaluate
from mario_apo.logger import RunLogger
from mario_apo.ppo import NonFiniteLoss, Rollout, compute_gae, ppo_update
from mario_apo.tasks import EnvGroups, parse_task
from models.actor_critic import make_model

RECENT_EPISODES = 100


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, dead env worker); its last checkpoint is kept."""


def beta_at(cfg: RunConfig, progress: float) -> float:
    """The anchor weight at a fraction ``progress`` in [0, 1) of the run."""
    schedule = cfg.anchor.beta_schedule
    if schedule == "linear-decay":
        return cfg.anchor.beta * (1.0 - progress)
    if schedule == "linear-warmup":
        return cfg.anchor.beta * progress
    return cfg.anchor.beta


def default_run_name(cfg: RunConfig) -> str:
    task = cfg.task.replace(":", "-")
    return f"{cfg.algo}-{task}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def create_run(cfg: RunConfig) -> Path:
    """A new run dir with its config.json; refuses to overwrite an existing run."""
    run_dir = Path(cfg.log.run_dir) / (cfg.log.name or default_run_name(cfg))
    if run_dir.exists():
        raise CheckpointError(f"run dir {run_dir} already exists: pick another --name, or continue it with --resume {run_dir}")
    run_dir.mkdir(parents=True)
    cfg.log.name = run_dir.name
    write_run_config(run_dir, cfg)
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    """The saved config of an existing run (for --resume)."""
    path = run_dir / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run dir (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from None


def write_run_config(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """config.json: every resolved setting, the versions that ran it, and the W&B run id."""
    import gymnasium

    record = cfg.to_dict()
    record["wandb_id"] = uuid.uuid4().hex[:12]
    record["versions"] = {
        "mario_apo": mario_apo.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
    (run_dir / "config.json").write_text(json.dumps(record, indent=2))
    return record


def _finished_episodes(infos: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Env index -> ``info["episode"]`` for each env whose episode ended at this step."""
    if "final_info" not in infos:
        return {}
    episodes = infos["final_info"]["episode"]
    mask = infos["final_info"]["_episode"]
    return {int(i): {key: episodes[key][i] for key in ("r", "l", "success", "max_x")} for i in np.flatnonzero(mask)}


class _StopRequest:
    """First Ctrl-C: finish the current update, checkpoint, exit cleanly. Second: abort now."""

    def __init__(self):
        self.requested = False
        self._previous = signal.getsignal(signal.SIGINT)

    def __enter__(self):
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("mario-apo: stopping after this update to save a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


def train(cfg: RunConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train one run in ``run_dir`` (new, or resumed from its checkpoint); return the final summary."""
    task = parse_task(cfg.task)
    ppo = cfg.ppo
    checkpoint_path = run_dir / CHECKPOINT

    # ---- setup: seeds, envs, model, optimizer, anchors ----------------------------------
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)

    checkpoint = load_checkpoint(checkpoint_path, task.name) if resume else None

    envs = EnvGroups(task, cfg.env, ppo.num_envs)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    model = make_model(obs_space, action_space)
    optimizer = torch.optim.Adam(model.parameters(), lr=ppo.learning_rate, eps=1e-5)
    frame_stack = cfg.env.frame_stack if task.is_mario else None
    anchors = AnchorBuffer(cfg.anchor, ppo.num_envs, frame_stack, cfg.seed) if cfg.algo == "apo" else None  # APO

    global_step, start_update, episodes_done = 0, 0, 0
    recent = collections.deque(maxlen=RECENT_EPISODES)
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            envs.close()
            raise CheckpointError(f"checkpoint in {run_dir} does not fit this model: {str(err).splitlines()[0]}") from None
        if anchors is not None and checkpoint["anchors"] is not None:
            anchors.load_state_dict(checkpoint["anchors"])
        set_rng_states(checkpoint["rng"])
        global_step, start_update = checkpoint["global_step"], checkpoint["update"]
        episodes_done = checkpoint["episodes_done"]
        recent.extend(checkpoint["recent_episodes"])

    if resume:
        (run_dir / "summary.json").unlink(missing_ok=True)  # a resumed run is unfinished again
    logger = RunLogger(run_dir, json.loads((run_dir / "config.json").read_text()), global_step if resume else None)
    rollout = Rollout.allocate(
        ppo.num_steps, ppo.num_envs, obs_space.shape, torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
    )
    behaviour_logprobs = torch.zeros(ppo.num_envs, action_space.n)  # the full p_best of the latest step

    def save(update: int) -> None:
        state = {
            "task": task.name,
            "algo": cfg.algo,
            "update": update,
            "global_step": global_step,
            "episodes_done": episodes_done,
            "recent_episodes": list(recent),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "anchors": anchors.state_dict() if anchors is not None else None,
            "rng": rng_states(),
        }
        save_checkpoint(checkpoint_path, state)
        if anchors is not None:
            write_anchor_index(run_dir, anchors)

    # Resumed envs start fresh episodes (emulator state is not checkpointed); a
    # different env seed keeps a resumed classic-control run from replaying its start.
    next_obs = envs.reset(seed=cfg.seed + start_update * ppo.num_envs)
    timing = collections.Counter()

    def act(step: int, group: int) -> None:
        """Policy forward for one env group at ``step``; its envs start stepping."""
        t0 = time.perf_counter()
        envs_in_group = envs.slices[group]
        rollout.obs[step, envs_in_group] = torch.from_numpy(next_obs[group])
        with torch.inference_mode():
            logits, values = model(rollout.obs[step, envs_in_group])
            if not torch.isfinite(logits).all():
                raise NonFiniteLoss(f"the policy's logits became non-finite at step {global_step}")
            logprobs_all = F.log_softmax(logits, dim=-1)
            actions = torch.multinomial(logprobs_all.exp(), 1).squeeze(1)
        rollout.actions[step, envs_in_group] = actions
        rollout.logprobs[step, envs_in_group] = logprobs_all.gather(1, actions[:, None]).squeeze(1)
        rollout.values[step, envs_in_group] = values
        behaviour_logprobs[envs_in_group] = logprobs_all
        envs.send(group, actions.numpy())
        timing["inference"] += time.perf_counter() - t0

    def collect(step: int, group: int, update: int) -> None:
        """Wait for one env group's step at ``step`` and store its outcome."""
        nonlocal global_step, episodes_done
        t0 = time.perf_counter()
        try:
            next_obs[group], rewards, terminated, truncated, infos = envs.receive(group)
        except Exception as err:  # a worker process died or raised
            raise TrainingError(f"an env worker failed at step {global_step}: {type(err).__name__}: {err}") from err
        t1 = time.perf_counter()
        envs_in_group = envs.slices[group]
        global_step += len(rewards)
        rewards = torch.as_tensor(rewards, dtype=torch.float32)
        # Truncation is not termination: bootstrap with V(final observation).
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size:
            final_obs = torch.as_tensor(np.stack([infos["final_obs"][i] for i in cut]))
            with torch.inference_mode():
                rewards[cut] += ppo.gamma * model(final_obs)[1]
        rollout.rewards[step, envs_in_group] = rewards
        rollout.episode_ends[step, envs_in_group] = torch.as_tensor(terminated | truncated, dtype=torch.float32)

        finished = _finished_episodes(infos)
        for episode in finished.values():
            episodes_done += 1
            recent.append((float(episode["r"]), bool(episode["success"]), int(episode["max_x"])))
            logger.log(
                global_step,
                {
                    "charts/episodic_return": float(episode["r"]),
                    "charts/episodic_length": int(episode["l"]),
                    "charts/success": int(episode["success"]),
                    "charts/max_x": int(episode["max_x"]),
                    "charts/episode": episodes_done,
                },
            )
        if anchors is not None:  # APO: remember the best episodes, with p_best
            anchors.observe(
                rollout.obs[step, envs_in_group].numpy(),
                behaviour_logprobs[envs_in_group].numpy(),
                rollout.actions[step, envs_in_group].numpy(),
                finished,
                update,
                first_env=envs_in_group.start,
            )
        timing["env"] += t1 - t0
        timing["bookkeeping"] += time.perf_counter() - t1

    progress = tqdm(
        total=ppo.num_updates * ppo.batch_size,
        initial=global_step,
        unit="step",
        desc=f"{cfg.algo} {task.name}",
        disable=not cfg.log.progress,
        dynamic_ncols=True,
    )
    update = start_update
    last_video = [None, -(10**9)]  # episode id and update of the last best-anchor video
    try:
        with _StopRequest() as stop:
            for update in range(start_update + 1, ppo.num_updates + 1):
                run_fraction = (update - 1) / ppo.num_updates
                if ppo.anneal_lr:
                    optimizer.param_groups[0]["lr"] = ppo.learning_rate * (1.0 - run_fraction)
                clip_coef = ppo.clip_coef * (1.0 - run_fraction) if ppo.anneal_clip else ppo.clip_coef
                update_start = time.perf_counter()

                # ---- rollout: each env group steps while the policy acts for the other ----
                for group in envs.groups:
                    act(0, group)
                for step in range(ppo.num_steps):
                    for group in envs.groups:
                        collect(step, group, update)
                        if step + 1 < ppo.num_steps:
                            act(step + 1, group)

                # ---- GAE -----------------------------------------------------------------
                t0 = time.perf_counter()
                with torch.inference_mode():
                    next_value = model(torch.from_numpy(np.concatenate(next_obs)))[1]
                advantages, returns = compute_gae(
                    rollout.rewards, rollout.values, rollout.episode_ends, next_value, ppo.gamma, ppo.gae_lambda
                )

                # ---- update (APO: + beta * anchor KL) -------------------------------------
                beta = beta_at(cfg, run_fraction) if anchors is not None else 0.0
                anchor_loss = None
                if anchors is not None and len(anchors) > 0 and beta > 0:

                    def anchor_loss(current_model):
                        anchor_obs, best_logprobs = anchors.sample(cfg.anchor.anchor_batch)
                        logits, _ = current_model(torch.from_numpy(anchor_obs))
                        return anchor_kl(torch.from_numpy(best_logprobs), logits, cfg.anchor.anchor_kl)

                metrics = ppo_update(model, optimizer, rollout, advantages, returns, ppo, clip_coef, anchor_loss, beta)
                timing["learn"] += time.perf_counter() - t0

                # ---- log, checkpoint --------------------------------------------------------
                sps = ppo.batch_size / (time.perf_counter() - update_start)
                metrics.update(
                    {
                        "charts/SPS": sps,
                        "charts/learning_rate": optimizer.param_groups[0]["lr"],
                        "charts/clip_coef": clip_coef,
                        "charts/update": update,
                        "charts/episodes": episodes_done,
                    }
                )
                if recent:
                    metrics["charts/success_rate"] = float(np.mean([s for _, s, _ in recent]))
                    metrics["charts/return_mean_100"] = float(np.mean([r for r, _, _ in recent]))
                    metrics["charts/max_x_mean_100"] = float(np.mean([x for _, _, x in recent]))
                total_time = sum(timing.values())  # training time so far, without evaluation
                metrics.update({f"perf/{stage}_fraction": seconds / total_time for stage, seconds in timing.items()})
                if anchors is not None:
                    metrics["anchor/beta"] = beta
                    metrics.update(anchors.metrics(update))
                metrics["charts/train_seconds"] = total_time
                if cfg.log.eval_every and update % cfg.log.eval_every == 0:
                    eval_start = time.perf_counter()
                    result = evaluate(model, task, cfg.env, cfg.log.eval_episodes, greedy=True, seed=cfg.seed + update)
                    metrics.update({f"eval/{key}": result[key] for key in ("mean_return", "success_rate", "mean_max_x")})
                    metrics["eval/seconds"] = time.perf_counter() - eval_start
                logger.log(global_step, metrics)
                if anchors is not None and task.is_mario and cfg.log.video_every and anchors.best is not None:
                    best = anchors.best
                    if best.episode_id != last_video[0] and update - last_video[1] >= cfg.log.video_every:
                        log_best_anchor_video(run_dir, task, cfg, best, logger, global_step)
                        last_video[:] = [best.episode_id, update]
                progress.update(ppo.batch_size)
                postfix = {"SPS": f"{sps:.0f}"}
                if recent:
                    postfix["ret100"] = f"{metrics['charts/return_mean_100']:.2f}"
                    postfix["success"] = f"{metrics['charts/success_rate']:.2f}"
                progress.set_postfix(postfix)

                if update % cfg.log.checkpoint_every == 0 or update == ppo.num_updates or stop.requested:
                    save(update)
                if stop.requested:
                    break
    except BaseException:
        envs.close(terminate=True)
        raise
    else:
        envs.close()
    finally:
        progress.close()
        logger.close()
    summary = {
        "run_dir": str(run_dir),
        "global_step": global_step,
        "updates": update,
        "episodes": episodes_done,
        "interrupted": update < ppo.num_updates,
        "success_rate_100": float(np.mean([s for _, s, _ in recent])) if recent else 0.0,
        "return_mean_100": float(np.mean([r for r, _, _ in recent])) if recent else 0.0,
    }
    if not summary["interrupted"]:  # marks the run finished (the suite runner skips it)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def log_best_anchor_video(run_dir: Path, task, cfg: RunConfig, best, logger: RunLogger, global_step: int) -> None:
    """Replay the new best anchor on a fresh emulator (verified step by step) and log its video."""
    from mario_apo.replay import ReplayMismatch, replay
    from mario_apo.video import VideoWriter

    path = run_dir / "videos" / f"best-ep{best.episode_id}.mp4"
    expected = {"return": best.episode_return, "length": best.length, "max_x": best.max_x, "success": best.success}
    try:
        with VideoWriter(path) as video:
            replay(task, cfg.env, best.actions, expected, best.frames, video)
    except ReplayMismatch as err:  # would mean the env is not deterministic: say so, keep training
        tqdm.write(f"mario-apo: no video of anchor episode {best.episode_id}: {err}", file=sys.stderr)
        return
    logger.log_video(global_step, "anchor/best_video", path)


def write_anchor_index(run_dir: Path, anchors: AnchorBuffer) -> None:
    """anchors.json: each anchor's return, success, length and exact actions (enough to replay it)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    index = {
        "task": cfg["task"],
        "env": cfg["env"],
        "anchors": [
            {
                "rank": rank,
                "episode_id": a.episode_id,
                "return": a.episode_return,
                "success": a.success,
                "length": a.length,
                "max_x": a.max_x,
                "admitted_update": a.admitted_update,
                "actions": a.actions.tolist(),
            }
            for rank, a in enumerate(anchors.anchors)
        ],
    }
    tmp = run_dir / "anchors.json.tmp"
    tmp.write_text(json.dumps(index))
    tmp.replace(run_dir / "anchors.json")
