"""What a run dir holds of APO's anchors, written and read in one place: ``anchors.json`` (beside each
checkpoint: every anchor's numbers and exact actions, enough to replay it on the emulator) and the
anchor videos under ``videos/`` (``mario_apo.replay`` re-simulates and verifies them).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mario_apo.checkpoint import load_checkpoint
from mario_apo.config import EnvConfig
from mario_apo.errors import ReplayError, ReplayMismatch, TrainingError
from mario_apo.replay import replay
from mario_apo.runs import RunFiles, read_json, write_json
from mario_apo.tasks import Task
from mario_apo.video import VideoWriter


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
    index = read_json(files.anchors)
    if not index["anchors"]:
        raise ReplayError(f"{run_dir} has no anchors yet: no episode had ended by its last checkpoint")
    return index


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
    state = load_checkpoint(RunFiles(run_dir).checkpoint)
    anchors = (state.get("anchors") or {}).get("anchors", [])
    return {(a.get("finder"), a["episode_id"]): np.asarray(a["frames"]) for a in anchors}


def replay_video_path(run_dir: Path, anchor: dict[str, Any]) -> Path:
    """Where ``mario-apo replay`` writes an anchor's video by default."""
    return RunFiles(run_dir).videos / f"anchor-{anchor['rank']}-ep{anchor['episode_id']}.mp4"


def write_best_anchor_video(run_dir: Path, task: Task, env_cfg: EnvConfig, best: Any) -> Path | None:
    """Replay the best anchor (an ``Anchor``) on a fresh emulator, verified step by step against its
    stored frames, into ``videos/best-[learner<i>-]ep<id>.mp4``; its path, or None (with a warning)
    when the episode did not reproduce."""
    found_by = "" if best.finder is None else f"learner{best.finder}-"
    path = RunFiles(run_dir).videos / f"best-{found_by}ep{best.episode_id}.mp4"
    expected = {"return": best.episode_return, "length": best.length, "max_x": best.max_x, "success": best.success}
    try:
        with VideoWriter(path) as video:
            seeds = {"sticky_seed": best.sticky_seed, "layout_seed": best.layout_seed}
            replay(task, env_cfg, best.actions, expected, best.frames, video, seeds)
    except ReplayMismatch as err:  # would mean the episode is not reproducible: say so, keep training
        tqdm.write(f"mario-apo: no video of anchor episode {best.episode_id}: {err}", file=sys.stderr)
        return None
    return path
