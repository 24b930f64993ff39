"""PPO: rollout storage, GAE, the clipped loss and the minibatch update.

APO enters the update in exactly one line: ``ppo_update`` adds ``extra_loss(model,
terms)`` to every minibatch's loss, which is APO's ``beta * KL(p_best || pi_theta)``
on anchor states and 0 for PPO (see ``mario_apo.anchors``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mario_apo.config import PPOConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.errors import NonFiniteLoss

ExtraLoss = Callable[[nn.Module, dict[str, torch.Tensor]], "torch.Tensor | float"]


@dataclass
class Rollout:
    """Preallocated storage for one rollout of ``num_steps`` x ``num_envs`` transitions.

    ``episode_ends[t]`` marks transitions that ended an episode (terminated or
    truncated); with same-step autoreset ``obs[t + 1]`` is then the next
    episode's first observation. A truncated episode's bootstrap value
    ``gamma * V(final_obs)`` is already added to its last reward.
    """

    obs: torch.Tensor
    """(steps, envs, *obs_shape) observations the actions were taken from, as the policy saw them
    (uint8 frames for Mario; standardised vectors under ``norm_obs``)."""
    raw_obs: torch.Tensor
    """The same observations as the env returned them (APO's anchors keep these); ``obs`` itself
    when there is no observation normalisation."""
    actions: torch.Tensor
    """(steps, envs) actions taken."""
    logprobs: torch.Tensor
    """(steps, envs) behaviour log-probability of the action taken (the PPO ratio's denominator)."""
    behaviour_logprobs: torch.Tensor
    """(steps, envs, actions) the behaviour policy's whole log-distribution (APO's p_best)."""
    rewards: torch.Tensor
    """(steps, envs) rewards as the learner sees them: normalised (``norm_reward``), a truncated
    episode's bootstrap added."""
    env_rewards: torch.Tensor
    """(steps, envs) float64 rewards as the env returned them (APO ranks episodes by their discounted sum)."""
    episode_ends: torch.Tensor
    values: torch.Tensor
    episodes: list[EpisodeEnd]
    """Episodes that ended during the rollout, in the order they ended."""

    @classmethod
    def allocate(
        cls,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        num_actions: int,
        norm_obs: bool = False,
        device: torch.device | None = None,
    ) -> Rollout:
        """:param obs_dtype: the env's observation dtype (standardised observations are float32 whatever it is)"""

        def zeros(*shape, dtype=torch.float32):
            return torch.zeros((num_steps, num_envs, *shape), dtype=dtype, device=device)

        obs = zeros(*obs_shape, dtype=torch.float32 if norm_obs else obs_dtype)
        return cls(
            obs=obs,
            raw_obs=zeros(*obs_shape, dtype=obs_dtype) if norm_obs else obs,
            actions=zeros(dtype=torch.long),
            logprobs=zeros(),
            behaviour_logprobs=zeros(num_actions),
            rewards=zeros(),
            env_rewards=zeros(dtype=torch.float64),
            episode_ends=zeros(),
            values=zeros(),
            episodes=[],
        )


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    episode_ends: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (num_steps, num_envs) rollout.

    :param next_value: V of the observation after the last step, per env
    :return: (advantages, returns), each (num_steps, num_envs)
    """
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        following_value = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        nonterminal = 1.0 - episode_ends[t]
        delta = rewards[t] + gamma * following_value * nonterminal - values[t]
        last_gae = delta + gamma * gae_lambda * nonterminal * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def ppo_loss(
    logits: torch.Tensor,
    new_values: torch.Tensor,
    actions: torch.Tensor,
    old_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    clip_coef: float,
) -> dict[str, torch.Tensor]:
    """The clipped-surrogate terms for one minibatch, as a dict of named terms.

    ``clip_coef`` is passed in (not read from ``cfg``) because it may be annealed.

    ``policy`` and ``value`` are minimised, ``entropy`` is a bonus; the caller
    sums them with their coefficients. ``approx_kl`` and ``clipfrac`` are
    diagnostics (no gradient).
    """
    logprobs_all = F.log_softmax(logits, dim=-1)
    new_logprobs = logprobs_all.gather(1, actions[:, None]).squeeze(1)
    entropy = -(logprobs_all.exp() * logprobs_all).sum(-1)
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance k3 estimator
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()

    if cfg.norm_adv:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)).mean()

    if cfg.clip_vloss:
        clipped = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
        value_loss = 0.5 * torch.max((new_values - returns) ** 2, (clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((new_values - returns) ** 2).mean()
    return {
        "policy": policy_loss,
        "value": value_loss,
        "entropy": entropy.mean(),
        "approx_kl": approx_kl,
        "clipfrac": clipfrac,
    }


def ppo_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    clip_coef: float,
    extra_loss: ExtraLoss,
) -> dict[str, float]:
    """Minibatch epochs over one rollout; returns the mean of every loss term.

    :param clip_coef: the surrogate (and value) clip epsilon for this update
    :param extra_loss: called once per minibatch with the model and the named terms;
        its value is added to the loss and it may add diagnostic terms. APO: ``beta *``
        the anchor KL on a fresh anchor minibatch. PPO: 0, leaving the update unchanged.
    """
    b_obs = rollout.obs.reshape(-1, *rollout.obs.shape[2:])
    b_actions = rollout.actions.reshape(-1)
    b_logprobs = rollout.logprobs.reshape(-1)
    b_values = rollout.values.reshape(-1)
    b_advantages = advantages.reshape(-1)
    b_returns = returns.reshape(-1)

    sums: dict[str, float] = {}
    count = 0
    for _ in range(cfg.update_epochs):
        # drawn by torch's CPU generator on every device (one random stream; checkpoints carry its state)
        permutation = torch.randperm(cfg.batch_size).to(b_obs.device)
        for start in range(0, cfg.batch_size, cfg.minibatch_size):
            mb = permutation[start : start + cfg.minibatch_size]
            logits, new_values = model(b_obs[mb])
            terms = ppo_loss(
                logits,
                new_values,
                b_actions[mb],
                b_logprobs[mb],
                b_values[mb],
                b_advantages[mb],
                b_returns[mb],
                cfg,
                clip_coef,
            )
            loss = terms["policy"] + cfg.vf_coef * terms["value"] - cfg.ent_coef * terms["entropy"]
            loss = loss + extra_loss(model, terms)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())})")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            count += 1

    # PPO's terms are losses/*; a term named with its own namespace (APO's anchor/kl) keeps it.
    metrics = {(name if "/" in name else f"losses/{name}"): total / count for name, total in sums.items()}
    y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
    var_y = np.var(y_true)
    if var_y > 0:
        metrics["losses/explained_variance"] = float(1 - np.var(y_true - y_pred) / var_y)
    return metrics
