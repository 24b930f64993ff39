"""Rarity calibration: the random policy's success curve on the real emulator, its statistics, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mario_apo.calibrate import RandomEpisode, nearest_x, random_episodes, rarity_curve, rung, stalled
from mario_apo.cli import main
from mario_apo.config import EnvConfig
from mario_apo.stats import wilson_interval
from mario_apo.tasks import parse_task

from conftest import assert_one_line_error


def episode(xs: list[int], success: bool = False) -> RandomEpisode:
    return RandomEpisode(success=success, length=len(xs) - 1, x_trace=xs)


def test_wilson_interval_matches_known_values():
    assert wilson_interval(1, 10) == pytest.approx((0.01788, 0.40415), abs=1e-5)
    assert wilson_interval(0, 300) == (0.0, pytest.approx(0.01264, abs=1e-5))
    assert wilson_interval(300, 300)[1] == 1.0


def test_curve_rungs_and_steps_per_success_by_hand():
    episodes = [episode([40, 50, 60, 70]), episode([40, 100, 200, 90, 80]), episode([40, 40, 45])]
    curve = rarity_curve(episodes)
    assert curve["x"] == [45, 70, 200] and curve["rate"] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert all(low <= rate <= high for low, rate, high in zip(curve["low"], curve["rate"], curve["high"], strict=True))
    assert nearest_x(curve, 0.3) == 200 and nearest_x(curve, 0.7) == 70
    # goal:70: episode 1 reaches it at step 3, episode 2 at step 1 (x=100), episode 3 never (2 steps)
    assert rung(episodes, 70) == {
        "x": 70, "successes": 2, "rate": 2 / 3, "low": pytest.approx(wilson_interval(2, 3)[0]),
        "high": pytest.approx(wilson_interval(2, 3)[1]), "steps_per_success": (3 + 1 + 2) / 2,
    }  # fmt: skip


def test_stall_truncation_after_the_fact_cuts_a_prefix():
    slow = episode([40, 50, 50, 50, 60, 70], success=True)
    cut = stalled(slow, 2)
    assert cut.x_trace == [40, 50, 50, 50] and cut.length == 3 and not cut.success
    assert stalled(slow, 3) == slow  # never 3 steps without progress before its end


@pytest.mark.slow
def test_random_episodes_do_not_depend_on_the_number_of_workers():
    task, cfg = parse_task("mario:1-1:goal:250"), EnvConfig(max_episode_steps=60)
    one = random_episodes(task, cfg, 6, seed=3, workers=1, progress=False)
    two = random_episodes(task, cfg, 6, seed=3, workers=2, progress=False)
    assert one == two and len({tuple(e.x_trace) for e in one}) > 1
    assert all(e.success == (e.max_x >= 250) for e in one)  # the rung's success is the curve at X


@pytest.mark.slow
def test_calibrate_writes_the_curve_rungs_and_plot(tmp_path, capsys):
    out = tmp_path / "calibration"
    argv = ["calibrate", "--level", "1-1", "--episodes", "12", "--max-episode-steps", "80", "--targets", "0.5,0.1"]
    assert main([*argv, "--compare-stall", "20", "--workers", "2", "--out", str(out)]) == 0
    record = json.loads((out / "calibration-1-1.json").read_text())
    assert (out / "calibration-1-1.png").stat().st_size > 1000
    assert (
        record["episodes"] == 12
        and record["env"]["sticky_actions"] == 0.25
        and record["env"]["max_episode_steps"] == 80
    )
    assert [r["target"] for r in record["rungs"]] == [0.5, 0.1]
    rates = np.array(record["curve"]["rate"])
    assert rates[0] == 1.0 and np.all(np.diff(rates) < 0)
    assert set(record["stall_comparison"]) == {"20"} and record["median_length"] <= 80
    assert "goal:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["--episodes", "0"], "positive integer"),
        (["--level", "9-9"], "valid levels"),
        (["--sticky-actions", "1.5"], "probability in [0, 1)"),
        (["--stall-steps", "-1"], "integer >= 0"),
        (["--targets", "0.1,2"], "between 0 and 1"),
        (["--task", "mario:1-1"], "calibrate Mario levels with --level W-S"),
        (["--task", "minigrid:DoorKey-7x7"], "fixed-mission MiniGrid env"),
    ],
)
def test_calibrate_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, valid):
    assert main(["calibrate", "--out", str(tmp_path / "out"), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, valid)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_sigterm_stops_calibrate_cleanly_keeping_finished_levels(tmp_path):
    out = tmp_path / "calibration"
    command = [sys.executable, "-m", "mario_apo.cli", "calibrate", "--level", "1-1", "4-1", "--out", str(out)]
    proc = subprocess.Popen(
        [*command, "--episodes", "16", "--max-episode-steps", "100", "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "calibration-1-1.json").exists():  # the first level done
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the second level under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "SIGTERM: stopped; not written: 4-1" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["calibration-1-1.json", "calibration-1-1.png"]
