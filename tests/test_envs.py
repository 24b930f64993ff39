"""The emulator loads, the env passes gymnasium's checker, vector envs autoreset in the same step."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from mario_apo.errors import TaskError
from mario_apo.tasks import make_env, make_vec_env, parse_task
from wrappers.mario import LEVELS, MarioEnv

from conftest import RIGHT, hold_right_and_jump


@pytest.mark.slow
def test_numpy_below_2_and_real_emulator_loads():
    # nes-py 8.2.1's ROM parser overflows under numpy 2; this builds the real NES.
    assert int(np.__version__.split(".")[0]) < 2
    env = MarioEnv("1-1")
    obs, info = env.reset(seed=0)
    assert info["world"] == 1 and info["stage"] == 1 and info["x_pos"] == 40
    assert obs.std() > 0
    env.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*not having a spec")
def test_gymnasium_env_checker_passes():
    env = MarioEnv("1-1")
    check_env(env, skip_render_check=False)
    env.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")
def test_wrapped_env_passes_env_checker(mario_1_1, env_cfg):
    env = make_env(mario_1_1, env_cfg)
    check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("level", ["1-1", "4-2", "8-4"])
def test_levels_start_where_named(level):
    env = MarioEnv(level)
    _, info = env.reset()
    assert f"{info['world']}-{info['stage']}" == level
    env.close()


@pytest.mark.slow
def test_all_32_levels_and_action_sets_are_named():
    assert len(LEVELS) == 32
    for actions, n in [("right", 5), ("simple", 7), ("complex", 12)]:
        env = MarioEnv("1-1", actions)
        assert env.action_space.n == n
        env.close()


def test_task_strings_parse_to_canonical_names():
    assert parse_task("mario:1-1").name == "mario:1-1:dense"
    assert parse_task("mario:1-1:goal:1000").reward == "goal:1000"
    assert parse_task("mario:4-2:sparse").level == "4-2"
    assert parse_task("cartpole").family == "cartpole"


@pytest.mark.parametrize(
    "spec, valid",
    [
        ("mario:9-9", "valid levels"),
        ("mario:1-5", "valid levels"),
        ("mario:1-1:goal:-5", "valid modes"),
        ("mario:1-1:goal:abc", "valid modes"),
        ("mario:1-1:shaped", "valid modes"),
        ("pong", "valid tasks"),
        ("mario", "valid tasks"),
    ],
)
def test_bad_task_strings_name_what_is_valid(spec, valid):
    with pytest.raises(TaskError, match=valid):
        parse_task(spec)


@pytest.mark.slow
def test_vector_env_steps_and_autoresets_in_the_same_step(env_cfg):
    task = parse_task("mario:1-1:goal:250")
    envs = make_vec_env(task, env_cfg, 2)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        reset_obs = obs[0].copy()
        for t in range(200):
            # env 0 runs for the goal, env 1 stands still
            obs, rewards, terminated, truncated, infos = envs.step(np.array([hold_right_and_jump(t), 0]))
            if terminated[0]:
                break
        assert terminated[0] and not terminated[1] and rewards[0] == 1.0
        # SAME_STEP: the returned obs is already the next episode's first one,
        # the true last obs and the episode stats are under final_*.
        np.testing.assert_array_equal(obs[0], reset_obs)
        assert infos["_final_obs"][0] and not infos["_final_obs"][1]
        assert not np.array_equal(infos["final_obs"][0], reset_obs)
        episode = infos["final_info"]["episode"]
        assert episode["success"][0] and episode["r"][0] == 1.0 and episode["l"][0] == t + 1
        obs, *_ = envs.step(np.array([RIGHT, 0]))  # the next episode goes on normally
        assert obs.shape == (2, 4, 84, 84)
    finally:
        envs.close()


def test_cartpole_vector_env_is_in_process(env_cfg):
    envs = make_vec_env(parse_task("cartpole"), env_cfg, 4)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (4, 4)
    assert type(envs).__name__ == "SyncVectorEnv"
    envs.close()


def test_zero_envs_is_an_error(env_cfg):
    with pytest.raises(TaskError, match="positive integer"):
        make_vec_env(parse_task("cartpole"), env_cfg, 0)
