"""What a run dir holds of APO's anchors, written and read in one place: ``anchors.json`` (beside each
checkpoint: every anchor's numbers and exact actions, enough to replay it on the emulator) and the
anchor videos under ``videos/`` (``mario_apo.replay`` re-simulates and verifies them).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mario_apo.checkpoint import load_checkpoint
from mario_apo.config import EnvConfig, settings_from_record
from mario_apo.errors import ReplayError, ReplayMismatch, TrainingError, UsageError, first_line
from mario_apo.replay import replay
from mario_apo.runs import RunFiles, make_run_subdir, read_json, write_json
from mario_apo.tasks import Task, parse_task
from mario_apo.video import VideoWriter
from wrappers.mario import ACTION_SETS
from wrappers.minigrid import MINIGRID_ACTIONS


def write_anchor_index(run_dir: Path, task: Task, env_cfg: EnvConfig, anchors: list[Any]) -> None:
    """anchors.json: each anchor's (``mario_apo.anchors.Anchor``, best first) return, success, length
    and exact actions, with the task and env settings that replay them.

    :raises TrainingError: it could not be written (the previous one stays whole)
    """
    index = {
        "task": task.name,
        "env": asdict(env_cfg),
        "anchors": [
            {
                "rank": rank,
                "episode_id": a.episode_id,
                "finder": a.finder,
                "return": a.episode_return,
                "success": a.success,
                "length": a.length,
                "max_x": a.max_x,
                "admitted_update": a.admitted_update,
                "sticky_seed": a.sticky_seed,
                "layout_seed": a.layout_seed,
                "discounted_return": a.discounted_return,
                "actions": a.actions.tolist(),
            }
            for rank, a in enumerate(anchors)
        ],
    }
    path = RunFiles(run_dir).anchors
    try:
        write_json(path, index, indent=None)
    except OSError as err:
        raise TrainingError(f"could not write {path} ({err})") from None


def load_anchor_index(run_dir: Path) -> dict[str, Any]:
    """``anchors.json`` of a run, or ``ReplayError`` naming what is missing."""
    files = RunFiles(run_dir)
    if not files.config.exists():
        raise ReplayError(f"{run_dir} is not a run dir (no config.json)")
    if not files.anchors.exists():
        raise ReplayError(
            f"{run_dir} has no anchors: only APO runs record them (anchors.json is written with each checkpoint)"
        )
    try:
        index = check_anchor_index(read_json(files.anchors))
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: bad JSON, and UsageError
        raise ReplayError(f"{files.anchors}: {first_line(err)}") from None
    if not index["anchors"]:
        raise ReplayError(f"{run_dir} has no anchors yet: no episode had ended by its last checkpoint")
    return index


_SEED_RANGE = range(0, 2**63)
_ANCHOR_FIELDS: dict[str, tuple[Any, str]] = {
    # key: (test, what is valid)
    "rank": (lambda v: _is_int(v, range(0, 100_000)), "its rank, an integer >= 0"),
    "episode_id": (lambda v: _is_int(v, _SEED_RANGE), "an integer >= 0"),
    "finder": (lambda v: v is None or _is_int(v, range(0, 100_000)), "null or a learner index >= 0"),
    "return": (lambda v: _is_number(v), "a finite number"),
    "discounted_return": (lambda v: _is_number(v), "a finite number"),
    "success": (lambda v: isinstance(v, bool), "true or false"),
    "length": (lambda v: _is_int(v, range(1, 10**7 + 1)), "an integer in 1-10,000,000"),
    "max_x": (lambda v: _is_int(v, range(0, 100_000)), "an integer >= 0"),
    "admitted_update": (lambda v: _is_int(v, _SEED_RANGE), "an integer >= 0"),
    "sticky_seed": (lambda v: v is None or _is_int(v, _SEED_RANGE), "null or an integer in [0, 2^63)"),
    "layout_seed": (lambda v: v is None or _is_int(v, _SEED_RANGE), "null or an integer in [0, 2^63)"),
}
_OPTIONAL = {"finder", "discounted_return", "sticky_seed", "layout_seed"}  # written by later versions


def _is_int(value: Any, valid: range) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in valid


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_anchor_index(index: Any) -> dict[str, Any]:
    """An anchors.json record, every field checked (a file from elsewhere is untrusted input: its names
    become video file names, its actions drive an emulator); ``UsageError`` naming the first bad field.
    Returns it with its env settings checked and each anchor's rank equal to its place."""
    if not isinstance(index, dict) or not isinstance(index.get("task"), str) or "anchors" not in index:
        raise UsageError("not an anchors index: a JSON object with task, env and anchors was expected")
    task = parse_task(index["task"])
    env_cfg = EnvConfig.from_record(settings_from_record(EnvConfig, index.get("env", {}), "env"))
    actions = len(ACTION_SETS[env_cfg.action_set]) if task.is_mario else MINIGRID_ACTIONS
    if not isinstance(index["anchors"], list) or len(index["anchors"]) > 100_000:
        raise UsageError("anchors must be a list of at most 100,000 anchors")
    for place, anchor in enumerate(index["anchors"]):
        if not isinstance(anchor, dict):
            raise UsageError(f"anchor {place} is not a JSON object")
        for key, (test, valid) in _ANCHOR_FIELDS.items():
            if key not in anchor and key in _OPTIONAL:
                continue
            if key not in anchor or not test(anchor[key]):
                raise UsageError(f"anchor {place}: {key} must be {valid}, got {anchor.get(key, 'nothing')!r}")
        if anchor["rank"] != place:
            raise UsageError(f"anchor {place}: its rank is {anchor['rank']}, not its place {place}")
        moves = anchor.get("actions")
        if not isinstance(moves, list) or len(moves) != anchor["length"]:
            raise UsageError(f"anchor {place}: actions must be a list of length {anchor['length']} (its length)")
        bad = next((a for a in moves if not _is_int(a, range(actions))), None)
        if bad is not None:
            raise UsageError(f"anchor {place}: action {bad!r} is not one of the task's actions 0-{actions - 1}")
    return {**index, "env": asdict(env_cfg)}


def select_anchors(index: dict[str, Any], episode: str) -> list[dict[str, Any]]:
    """``best`` (rank 0), ``all``, or a rank N (0 = best)."""
    anchors = index["anchors"]
    if episode == "best":
        return anchors[:1]
    if episode == "all":
        return anchors
    if episode.isdigit() and int(episode) < len(anchors):
        return [anchors[int(episode)]]
    raise ReplayError(f"--episode {episode!r}: valid are best, all, or a rank 0-{len(anchors) - 1}")


def stored_frames_by_episode(run_dir: Path) -> dict[tuple[int | None, int], np.ndarray]:
    """(finder, episode id) -> stored 84x84 frames, from the run's checkpoint (for step-by-step checks);
    the finder is the learner that found it in a population with shared anchors, else None."""
    path = RunFiles(run_dir).checkpoint
    anchors = (load_checkpoint(path).get("anchors") or {}).get("anchors", [])
    try:
        return {(a.get("finder"), a["episode_id"]): np.asarray(a["frames"]) for a in anchors}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ReplayError(f"checkpoint {path}: its anchors' stored frames are malformed") from None


def replay_video_path(run_dir: Path, anchor: dict[str, Any]) -> Path:
    """Where ``mario-apo replay`` writes an anchor's video by default (``videos/``, made if missing)."""
    try:
        videos = make_run_subdir(RunFiles(run_dir).videos)
    except OSError as err:
        raise ReplayError(str(err)) from None
    return videos / f"anchor-{anchor['rank']}-ep{anchor['episode_id']}.mp4"


def write_best_anchor_video(run_dir: Path, task: Task, env_cfg: EnvConfig, best: Any) -> Path | None:
    """Replay the best anchor (an ``Anchor``) on a fresh emulator, verified step by step against its
    stored frames, into ``videos/best-[learner<i>-]ep<id>.mp4``; its path, or None (with a warning)
    when the episode did not reproduce."""
    found_by = "" if best.finder is None else f"learner{best.finder}-"
    try:
        path = make_run_subdir(RunFiles(run_dir).videos) / f"best-{found_by}ep{best.episode_id}.mp4"
    except OSError as err:
        tqdm.write(f"mario-apo: no video of anchor episode {best.episode_id}: {err}", file=sys.stderr)
        return None
    expected = {"return": best.episode_return, "length": best.length, "max_x": best.max_x, "success": best.success}
    try:
        with VideoWriter(path) as video:
            seeds = {"sticky_seed": best.sticky_seed, "layout_seed": best.layout_seed}
            replay(task, env_cfg, best.actions, expected, best.frames, video, seeds)
    except ReplayMismatch as err:  # would mean the episode is not reproducible: say so, keep training
        tqdm.write(f"mario-apo: no video of anchor episode {best.episode_id}: {err}", file=sys.stderr)
        return None
    return path
