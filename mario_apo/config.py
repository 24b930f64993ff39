"""Run configuration: one dataclass per concern, defaults per task family in one table.

The resolved ``RunConfig`` is written to every run dir (``config.json``) and to W&B.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mario_apo.tasks import EnvConfig

ALGOS = ("ppo", "apo")
BETA_SCHEDULES = ("constant", "linear-decay", "linear-warmup")
ANCHOR_KL_DIRECTIONS = ("forward", "reverse")
ANCHOR_ADMIT = ("top", "success")
WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class PPOConfig:
    """PPO hyper-parameters (the names follow CleanRL's)."""

    total_steps: int = 1_000_000
    """Agent steps over all envs (one agent step = ``frame_skip`` emulator frames on Mario)."""
    num_envs: int = 8
    """Parallel envs."""
    num_steps: int = 128
    """Steps per env per rollout; the batch is ``num_envs * num_steps``."""
    learning_rate: float = 2.5e-4
    """Adam step size (annealed linearly to 0 if ``anneal_lr``)."""
    anneal_lr: bool = True
    """Linearly anneal the learning rate to 0 over ``total_steps``."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    update_epochs: int = 4
    """Passes over each batch."""
    num_minibatches: int = 4
    """Minibatches per pass."""
    clip_coef: float = 0.1
    """Surrogate clipping epsilon."""
    anneal_clip: bool = False
    """Linearly anneal the clip epsilon to 0 over ``total_steps`` (rl-zoo's CartPole setting)."""
    clip_vloss: bool = True
    """Clip the value loss around the old values."""
    ent_coef: float = 0.01
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.batch_size


@dataclass
class AnchorConfig:
    """APO's additions (ignored by ``--algo ppo``): the anchor buffer and the KL term."""

    beta: float = 0.1
    """Weight of the anchor KL term in the loss; 0 makes APO exactly PPO."""
    beta_schedule: str = "constant"
    """constant, linear-decay (beta -> 0 over the run) or linear-warmup (0 -> beta)."""
    anchors: int = 8
    """K: how many highest-return episodes are kept as anchors."""
    anchor_batch: int = 64
    """Anchor states sampled for the KL term at every PPO minibatch step."""
    anchor_admit: str = "top"
    """top: any episode in the top K by return; success: only goal-reaching episodes."""
    anchor_kl: str = "forward"
    """forward: KL(p_best || pi_theta) (the spec's choice, mode-covering); reverse: KL(pi_theta || p_best)."""
    anchor_max_mb: float = 256.0
    """Memory cap of the anchor buffer in MB; the lowest-return anchors are evicted first."""


@dataclass
class LogConfig:
    """Where and how a run is recorded."""

    run_dir: str = "runs"
    """Parent folder of run dirs."""
    name: str = ""
    """Run name (default: ``<algo>-<task>-s<seed>-<time>``)."""
    wandb: str = "offline"
    """W&B mode: offline (default; no account or network), online, or disabled."""
    wandb_project: str = "mario-apo"
    """W&B project."""
    wandb_group: str = ""
    """W&B group (default: the task string)."""
    wandb_tags: list[str] = field(default_factory=list)
    """Extra W&B tags (algo and task are always added)."""
    checkpoint_every: int = 50
    """Save a checkpoint every N updates (and always at the end)."""
    progress: bool = True
    """Show a progress bar."""
    eval_every: int = 0
    """Evaluate the greedy policy every N updates on a fresh env (0: never)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    video_every: int = 100
    """APO on Mario: video of each new best anchor (videos/, and W&B media), at most once per N updates (0: off)."""


@dataclass
class RunConfig:
    """Everything one training run needs; ``config.json`` in the run dir."""

    algo: str = "apo"
    task: str = "mario:1-1:dense"
    seed: int = 1
    torch_threads: int = 0
    """Threads for torch (0: all cores)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        return cls(
            algo=data["algo"],
            task=data["task"],
            seed=data["seed"],
            torch_threads=data.get("torch_threads", 0),
            env=EnvConfig(**data["env"]),
            ppo=PPOConfig(**data["ppo"]),
            anchor=AnchorConfig(**data["anchor"]),
            log=LogConfig(**data["log"]),
        )


# PPO defaults per task family. Mario: the Atari PPO settings. CartPole: the
# rl-baselines3-zoo tuned settings (solves it within 100k steps; like SB3, no value
# clipping, and vf_coef 1 for SB3's MSE without our 0.5 factor). MountainCar: zoo's settings (the MLP's input scaling stands in for its VecNormalize).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "mario": dict(total_steps=1_000_000, num_envs=8, num_steps=128, learning_rate=2.5e-4, gamma=0.99,
                  gae_lambda=0.95, update_epochs=4, num_minibatches=4, clip_coef=0.1, ent_coef=0.01),
    "cartpole": dict(total_steps=100_000, num_envs=8, num_steps=32, learning_rate=1e-3, gamma=0.98,
                     gae_lambda=0.8, update_epochs=20, num_minibatches=1, clip_coef=0.2, ent_coef=0.0,
                     anneal_clip=True, clip_vloss=False, vf_coef=1.0),
    "mountaincar": dict(total_steps=1_000_000, num_envs=16, num_steps=16, learning_rate=3e-4, gamma=0.99,
                        gae_lambda=0.98, update_epochs=4, num_minibatches=4, clip_coef=0.2, ent_coef=0.0,
                        clip_vloss=False),
}


def ppo_defaults(family: str) -> PPOConfig:
    return PPOConfig(**FAMILY_DEFAULTS[family])
