"""Observation and reward normalisation against numpy and Stable-Baselines3's VecNormalize arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from mario_apo.normalize import CLIP, EPSILON, Normalizer, RunningMeanStd


def test_running_mean_std_of_batches_is_the_mean_and_variance_of_all_of_them():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 16, 40)]
    rms = RunningMeanStd((4,))
    for batch in batches:
        rms.update(batch)
    everything = np.concatenate(batches)
    # up to the starting pseudo-count of 1e-4 observations (SB3's), ~1e-6 of 64
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-5)


def test_normalizer_matches_stable_baselines3_vecnormalize_step_by_step():
    sb3 = pytest.importorskip("stable_baselines3.common.running_mean_std", reason="SB3 is the bench extra")
    rng = np.random.default_rng(1)
    gamma, num_envs = 0.99, 3
    ours = Normalizer((2,), num_envs, gamma, norm_obs=True, norm_reward=True)
    obs_rms, ret_rms, returns = sb3.RunningMeanStd(shape=(2,)), sb3.RunningMeanStd(shape=()), np.zeros(num_envs)
    for _ in range(50):
        obs, rewards = rng.normal(5, 3, size=(num_envs, 2)), rng.normal(0, 10, size=num_envs)
        ended = rng.random(num_envs) < 0.1
        # VecNormalize.step_wait: update and normalise obs, then the rewards from the running return
        obs_rms.update(obs)
        expected_obs = np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + EPSILON), -CLIP, CLIP)
        returns = returns * gamma + rewards
        ret_rms.update(returns)
        expected_rewards = np.clip(rewards / np.sqrt(ret_rms.var + EPSILON), -CLIP, CLIP)
        returns[ended] = 0
        ours.observe(obs)
        np.testing.assert_allclose(ours.obs(obs), expected_obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours.reward(rewards, ended, slice(0, num_envs)), expected_rewards, rtol=1e-10)


def test_off_is_the_identity_and_the_state_round_trips():
    off = Normalizer((2,), 2, 0.99, norm_obs=False, norm_reward=False)
    obs, rewards = np.arange(4.0).reshape(2, 2), np.array([1.0, -2.0])
    off.observe(obs)
    assert off.obs(obs) is obs and off.reward(rewards, np.array([False, True]), slice(0, 2)) is rewards
    on = Normalizer((2,), 2, 0.99, norm_obs=True, norm_reward=True)
    on.observe(obs)
    on.reward(rewards, np.array([False, False]), slice(0, 2))
    copy = Normalizer((2,), 2, 0.99, norm_obs=True, norm_reward=True)
    copy.load_state_dict(on.state_dict())
    np.testing.assert_array_equal(copy.obs(obs), on.obs(obs))


@pytest.mark.slow
def test_a_mountaincar_run_normalises_saves_its_statistics_and_anchors_stay_raw(tmp_path, capsys):
    from mario_apo.checkpoint import load_checkpoint
    from mario_apo.cli import main

    from conftest import metric_steps, run_train

    made = run_train(tmp_path, "--name mc --algo apo --task mountaincar --total-steps 4096 --checkpoint-every 4")
    assert made.returncode == 0, made.stderr
    run_dir = tmp_path / "mc"
    state = load_checkpoint(run_dir / "checkpoint.pt")
    stats = state["normalizer"]["obs"]
    assert stats["count"] > 4096 and -1.2 < float(stats["mean"][0]) < 0.6  # positions, seen raw
    frames = np.concatenate([np.asarray(a["frames"]) for a in state["anchors"]["anchors"]])
    assert frames[:, 0].min() >= -1.2 and frames[:, 0].max() <= 0.6 and np.abs(frames[:, 1]).max() <= 0.07
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0  # with the saved statistics
    capsys.readouterr()
    resumed = run_train(tmp_path, f"--resume {run_dir} --total-steps 5120")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "checkpoint.pt")["normalizer"]["obs"]["count"] > stats["count"]  # continued
    assert metric_steps(run_dir)[-1] == 5120


def test_observation_normalisation_is_refused_for_mario_frames(tmp_path, capsys):
    from mario_apo.cli import main

    from conftest import assert_one_line_error

    assert main(["train", "--level", "1-1", "--norm-obs", "--run-dir", str(tmp_path / "runs")]) == 2
    assert_one_line_error(capsys.readouterr().err, "--norm-obs standardises vector observations")
    assert not (tmp_path / "runs").exists()
