"""The logs that reports and ``suite status`` read, checked as the untrusted input they are.

Packed run logs are committed and shared between people and machines, so a report reads a
run's ``metrics.jsonl`` and ``summary.json``, a suite's ``random_policy.json`` and a level's
``calibration-<level>.json`` only through these readers: every value a report computes with
is checked for its type and range where it is read, and anything else is one line naming the
file and what is valid (exit 2), never a traceback from deep inside a table or a figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mario_apo.errors import RunLogError, first_line
from mario_apo.logger import read_metrics
from mario_apo.runs import read_json

VIDEO_SUFFIX = "_video"
"""Metrics under a key ending in this hold a video's path (``Logger.log_video``); every other value is a number."""
RECORD_BOUNDS = {"global_step": (0, 10**12), "charts/success": (0, 1), "charts/max_x": (0, 2**31)}
"""Ranges of the record values a report turns into integers or flags (``--total-steps`` is at most 10^12)."""


def number(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a float if it is a JSON number in ``[low, high]`` (NaN allowed only without bounds;
    an integer beyond 2^63, which no log holds, is refused before it can overflow a float)."""
    bounded = math.isfinite(low) or math.isfinite(high)
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
    if wrong_type or (isinstance(value, int) and abs(value) > 2**63) or (bounded and not low <= value <= high):
        span = "a number" if not bounded else f"a number in [{low:g}, {high:g}]"
        raise RunLogError(f"{where} is {json.dumps(value)[:40]}; a log written by mario-apo holds {span} there")
    return float(value)


def integer(value: Any, where: str, low: int = 0, high: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        span = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise RunLogError(
            f"{where} is {json.dumps(value)[:40]}; a log written by mario-apo holds an integer {span} there"
        )
    return value


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RunLogError(f"{where} is not a JSON object; a log written by mario-apo holds one there")
    return value


def _rate_interval(value: Any, where: str) -> None:
    """A Wilson interval: a [low, high] pair of rates."""
    if not isinstance(value, list) or len(value) != 2:
        raise RunLogError(f"{where} is not a [low, high] pair; a log written by mario-apo holds one there")
    for bound in value:
        number(bound, where, 0, 1)


def _read_object(path: Path) -> dict:
    try:
        return _object(read_json(path), str(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunLogError(f"{path} is not readable JSON: {first_line(err)}") from None


def records(path: Path) -> Iterator[dict[str, Any]]:
    """``read_metrics``'s records (torn lines skipped), each value checked: a number, or a video's path;
    an episode's record says whether it succeeded."""
    try:
        for record in read_metrics(path):
            for key, value in record.items():
                if not key.endswith(VIDEO_SUFFIX):
                    where = f"{path}: {key[:60]!r} at global_step {record['global_step']}"
                    number(value, where, *RECORD_BOUNDS.get(key, (-math.inf, math.inf)))
            if "charts/episodic_return" in record and "charts/success" not in record:
                raise RunLogError(f"{path}: the episode at global_step {record['global_step']} has no 'charts/success'")
            yield record
    except OSError as err:
        raise RunLogError(f"{path} is not readable: {first_line(err)}") from None


def check_evaluation(value: Any, where: str) -> dict:
    """A final-policy evaluation (``evaluate_final_policy``'s result): per policy its episodes,
    successes, success rate and Wilson interval, consistent with each other; its steps."""
    evaluation = _object(value, where)
    integer(evaluation.get("steps"), f"{where}: steps")
    for policy in ("sampled", "greedy"):
        if policy not in evaluation:
            continue
        at = f"{where}: {policy}"
        result = _object(evaluation[policy], at)
        episodes = integer(result.get("episodes"), f"{at} episodes", 1)
        successes = integer(result.get("successes"), f"{at} successes", 0, episodes)
        rate = number(result.get("success_rate"), f"{at} success_rate", 0, 1)
        if abs(rate - successes / episodes) > 1e-9:
            raise RunLogError(f"{at}: success_rate {rate} is not successes / episodes ({successes}/{episodes})")
        _rate_interval(result.get("wilson95"), f"{at} wilson95")
        if "mean_max_x" in result:
            number(result["mean_max_x"], f"{at} mean_max_x")
    return evaluation


def read_summary(path: Path) -> dict[str, Any]:
    """A run's (or population's) ``summary.json``, with the parts reports read checked: the final
    evaluation and the evaluations at budgets (keyed by an agent-step count)."""
    summary = _read_object(path)
    if summary.get("final_eval"):  # {} when the run was set to skip it
        check_evaluation(summary["final_eval"], f"{path}: final_eval")
    for budget, evaluation in _object(summary.get("budget_evals") or {}, f"{path}: budget_evals").items():
        if not budget.isdigit():
            raise RunLogError(f"{path}: budget_evals key {budget[:40]!r} is not an agent-step count")
        check_evaluation(evaluation, f"{path}: budget_evals {budget}")
    return summary


def read_random_policies(path: Path) -> dict[str, dict[str, Any]]:
    """A suite's ``random_policy.json``: per task, a uniform-random policy's success rate over
    ``episodes`` episodes, with its Wilson interval (absent file: nothing measured yet)."""
    if not path.exists():
        return {}
    measured = _read_object(path)
    for task, entry in measured.items():
        at = f"{path}: {task[:60]!r}"
        _object(entry, at)
        integer(entry.get("episodes"), f"{at} episodes", 1)
        number(entry.get("success_rate"), f"{at} success_rate", 0, 1)
        _rate_interval(entry.get("wilson_95", [0, 1]), f"{at} wilson_95")
        if "mean_max_x" in entry:
            number(entry["mean_max_x"], f"{at} mean_max_x")
    return measured


def read_level_calibration(path: Path) -> dict[str, Any]:
    """A Mario level's ``calibration-<level>.json`` (``mario-apo calibrate``), the parts a report reads
    checked: its episode count and its curve, P(max x >= x) at every distinct max x of the random
    episodes, as two equally long lists of numbers (its env settings are checked as settings, by
    ``settings_from_record``, where they are read)."""
    record = _read_object(path)
    integer(record.get("episodes"), f"{path}: episodes", 1)
    curve = _object(record.get("curve"), f"{path}: curve")
    xs, rates = curve.get("x"), curve.get("rate")
    if not isinstance(xs, list) or not isinstance(rates, list) or not xs or len(xs) != len(rates):
        raise RunLogError(f"{path}: curve x and rate are not two equally long, non-empty lists of numbers")
    for x, rate in zip(xs, rates, strict=True):
        number(x, f"{path}: curve x", 0, 2**31)
        number(rate, f"{path}: curve rate", 0, 1)
    return record
