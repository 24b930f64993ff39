"""The anchor buffer and the anchor KL: admission, eviction, whole episodes, KL values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mario_apo.anchors import AnchorBuffer, Anchoring, anchor_kl
from mario_apo.config import AnchorConfig, RunConfig
from mario_apo.episodes import EpisodeEnd
from mario_apo.runs import create_run
from mario_apo.tasks import make_env, parse_task
from mario_apo.train import train
from models.actor_critic import make_model

from conftest import hold_right_and_jump


def test_forward_and_reverse_kl_match_torch_distributions():
    torch.manual_seed(0)
    best_logits, logits = torch.randn(32, 7), torch.randn(32, 7)
    best_logprobs = torch.log_softmax(best_logits, -1)
    p_best = torch.distributions.Categorical(logits=best_logits)
    pi = torch.distributions.Categorical(logits=logits)
    forward = torch.distributions.kl_divergence(p_best, pi).mean()
    reverse = torch.distributions.kl_divergence(pi, p_best).mean()
    torch.testing.assert_close(anchor_kl(best_logprobs, logits, "forward"), forward)
    torch.testing.assert_close(anchor_kl(best_logprobs, logits, "reverse"), reverse)
    assert not torch.isclose(forward, reverse)  # the direction matters on these inputs
    assert anchor_kl(best_logprobs, best_logits, "forward").item() == pytest.approx(0.0, abs=1e-6)


def test_forward_kl_gradient_pulls_pi_toward_p_best():
    best_logprobs = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    logits = torch.zeros(1, 3, requires_grad=True)
    for _ in range(200):
        loss = anchor_kl(best_logprobs, logits)
        loss.backward()
        with torch.no_grad():
            logits -= 1.0 * logits.grad
        logits.grad = None
    torch.testing.assert_close(torch.softmax(logits, -1), best_logprobs.exp(), atol=1e-3, rtol=0)


def feed_episode(buffer: AnchorBuffer, env: int, length: int, ret: float, success: bool = False, update: int = 0):
    """Record a synthetic episode of ``length`` steps on ``env`` as one rollout (vector obs), its return
    paid at the last step; the other envs idle in long episodes of their own."""
    num_envs = len(buffer.recorder.open)
    obs = np.broadcast_to(np.arange(length, dtype=np.float32)[:, None, None], (length, num_envs, 3))
    logprobs = np.log(np.full((length, num_envs, 2), 0.5, dtype=np.float32))
    actions = np.zeros((length, num_envs), dtype=np.int64)
    rewards = np.zeros((length, num_envs))
    rewards[-1, env] = ret
    ended = [EpisodeEnd(length - 1, env, ret, length, success, max_x=0)]
    return buffer.record_rollout(obs, logprobs, actions, rewards, ended, update)


def test_top_k_admission_keeps_the_best_and_the_first_of_ties():
    # return + older: the rule of every result before 0.3
    cfg = AnchorConfig(anchors=2, anchor_rank="return", anchor_ties="older")
    buffer = AnchorBuffer(cfg, num_envs=1, frame_stack=None, rng=np.random.default_rng(0), gamma=0.99)
    for ret in (1.0, 5.0, 3.0, 2.0):
        feed_episode(buffer, 0, 4, ret)
    assert [a.episode_return for a in buffer.anchors] == [5.0, 3.0]
    first_three = buffer.anchors[1].episode_id
    assert feed_episode(buffer, 0, 4, 3.0) == []  # a tie with the worst does not displace it
    assert buffer.anchors[1].episode_id == first_three
    assert buffer.metrics(update=0)["anchor/count"] == 2


@pytest.mark.parametrize("ties, kept", [("older", [1, 2]), ("newer", [3, 4])])
def test_equal_successes_keep_the_older_or_the_newer_as_configured(ties, kept):
    buffer = AnchorBuffer(
        AnchorConfig(anchors=2, anchor_ties=ties),
        num_envs=1,
        frame_stack=None,
        rng=np.random.default_rng(0),
        gamma=0.99,
    )
    for _ in range(4):  # four successes of equal return (0/1 rewards)
        feed_episode(buffer, 0, 10, 1.0, success=True)
    assert sorted(a.episode_id for a in buffer.anchors) == kept


def test_discounted_rank_prefers_the_faster_success_and_keeps_return_order_otherwise():
    cfg = AnchorConfig(anchors=1, anchor_rank="discounted")
    buffer = AnchorBuffer(cfg, num_envs=1, frame_stack=None, rng=np.random.default_rng(0), gamma=0.99)
    feed_episode(buffer, 0, 40, 1.0, success=True)
    feed_episode(buffer, 0, 25, 1.0, success=True)  # the same return, reached sooner
    feed_episode(buffer, 0, 30, 1.0, success=True)
    assert [a.length for a in buffer.anchors] == [25]
    legacy = AnchorConfig(anchors=1, anchor_rank="return", anchor_ties="older")
    by_return = AnchorBuffer(legacy, num_envs=1, frame_stack=None, rng=np.random.default_rng(0), gamma=0.99)
    for length in (40, 25, 30):
        feed_episode(by_return, 0, length, 1.0, success=True)
    assert [a.length for a in by_return.anchors] == [40]  # return + older: the first success stays (0.2's rule)


def test_anchor_metrics_show_the_anchors_own_entropy_length_and_successes():
    buffer = AnchorBuffer(
        AnchorConfig(anchors=3), num_envs=1, frame_stack=None, rng=np.random.default_rng(0), gamma=0.99
    )
    feed_episode(buffer, 0, 10, 1.0, success=True)
    feed_episode(buffer, 0, 30, 0.5)
    metrics = buffer.metrics(update=0)
    assert metrics["anchor/p_best_entropy"] == pytest.approx(np.log(2))  # uniform over 2 actions
    assert metrics["anchor/mean_length"] == 20 and metrics["anchor/success_count"] == 1


def test_success_admission_rejects_failed_episodes():
    buffer = AnchorBuffer(
        AnchorConfig(anchors=4, anchor_admit="success"),
        num_envs=1,
        frame_stack=None,
        rng=np.random.default_rng(0),
        gamma=0.99,
    )
    feed_episode(buffer, 0, 3, 10.0, success=False)
    feed_episode(buffer, 0, 3, 1.0, success=True)
    assert [(a.episode_return, a.success) for a in buffer.anchors] == [(1.0, True)]


def test_memory_cap_evicts_the_worst():
    # one 100-step episode: 100 x (3 obs + 2 logprobs) x 4 B + 100 x 8 B actions = 2,800 B
    cap_mb = 2.5 * 2800 / 2**20
    buffer = AnchorBuffer(
        AnchorConfig(anchors=8, anchor_max_mb=cap_mb),
        num_envs=1,
        frame_stack=None,
        rng=np.random.default_rng(0),
        gamma=0.99,
    )
    for ret in (1.0, 4.0, 2.0, 3.0):
        feed_episode(buffer, 0, 100, ret)
    assert [a.episode_return for a in buffer.anchors] == [4.0, 3.0]
    assert buffer.nbytes <= cap_mb * 2**20


def test_episodes_are_recorded_per_env_and_whole_across_rollouts():
    buffer = AnchorBuffer(
        AnchorConfig(anchors=4), num_envs=2, frame_stack=None, rng=np.random.default_rng(0), gamma=0.99
    )
    logprobs = np.log(np.full((4, 2, 2), 0.5, np.float32))
    # three 4-step rollouts; env 1's episode ends at step 1 of the third (10 steps in all), env 0 never ends
    for update in range(3):
        t = np.arange(4 * update, 4 * update + 4, dtype=np.float32)
        obs = np.broadcast_to(t[:, None, None], (4, 2, 3)).copy()
        actions = np.stack([np.zeros(4), t % 2], axis=1).astype(np.int64)
        ended = (
            [EpisodeEnd(step=1, env=1, episode_return=7.0, length=10, success=False, max_x=0)] if update == 2 else []
        )
        buffer.record_rollout(obs, logprobs, actions, np.zeros((4, 2)), ended, update)
    (anchor,) = buffer.anchors
    assert anchor.length == 10 and anchor.actions.tolist() == [t % 2 for t in range(10)]
    np.testing.assert_array_equal(anchor.frames[:, 0], np.arange(10))
    # env 1's next episode starts at step 2 of that rollout
    assert (
        sum(len(chunk[2]) for chunk in buffer.recorder.open[1]) == 2
        and sum(len(c[2]) for c in buffer.recorder.open[0]) == 12
    )


@pytest.mark.slow
def test_stored_frames_restack_to_the_observations_seen(env_cfg):
    env = make_env(parse_task("mario:1-1"), env_cfg)
    obs, _ = env.reset(seed=0)
    seen = []
    buffer = AnchorBuffer(AnchorConfig(anchors=1), num_envs=1, frame_stack=4, rng=np.random.default_rng(0), gamma=0.99)
    logprobs = np.log(np.full((12, 1, 7), 1 / 7, np.float32))
    actions = np.array([[hold_right_and_jump(t)] for t in range(12)])
    for t in range(12):
        seen.append(obs)
        obs, _, _, _, _ = env.step(int(actions[t, 0]))
    env.close()
    ended = [EpisodeEnd(step=11, env=0, episode_return=1.0, length=12, success=False, max_x=0)]
    buffer.record_rollout(np.stack(seen)[:, None], logprobs, actions, np.zeros((12, 1)), ended, update=0)
    anchor = buffer.anchors[0]
    assert anchor.frames.shape == (12, 84, 84)  # the newest frame only
    np.testing.assert_array_equal(buffer.stacked_obs(anchor, np.arange(12)), np.stack(seen))
    sampled, sampled_logprobs, sampled_actions = buffer.sample(16)
    assert sampled.shape == (16, 4, 84, 84) and sampled_logprobs.shape == (16, 7) and sampled_actions.shape == (16,)


@pytest.mark.slow
def test_mario_apo_run_admits_episodes_longer_than_a_rollout(tiny_config):
    """Real Mario, 2 envs x 16 steps per rollout: anchors are whole episodes of up to hundreds of steps."""
    cfg = tiny_config(task="mario:1-1", seed=3, num_steps=16, total_steps=640, anchors=3)
    run_dir = create_run(cfg)
    train(cfg, run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    anchors = state["anchors"]["anchors"]
    assert anchors, "some episode must have ended in 640 steps"
    ppo = cfg.ppo
    episodes = [json.loads(line) for line in (run_dir / "metrics.jsonl").open() if "charts/episodic_length" in line]
    lengths = {e["charts/episode"]: e["charts/episodic_length"] for e in episodes}
    for anchor in anchors:
        assert anchor["actions"].shape[0] == lengths[anchor["episode_id"]]
    assert max(len(a["actions"]) for a in anchors) > ppo.num_steps
    returns = sorted((e["charts/episodic_return"] for e in episodes), reverse=True)
    assert [a["episode_return"] for a in anchors] == pytest.approx(returns[: len(anchors)])


@pytest.mark.slow
def test_the_trainer_records_each_anchors_discounted_return(tiny_config):
    """CartPole pays 1 per step, so an episode of L steps has discounted return (1 - gamma^L) / (1 - gamma)."""
    cfg = tiny_config(task="cartpole", total_steps=1024, wandb="disabled")
    run_dir = create_run(cfg)
    train(cfg, run_dir)
    gamma = cfg.ppo.gamma
    for anchor in json.loads((run_dir / "anchors.json").read_text())["anchors"]:
        expected = (1 - gamma ** anchor["length"]) / (1 - gamma)
        assert anchor["discounted_return"] == pytest.approx(expected, rel=1e-6) and anchor["return"] == anchor["length"]


@pytest.mark.slow
def test_with_newer_ties_a_goal_run_keeps_replacing_its_anchors(tiny_config):
    """goal:X pays 0/1: with older ties the first K successes would stay forever; with newer ones
    later successes replace them, so the anchors follow the policy."""
    no_final_eval = dict(final_eval_episodes=0, final_eval_greedy=0)  # the anchors are what is checked
    cfg = tiny_config(
        task="mario:1-1:goal:300", total_steps=1024, anchors=2, anchor_ties="newer", wandb="disabled", **no_final_eval
    )
    run_dir = create_run(cfg)
    train(cfg, run_dir)
    anchors = json.loads((run_dir / "anchors.json").read_text())["anchors"]
    assert len(anchors) == 2 and all(a["success"] for a in anchors)
    assert min(a["admitted_update"] for a in anchors) > 1
    updates = [json.loads(line) for line in (run_dir / "metrics.jsonl").open() if "anchor/admitted" in line]
    assert sum(u["anchor/admitted"] for u in updates) > 2  # more admitted than kept: some were replaced


def test_runs_recorded_before_the_ranking_options_resume_with_the_rule_they_used(tmp_path):
    from mario_apo.config import RunConfig
    from mario_apo.runs import create_run, load_run_config

    cfg = RunConfig(algo="apo", task="cartpole")
    cfg.log.run_dir = str(tmp_path)
    run_dir = create_run(cfg)
    record = json.loads((run_dir / "config.json").read_text())
    assert (record["anchor"]["anchor_rank"], record["anchor"]["anchor_ties"]) == ("discounted", "newer")  # today's
    del record["anchor"]["anchor_rank"], record["anchor"]["anchor_ties"]  # as a 0.2 run wrote it
    (run_dir / "config.json").write_text(json.dumps(record))
    anchor = load_run_config(run_dir).anchor
    assert (anchor.anchor_rank, anchor.anchor_ties) == ("return", "older")


@pytest.mark.parametrize("target", ["recorded", "taken"])
def test_the_anchor_target_is_p_best_or_the_taken_action(target):
    """One anchored CartPole episode, every step in the same state: the term is KL(p_best || pi) there
    (recorded), or -log pi(a_t|s_t) of the action taken (taken), whatever states are sampled."""
    cfg = RunConfig.for_task("cartpole", "apo", num_envs=1, anchors=1, beta=0.5, anchor_target=target)
    task = parse_task("cartpole")
    anchoring = Anchoring(cfg, task, np.random.default_rng(0), lambda obs: obs)
    state = np.array([0.1, -0.2, 0.03, 0.4], np.float32)
    p_best = np.log(np.array([[0.3, 0.7]], np.float32))
    anchoring.buffer.record_rollout(
        np.broadcast_to(state, (6, 1, 4)),
        np.broadcast_to(p_best, (6, 1, 2)),
        np.ones((6, 1), np.int64),  # action 1 at every step
        np.ones((6, 1)),
        [EpisodeEnd(step=5, env=0, episode_return=6.0, length=6, success=False, max_x=0)],
        update=1,
    )
    env = make_env(task, cfg.env)
    model = make_model(env.observation_space, env.action_space)
    env.close()
    terms = {}
    loss = anchoring.loss(model, terms)
    logprobs = torch.log_softmax(model(torch.from_numpy(state[None]))[0], -1)[0].detach()
    if target == "taken":
        expected = -logprobs[1]
    else:
        expected = (torch.from_numpy(p_best[0]).exp() * (torch.from_numpy(p_best[0]) - logprobs)).sum()
    assert terms["anchor/kl"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
