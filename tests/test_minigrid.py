"""MiniGrid tasks: parsing, the flat view, reproducible layouts, success, calibration and a real run."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

import mario_apo  # noqa: F401  (registers the gymnasium ids)
from mario_apo.cli import main
from mario_apo.config import EnvConfig
from mario_apo.errors import TaskError
from mario_apo.runs import create_run
from mario_apo.tasks import make_env, make_vec_env, parse_task
from mario_apo.train import Trainer

from conftest import tiny_run_config

# MiniGrid's DoorKey actions
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)


def test_minigrid_task_strings_parse_to_canonical_names():
    task = parse_task("minigrid:DoorKey-8x8")
    assert (task.name, task.family, task.level, task.max_steps) == (
        "minigrid:DoorKey-8x8",
        "minigrid",
        "DoorKey-8x8",
        None,
    )
    assert parse_task("minigrid:DoorKey-16x16:max_steps:1000").max_steps == 1000
    assert parse_task("minigrid:Empty-8x8").level == "Empty-8x8"


@pytest.mark.parametrize(
    "spec, valid",
    [
        ("minigrid:DoorKey-7x7", "fixed-mission MiniGrid env"),  # not a registered size
        ("minigrid:KeyCorridorS3R1", "fixed-mission"),  # its mission names a colour: the flat view drops it
        ("minigrid:../x", "fixed-mission"),
        ("minigrid:DoorKey-5x5:max_steps:0", "max_steps:N with N in 1-100000"),
        ("minigrid:DoorKey-5x5:max_steps:x", "max_steps:N"),
        ("minigrid:DoorKey-5x5:steps:10", "max_steps:N"),
        ("minigrid", "valid tasks"),
    ],
)
def test_bad_minigrid_task_strings_name_what_is_valid(spec, valid):
    with pytest.raises(TaskError, match=valid):
        parse_task(spec)


def test_flat_view_and_step_limit():
    env = make_env(parse_task("minigrid:DoorKey-5x5:max_steps:7"), EnvConfig())
    obs, info = env.reset(seed=3)
    assert obs.shape == (147,) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert env.action_space.n == 7 and isinstance(info["layout_seed"], int)
    layout_seed = info["layout_seed"]
    for _ in range(7):
        obs, reward, terminated, truncated, info = env.step(LEFT)  # turning in place never reaches the goal
    assert truncated and not terminated
    assert info["episode"] == {
        "r": 0.0,
        "l": 7,
        "success": False,
        "max_x": 0,
        "level": "minigrid:DoorKey-5x5:max_steps:7",
        "layout_seed": layout_seed,
    }
    env.close()


def _play(env, actions, **reset):
    obs, info = env.reset(**reset)
    trace = [obs.copy()]
    for action in actions:
        obs, *_ = env.step(action)
        trace.append(obs.copy())
    return info["layout_seed"], np.array(trace)


def test_layout_seed_and_actions_replay_an_episode():
    """Later episodes draw their layouts from the stream the first reset seeded; a recorded layout
    seed reproduces one in a fresh env, whatever came before."""
    actions = np.random.default_rng(0).integers(7, size=40).tolist()
    env = make_env(parse_task("minigrid:DoorKey-8x8"), EnvConfig())
    _play(env, actions, seed=11)
    second_seed, second = _play(env, actions)
    fresh = make_env(parse_task("minigrid:DoorKey-8x8"), EnvConfig())
    replayed_seed, replayed = _play(fresh, actions, options={"layout_seed": second_seed})
    assert replayed_seed == second_seed
    np.testing.assert_array_equal(replayed, second)
    other_seed, other = _play(fresh, actions, seed=12)
    assert other_seed != second_seed and not np.array_equal(other[0], second[0])


def test_reaching_the_goal_is_a_success():
    """Solve DoorKey-5x5 by hand from a known layout: the goal pays 1 - 0.9 t / T and counts as success."""
    env = make_env(parse_task("minigrid:DoorKey-5x5"), EnvConfig())
    env.reset(seed=0)
    grid = env.unwrapped
    terminated, steps, info = False, 0, {}
    for target in ("key", "door", "goal"):
        while not terminated:
            ahead = grid.grid.get(*grid.front_pos)
            kind = None if ahead is None else ahead.type
            if target == "key" and kind == "key":
                _, _, terminated, _, info = env.step(PICKUP)
                steps += 1
                break
            if target == "door" and kind == "door":
                _, _, terminated, _, info = env.step(TOGGLE)
                steps += 1
                break
            action = _toward(grid, target)
            _, reward, terminated, _, info = env.step(action)
            steps += 1
    assert terminated and info["episode"]["success"]
    assert info["episode"]["r"] == pytest.approx(1 - 0.9 * steps / grid.max_steps)
    env.close()


def _toward(grid, target: str) -> int:
    """A greedy step toward the nearest cell of type ``target`` (forward when it gets closer, else turn)."""
    cells = [(x, y) for x in range(grid.width) for y in range(grid.height)]
    goal = next((c for c in cells if (o := grid.grid.get(*c)) is not None and o.type == target), None)
    if goal is None:
        raise AssertionError(f"no {target} on the grid")
    distance = lambda c: abs(c[0] - goal[0]) + abs(c[1] - goal[1])  # noqa: E731
    ahead = grid.grid.get(*grid.front_pos)
    passable = ahead is None or ahead.can_overlap() or ahead.type == target
    if passable and distance(tuple(grid.front_pos)) < distance(tuple(grid.agent_pos)):
        return FORWARD
    return RIGHT


def test_the_gymnasium_id_makes_the_training_env():
    env = gymnasium.make("mario_apo/MiniGrid-v0", name="DoorKey-6x6")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (147,)
    env.close()


def test_normalised_uint8_observations_reach_the_policy_as_floats(tmp_path):
    """The rollout keeps the standardised observations the policy acted on as float32 (a uint8 buffer
    would wrap them) and the env's raw uint8 observations beside them."""
    cfg = tiny_run_config(tmp_path, task="minigrid:DoorKey-5x5", algo="ppo", num_envs=2, num_steps=16, total_steps=32)
    assert cfg.ppo.norm_obs
    trainer = Trainer(cfg, create_run(cfg), resume=False)
    try:
        trainer.collect_rollout()
        rollout = trainer.rollout
        assert rollout.obs.dtype == torch.float32 and rollout.raw_obs.dtype == torch.uint8
        assert (rollout.obs < 0).any() and (rollout.obs != rollout.obs.round()).any()  # standardised, not wrapped
        assert (rollout.raw_obs.float() != rollout.obs).any()
    finally:
        trainer.close()


def test_minigrid_vector_env_is_in_process():
    envs = make_vec_env(parse_task("minigrid:DoorKey-5x5"), EnvConfig(), 3)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 147) and type(envs).__name__ == "SyncVectorEnv"
    envs.close()


@pytest.mark.slow
def test_ppo_learns_doorkey_5x5(tmp_path):
    """The zoo's settings solve DoorKey-5x5 in 100k steps (measured: 1.0 sampled and greedy, seed 1);
    30k steps of them already beat the random policy (~0.07) by far in training."""
    cfg = tiny_run_config(tmp_path, task="minigrid:DoorKey-5x5", algo="ppo", total_steps=30_720, seed=1)
    from mario_apo.train import train

    summary = train(cfg, create_run(cfg))
    assert summary["success_rate_100"] >= 0.3, summary


def test_calibrate_a_minigrid_task(tmp_path, capsys):
    main(["calibrate", "--task", "minigrid:DoorKey-5x5:max_steps:60", "--episodes", "40", "--workers", "1",
          "--out", str(tmp_path)])  # fmt: skip
    record = json.loads((tmp_path / "calibration-minigrid-DoorKey-5x5-max_steps-60.json").read_text())
    assert record["task"] == "minigrid:DoorKey-5x5:max_steps:60" and record["episodes"] == 40
    assert record["low"] <= record["rate"] <= record["high"] and record["mean_length"] <= 60
    assert "success" in capsys.readouterr().out


@pytest.mark.slow
def test_minigrid_anchors_replay_verified_and_a_wrong_layout_is_caught(tmp_path, capsys):
    """APO's anchors on MiniGrid carry their layout seeds: replay re-creates every observation of each
    one and writes a video; an anchors.json whose layout seed was changed fails verification."""
    cfg = tiny_run_config(tmp_path, task="minigrid:DoorKey-5x5", algo="apo", total_steps=4096, seed=2, anchors=3)
    from mario_apo.train import train

    run_dir = create_run(cfg)
    train(cfg, run_dir)
    index = json.loads((run_dir / "anchors.json").read_text())
    assert len(index["anchors"]) == 3 and all(isinstance(a["layout_seed"], int) for a in index["anchors"])
    assert main(["replay", str(run_dir), "--episode", "all", "--out", str(tmp_path / "a.gif")]) == 0
    out = capsys.readouterr().out
    assert out.count("verified") == 3 and len(list(tmp_path.glob("a-anchor-*.gif"))) == 3

    index["anchors"][0]["layout_seed"] += 1
    (run_dir / "anchors.json").write_text(json.dumps(index))
    assert main(["replay", str(run_dir), "--out", str(tmp_path / "b.gif")]) == 1
    assert "failed verification" in capsys.readouterr().err and not (tmp_path / "b.gif").exists()


def test_sb3s_side_of_parity_trains_on_minigrids_normalised_view_as_floats(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3", reason="the bench extra (pip install -e '.[bench]') has SB3")
    import tempfile

    from mario_apo.bench_sb3 import sb3_envs, sb3_ppo
    from mario_apo.config import ppo_defaults

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    task = parse_task("minigrid:DoorKey-5x5")
    ppo = ppo_defaults(task.family)
    envs = sb3_envs(task, ppo)
    model = sb3_ppo(task, envs, seed=1)
    model.learn(total_timesteps=ppo.num_envs * ppo.num_steps)  # one rollout and its update
    stored = model.rollout_buffer.observations
    # VecNormalize keeps an integer Box as it is and SB3 sizes its buffer by it: a uint8 buffer held
    # the normalised view truncated (no negative values), and SB3 learned nothing from it
    assert stored.dtype == np.float32 and (stored < 0).any() and not np.array_equal(stored, np.round(stored))
    envs.close()
    # SB3's own logger would have left an empty SB3-<date> folder in the temp dir for every run
    assert not list(tmp_path.glob("SB3-*"))
