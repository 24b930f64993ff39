"""Frame skip, reward modes and episode statistics on the real emulator."""

from __future__ import annotations

import numpy as np
import pytest

from mario_apo.tasks import make_env, parse_task
from wrappers.episode import EpisodeStats
from wrappers.mario import MarioEnv
from wrappers.reward import DENSE_SCALE, MarioReward
from wrappers.skip import MaxAndSkip

from conftest import RIGHT, hold_right_and_jump


def frame_level_run(reward: str, actions_per_frame: list[int]):
    """Step a frame-level (unskipped) env; return per-frame (obs, reward, terminated, info)."""
    env = MarioReward(MarioEnv("1-1", obs_type="gray"), reward)
    env.reset(seed=0)
    frames = []
    for action in actions_per_frame:
        obs, reward_, terminated, truncated, info = env.step(action)
        frames.append((obs, reward_, terminated, info))
        if terminated or truncated:
            break
    env.close()
    return frames


@pytest.mark.slow
def test_skip_reward_is_sum_of_frame_rewards_and_obs_is_max_of_last_two():
    skip = 4
    agent_actions = [hold_right_and_jump(t) for t in range(60)]
    frames = frame_level_run("dense", [a for a in agent_actions for _ in range(skip)])
    env = MaxAndSkip(MarioReward(MarioEnv("1-1", obs_type="gray"), "dense"), skip)
    env.reset(seed=0)
    for t, action in enumerate(agent_actions):
        obs, reward, terminated, _, _ = env.step(action)
        chunk = frames[t * skip : (t + 1) * skip]
        assert reward == pytest.approx(sum(f[1] for f in chunk))
        pooled = chunk[-1][0] if len(chunk) == 1 else np.maximum(chunk[-2][0], chunk[-1][0])
        np.testing.assert_array_equal(obs, pooled)
        assert terminated == chunk[-1][2]
        if terminated:
            break
    assert t >= 30, "the scripted run should last a while before the first goomba"
    # the run made progress, so the rewards compared above were not all zero
    assert sum(f[1] for f in frames[:40]) > 20 * DENSE_SCALE


@pytest.mark.slow
def test_episode_ending_inside_a_skip_returns_the_real_last_frames():
    """goal:X ends on the exact frame x reaches X; pick X so that is the 2nd frame of a skip."""
    skip = 4
    agent_actions = [RIGHT] * 200
    per_frame = [a for a in agent_actions for _ in range(skip)]
    free_run = frame_level_run("dense", per_frame)
    xs = [f[3]["x_pos"] for f in free_run]
    # the first frame index i with i % skip == 1 where x strictly grew: set the goal there
    end = next(i for i in range(skip, len(xs)) if i % skip == 1 and xs[i] > xs[i - 1])
    goal_x = xs[end]
    frames = frame_level_run(f"goal:{goal_x}", per_frame)
    assert len(frames) == end + 1 and frames[-1][2], "the goal must end the episode on frame `end`"

    env = MaxAndSkip(MarioReward(MarioEnv("1-1", obs_type="gray"), f"goal:{goal_x}"), skip)
    env.reset(seed=0)
    for t, action in enumerate(agent_actions):  # noqa: B007 (t is the step the goal ended, read below)
        obs, reward, terminated, _, info = env.step(action)
        if terminated:
            break
    assert t == end // skip
    # the two frames emulated in the final step, not frames left over from the step before
    np.testing.assert_array_equal(obs, np.maximum(frames[end - 1][0], frames[end][0]))
    assert reward == 1.0 and info["success"]


@pytest.mark.slow
def test_observations_are_uint8_stacks_of_84x84(mario_1_1, env_cfg):
    env = make_env(mario_1_1, env_cfg)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.shape == (4, 84, 84)
    obs, *_ = env.step(RIGHT)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert obs.max() > obs.min()  # a real picture, not a blank buffer
    env.close()


@pytest.mark.slow
def test_full_colour_screen_is_a_fresh_copy():
    env = MarioEnv("1-1")
    first, _ = env.reset(seed=0)
    assert first.shape == (240, 256, 3) and first.dtype == np.uint8
    kept = first.copy()
    for _ in range(30):
        later, *_ = env.step(RIGHT)
    # nes-py reuses one buffer: the first frame must not have changed under us
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, later)
    np.testing.assert_array_equal(env.render(), later)
    env.close()


@pytest.mark.slow
def test_same_actions_from_reset_give_identical_frames_and_x(mario_1_1, env_cfg):
    rng = np.random.default_rng(7)
    actions = rng.integers(0, 7, size=150)

    def run():
        env = make_env(mario_1_1, env_cfg)
        obs, _ = env.reset(seed=123)
        trace = [(obs, 40)]
        for action in actions:
            obs, _, terminated, truncated, info = env.step(action)
            trace.append((obs, info["x_pos"]))
            if terminated or truncated:
                break
        env.close()
        return trace

    first, second = run(), run()
    assert len(first) == len(second)
    for (obs_a, x_a), (obs_b, x_b) in zip(first, second, strict=True):
        np.testing.assert_array_equal(obs_a, obs_b)
        assert x_a == x_b


@pytest.mark.slow
def test_goal_reached_by_scripted_run_is_a_success(env_cfg):
    env = make_env(parse_task("mario:1-1:goal:300"), env_cfg)
    env.reset(seed=0)
    for t in range(300):
        _, reward, terminated, truncated, info = env.step(hold_right_and_jump(t))
        if terminated or truncated:
            break
    episode = info["episode"]
    assert terminated and episode["success"] and reward == 1.0
    assert episode["r"] == 1.0 and episode["max_x"] >= 300 and episode["l"] == t + 1
    assert episode["level"] == "mario:1-1:goal:300"
    env.close()


@pytest.mark.slow
def test_sparse_reward_is_zero_without_the_flag_and_life_loss_ends_the_episode(env_cfg):
    env = make_env(parse_task("mario:1-1:sparse"), env_cfg)
    env.reset(seed=0)
    total = 0.0
    for _ in range(1000):  # holding right walks into the first goomba
        _, reward, terminated, truncated, info = env.step(RIGHT)
        total += reward
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert total == 0.0 and not info["episode"]["success"]
    env.close()


@pytest.mark.slow
def test_step_limit_truncates(env_cfg):
    env_cfg.max_episode_steps = 5
    env = make_env(parse_task("mario:1-1"), env_cfg)
    env.reset(seed=0)
    for _ in range(5):
        *_, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and info["episode"]["l"] == 5
    env.close()


def test_classic_tasks_report_success(env_cfg):
    car = make_env(parse_task("mountaincar"), env_cfg)
    obs, _ = car.reset(seed=0)
    for _ in range(200):  # pump energy: push in the direction of motion
        obs, _, terminated, truncated, info = car.step(2 if obs[1] >= 0 else 0)
        if terminated or truncated:
            break
    assert terminated and info["episode"]["success"]

    pole = make_env(parse_task("cartpole"), env_cfg)
    pole.reset(seed=0)
    for _ in range(500):
        *_, terminated, truncated, info = pole.step(0)  # always push left: falls at once
        if terminated or truncated:
            break
    assert not info["episode"]["success"] and info["episode"]["r"] < 475


@pytest.mark.slow
def test_episode_stats_wrapper_reports_only_at_the_end(env_cfg):
    env = EpisodeStats(MarioReward(MarioEnv("1-1", obs_type="gray"), "dense"), "x")
    env.reset(seed=0)
    _, _, _, _, info = env.step(RIGHT)
    assert "episode" not in info
    env.close()
