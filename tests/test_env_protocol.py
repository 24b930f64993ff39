"""The benchmark's env protocol: sticky actions, stall truncation, seed streams, gymnasium ids."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from mario_apo.config import EnvConfig
from mario_apo.seeding import SeedStreams
from mario_apo.tasks import make_env, parse_task
from wrappers.mario import MarioEnv
from wrappers.sticky import StickyActions

from conftest import hold_right_and_jump


def play(env: gym.Env, seed: int | None, steps: int = 150, options: dict | None = None):
    """Scripted actions from ``reset(seed)``: the newest frames, x-positions and the reset info."""
    obs, info = env.reset(seed=seed, options=options)
    frames, xs, reset_info = [obs[-1].copy()], [], info
    for t in range(steps):
        obs, _, terminated, truncated, info = env.step(hold_right_and_jump(t))
        frames.append(obs[-1].copy())
        xs.append(info["x_pos"])
        if terminated or truncated:
            break
    return np.stack(frames), xs, reset_info


@pytest.mark.slow
def test_sticky_actions_same_seed_same_episode_other_seed_other_episode(mario_1_1):
    env = make_env(mario_1_1, EnvConfig(sticky_actions=0.25))
    first, xs_first, info = play(env, seed=5)
    again, xs_again, _ = play(env, seed=5)
    other, xs_other, _ = play(env, seed=6)
    # the episode's own seed replays it without the env seed
    replayed, xs_replayed, _ = play(env, seed=None, options={"sticky_seed": info["sticky_seed"]})
    env.close()
    assert np.array_equal(first, again) and xs_first == xs_again
    assert np.array_equal(first, replayed) and xs_first == xs_replayed
    assert xs_first != xs_other


@pytest.mark.slow
def test_sticky_probability_0_is_the_deterministic_env_bit_for_bit():
    plain, sticky = MarioEnv("1-1", obs_type="gray"), StickyActions(MarioEnv("1-1", obs_type="gray"), 0.0)
    for env in (plain, sticky):
        env.reset(seed=3)
    for t in range(300):
        a, b = plain.step(hold_right_and_jump(t // 4)), sticky.step(hold_right_and_jump(t // 4))
        assert np.array_equal(a[0], b[0]) and a[1:4] == b[1:4] and a[4]["x_pos"] == b[4]["x_pos"]
    plain.close(), sticky.close()
    # and make_env with p = 0 adds no wrapper at all: today's env
    env = make_env(parse_task("mario:1-1"), EnvConfig(sticky_actions=0.0))
    with pytest.raises(AttributeError):
        env.get_wrapper_attr("p")
    env.close()


@pytest.mark.slow
def test_stall_truncation_truncates_without_terminating():
    env = make_env(parse_task("mario:1-1:goal:3000"), EnvConfig(sticky_actions=0.0, stall_steps=10))
    env.reset(seed=0)
    terminated = truncated = False
    steps = 0
    while not (terminated or truncated) and steps < 100:
        _, _, terminated, truncated, info = env.step(0)  # NOOP: Mario stands still
        steps += 1
    env.close()
    assert steps == 10 and truncated and not terminated and info["stalled"]
    assert info["episode"]["l"] == 10 and not info["episode"]["success"]


@pytest.mark.slow
def test_the_trainer_bootstraps_stall_truncated_episodes(tiny_config):
    """goal:X pays 0 unless the goal is reached, so the stored reward of a failed episode's last step is
    0 when it terminated (a life lost) and gamma * V(final observation) != 0 when it was truncated."""
    from mario_apo.runs import create_run
    from mario_apo.train import Trainer

    cfg = tiny_config(task="mario:1-1:goal:3000", stall_steps=2, num_steps=128, wandb="disabled")
    trainer = Trainer(cfg, create_run(cfg), resume=False)
    try:
        trainer.collect_rollout()
    finally:
        trainer.close()
    ends = trainer.rollout.episodes
    truncated = [e for e in ends if e.truncated]
    assert truncated, "Mario stands still for 2 steps often enough under a random policy"
    for end in ends:
        reward = trainer.rollout.rewards[end.step, end.env].item()
        assert (reward != 0.0) if end.truncated else (reward == 0.0), end


def test_no_seed_stream_is_shared_between_runs_or_across_a_resume():
    runs = [SeedStreams(seed) for seed in (1, 2, 3)]
    env_seeds = [set(streams.env_seeds(8)) for streams in runs]
    assert all(len(seeds) == 8 for seeds in env_seeds)
    assert not (env_seeds[0] & env_seeds[1]) and not (env_seeds[1] & env_seeds[2])
    assert not set(runs[0].env_seeds(8, start_update=40)) & env_seeds[0]  # a resumed run's envs start afresh
    assert len({runs[0].torch, runs[1].torch, runs[0].numpy, runs[0].eval_seed(1), runs[0].eval_seed(2)}) == 5
    assert SeedStreams(1).env_seeds(8) == runs[0].env_seeds(8)  # and all of it reproducible
    a, b = runs[0].anchors(), runs[1].anchors()
    assert a.integers(2**62) != b.integers(2**62)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_gymnasium_id_makes_the_training_env_and_passes_check_env():
    from gymnasium.utils.env_checker import check_env

    import mario_apo  # noqa: F401  (registers the ids)

    env = gym.make("mario_apo/SuperMario-v0", level="1-1", reward="goal:1000", sticky_actions=0.25)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and "sticky_seed" in info
    assert env.get_wrapper_attr("p") == 0.25
    check_env(env.unwrapped)
    env.close()
    envs = gym.make_vec("mario_apo/SuperMario-v0", num_envs=2, vectorization_mode="sync", level="4-1")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84)
    envs.close()


@pytest.mark.slow
def test_stable_baselines3_trains_on_the_gymnasium_id():
    pytest.importorskip("stable_baselines3", reason="the bench extra (pip install -e '.[bench]') has SB3")
    from stable_baselines3 import PPO

    import mario_apo  # noqa: F401

    env = gym.make("mario_apo/SuperMario-v0", level="1-1", reward="goal:300")
    model = PPO("CnnPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    action, _ = model.predict(env.reset(seed=1)[0])
    assert env.action_space.contains(int(action))
    # bench parity judges SB3's Mario policy with our evaluation code: through SB3Policy it gives the
    # action probabilities and values SB3 gives the same uint8 frames on its own path (one /255 on
    # either), and plays episodes
    from mario_apo.bench_sb3 import SB3Policy
    from mario_apo.evaluate import evaluate

    frames = [env.reset(seed=1)[0]]
    for action in (1, 2, 2, 3, 1, 4) * 4:  # a few different screens
        frames.append(env.step(action)[0])
    env.close()
    obs, policy = np.stack(frames[::4]), SB3Policy(model.policy)
    with torch.inference_mode():
        logits, values = policy(torch.as_tensor(obs))
        assert logits.shape == (len(obs), env.action_space.n) and values.shape == (len(obs),)
        own = model.policy.obs_to_tensor(obs)[0]  # SB3's own conversion: a uint8 tensor
        torch.testing.assert_close(logits.softmax(-1), model.policy.get_distribution(own).distribution.probs)
        torch.testing.assert_close(values, model.policy.predict_values(own).squeeze(-1))
    played = evaluate(policy, parse_task("mario:1-1:goal:300"), EnvConfig(max_episode_steps=200), 2, greedy=False)
    assert played["episodes"] == 2 and played["mean_max_x"] > 40


@pytest.mark.parametrize("settings, valid", [({"sticky_actions": 1.5}, "[0, 1)"), ({"stall_steps": -1}, ">= 0")])
def test_bad_env_settings_name_what_is_valid(settings, valid):
    from mario_apo.errors import TaskError

    with pytest.raises(TaskError, match=valid.replace("[", r"\[").replace(")", r"\)")):
        EnvConfig(**settings).validate()


def test_configs_recorded_before_sticky_actions_load_as_the_deterministic_env():
    legacy = {"action_set": "simple", "frame_skip": 4, "frame_stack": 4, "max_episode_steps": 2000}
    cfg = EnvConfig.from_record(legacy)
    assert cfg.sticky_actions == 0.0 and cfg.stall_steps == 0
    assert EnvConfig().sticky_actions == 0.25  # new runs are sticky by default
