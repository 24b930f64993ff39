"""PPO pieces against hand computations, and learning on CartPole (real envs)."""

from __future__ import annotations

import pytest
import torch

from mario_apo.config import EnvConfig, RunConfig, ppo_defaults
from mario_apo.evaluate import evaluate
from mario_apo.ppo import compute_gae, ppo_loss
from mario_apo.runs import create_run
from mario_apo.tasks import parse_task
from mario_apo.train import train
from models.actor_critic import make_model


def test_gae_sparse_reward_at_the_last_step_matches_hand_computation():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[0.0], [0.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    ends = torch.tensor([[0.0], [0.0], [1.0]])
    advantages, returns = compute_gae(rewards, values, ends, torch.tensor([9.0]), gamma, lam)
    # The episode ends at t=2: V(next)=9 must not leak into it.
    d2 = 1.0 - 0.3
    d1 = 0.0 + gamma * 0.3 - 0.4
    d0 = 0.0 + gamma * 0.4 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    torch.testing.assert_close(advantages[:, 0], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(returns, advantages + values)


def test_gae_bootstraps_across_the_rollout_end_and_stops_at_episode_ends():
    gamma, lam = 0.99, 0.95
    rewards = torch.ones(4, 2)
    values = torch.zeros(4, 2)
    ends = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    advantages, _ = compute_gae(rewards, values, ends, torch.tensor([10.0, 10.0]), gamma, lam)
    # env 0: the episode ending at t=1 cuts the trace; t=3 bootstraps from 10
    assert advantages[1, 0] == pytest.approx(1.0)
    assert advantages[3, 0] == pytest.approx(1.0 + gamma * 10.0)
    assert advantages[0, 0] == pytest.approx(1.0 + gamma * lam * 1.0)
    # env 1 never ends: every step sees the bootstrap
    assert advantages[0, 1] > advantages[0, 0]


def test_ppo_loss_at_ratio_one_has_no_clipping_and_matches_definitions():
    torch.manual_seed(0)
    logits = torch.randn(64, 5)
    actions = torch.randint(0, 5, (64,))
    logprobs = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
    values = torch.randn(64)
    advantages, returns = torch.randn(64), torch.randn(64)
    cfg = ppo_defaults("mario")
    terms = ppo_loss(logits, values, actions, logprobs, values, advantages, returns, cfg, clip_coef=0.1)
    normalised = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    assert terms["policy"].item() == pytest.approx(-normalised.mean().item(), abs=1e-6)
    assert terms["value"].item() == pytest.approx(0.5 * ((values - returns) ** 2).mean().item(), rel=1e-6)
    entropy = torch.distributions.Categorical(logits=logits).entropy().mean()
    assert terms["entropy"].item() == pytest.approx(entropy.item(), rel=1e-6)
    assert terms["approx_kl"].item() == pytest.approx(0.0, abs=1e-7) and terms["clipfrac"].item() == 0.0


def test_ppo_loss_clips_a_large_ratio():
    logits = torch.tensor([[5.0, 0.0]])
    actions = torch.tensor([0])
    old_logprobs = torch.log(torch.tensor([0.5]))  # new prob ~0.99: ratio ~2
    cfg = ppo_defaults("mario")
    terms = ppo_loss(
        logits,
        torch.zeros(1),
        actions,
        old_logprobs,
        torch.zeros(1),
        torch.tensor([1.0]),
        torch.zeros(1),
        cfg.__class__(**{**vars(cfg), "norm_adv": False}),
        clip_coef=0.2,
    )
    assert terms["clipfrac"].item() == 1.0
    assert terms["policy"].item() == pytest.approx(-1.2)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "apo"])
def test_cartpole_is_solved_within_100k_steps(algo, tmp_path):
    cfg = RunConfig(algo=algo, task="cartpole", seed=1, ppo=ppo_defaults("cartpole"))
    cfg.log.run_dir, cfg.log.wandb, cfg.log.progress = str(tmp_path), "disabled", False
    cfg.log.final_eval_episodes = cfg.log.final_eval_greedy = 0  # its own greedy evaluation below
    assert cfg.ppo.total_steps <= 100_000
    run_dir = create_run(cfg)
    summary = train(cfg, run_dir)
    assert summary["global_step"] <= 100_000
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    import gymnasium as gym

    probe = gym.make("CartPole-v1")
    model = make_model(probe.observation_space, probe.action_space)
    model.load_state_dict(state["model"])
    result = evaluate(model, parse_task("cartpole"), EnvConfig(), episodes=10, greedy=True, seed=100)
    assert result["mean_return"] >= 475, result
