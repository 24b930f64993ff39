"""PPO + Self-Imitation Learning: the loss by hand, the replay's priorities and memory cap, and
sil_coef 0 being PPO bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mario_apo.config import SILConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.runs import RunFiles, create_run
from mario_apo.sil import MIN_BATCH, Replay, returns_to_go, sil_loss
from mario_apo.train import train

from conftest import tiny_run_config


def test_returns_to_go_discount_each_step_to_the_episode_end():
    np.testing.assert_allclose(returns_to_go(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])


def test_sil_loss_matches_a_hand_computation():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    values = torch.tensor([0.5, 1.0, 0.0], requires_grad=True)
    actions = torch.tensor([1, 1, 0])
    returns = torch.tensor([1.0, 0.5, 3.0])  # R - V: 0.5, -0.5 (not imitated), 3.0 (clipped to 1)
    weights = torch.tensor([1.0, 1.0, 0.5])
    terms = sil_loss(logits, values, actions, returns, weights)
    logp = torch.log_softmax(logits.detach(), -1)
    count = MIN_BATCH  # 2 valid samples, fewer than the floor
    policy = (1.0 * 0.5 * -logp[0, 1] + 0.5 * 1.0 * -logp[2, 0]) / count
    value = (1.0 * 0.5 * 0.5**2 + 0.5 * (1.0 * (3.0 - 0.5 * 1.0))) / count  # Huber, delta 1
    assert terms["policy"].item() == pytest.approx(policy.item(), rel=1e-6)
    assert terms["value"].item() == pytest.approx(value, rel=1e-6)
    torch.testing.assert_close(terms["advantage"], torch.tensor([0.5, 0.0, 1.0]))
    (terms["value"]).backward()
    # the value gradient is the clipped advantage, as in the published code: -(R - V) clipped to [0, 1]
    torch.testing.assert_close(values.grad, torch.tensor([-0.5, 0.0, -0.5]) / count)


def _episode(replay: Replay, length: int, reward: float) -> None:
    obs = np.zeros((length, 1, 3), np.float32)
    rewards = np.zeros((length, 1))
    rewards[-1, 0] = reward
    ended = [EpisodeEnd(step=length - 1, env=0, episode_return=reward, length=length, success=False, max_x=0)]
    replay.record_rollout(obs, np.zeros((length, 1, 2), np.float32), np.ones((length, 1), np.int64), rewards, ended)


def test_the_replay_draws_by_priority_and_keeps_within_its_memory_cap():
    replay = Replay(SILConfig(sil_alpha=1.0, sil_beta=0.0), 1, None, np.random.default_rng(0), gamma=1.0)
    _episode(replay, 4, 1.0)
    _episode(replay, 4, 0.0)
    assert len(replay) == 8 and replay.episodes[0].returns.tolist() == [1.0] * 4
    index = np.array([[0, t] for t in range(4)] + [[1, t] for t in range(4)])
    replay.update_priorities(index, np.array([1.0] * 4 + [0.0] * 4))  # the second episode: V above R
    _, _, returns, weights, picked = replay.sample(200)
    assert (picked[:, 0] == 0).all() and (returns == 1.0).all() and (weights == 1.0).all()
    capped = Replay(SILConfig(sil_max_mb=200 / 2**20), 1, None, np.random.default_rng(0), gamma=1.0)
    for reward in (1.0, 2.0, 3.0):
        _episode(capped, 4, reward)
    assert capped.nbytes <= 200 and [e.returns[0] for e in capped.episodes] == [3.0]  # the oldest went first


def _params(run_dir) -> list[torch.Tensor]:
    return list(torch.load(RunFiles(run_dir).checkpoint, weights_only=True)["model"].values())


@pytest.mark.slow
def test_sil_with_coefficient_0_is_ppo_bit_for_bit_and_with_1_it_learns_from_its_replay(tmp_path):
    runs = {}
    for name, algo, coef in (("ppo", "ppo", 1.0), ("sil0", "sil", 0.0), ("sil", "sil", 1.0)):
        cfg = tiny_run_config(tmp_path, task="cartpole", algo=algo, total_steps=2048, seed=5, sil_coef=coef)
        cfg.log.name, cfg.log.wandb = name, "disabled"
        runs[name] = create_run(cfg)
        train(cfg, runs[name])
    for ppo, sil0 in zip(_params(runs["ppo"]), _params(runs["sil0"]), strict=True):
        assert torch.equal(ppo, sil0)
    assert any(not torch.equal(a, b) for a, b in zip(_params(runs["ppo"]), _params(runs["sil"]), strict=True))
    metrics = [line for line in RunFiles(runs["sil"]).metrics.read_text().splitlines() if "sil/policy" in line]
    assert metrics, "SIL's loss must have run"
