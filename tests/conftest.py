"""Shared helpers: real emulator, real envs, no mocks."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mario_apo.checkpoint import load_checkpoint
from mario_apo.config import EnvConfig, RunConfig
from mario_apo.errors import CheckpointError
from mario_apo.tasks import parse_task

# In SIMPLE_MOVEMENT: 1 = right, 2 = right + A (jump).
RIGHT, RIGHT_JUMP = 1, 2


def hold_right_and_jump(step: int) -> int:
    """A scripted run: hold right, jump for 5 steps in every 10 (A must be released to jump again).

    On 1-1 this clears the first goombas and pipes and reaches x~1220.
    """
    return RIGHT_JUMP if step % 10 < 5 else RIGHT


@pytest.fixture
def env_cfg() -> EnvConfig:
    return EnvConfig()


@pytest.fixture
def mario_1_1():
    return parse_task("mario:1-1")


def tiny_run_config(run_dir: Path, task: str = "mario:1-1:goal:300", algo: str = "apo", **settings: Any) -> RunConfig:
    """A run small enough for a test: Mario with 2 envs x 64 steps, 512 steps, one epoch of 2 minibatches,
    episodes of at most 400 steps (an untrained greedy policy stuck at a pipe would play 2,000 in the final
    evaluation); no progress bar. ``settings`` override PPO fields, then anchor/log/run fields, by name."""
    tiny_mario = dict(num_envs=2, num_steps=64, total_steps=512, num_minibatches=2, update_epochs=1)
    tiny_mario["max_episode_steps"] = 400
    small = tiny_mario if parse_task(task).is_mario else {}
    quiet = dict(run_dir=str(run_dir), progress=False, final_eval_episodes=4, final_eval_greedy=2)
    return RunConfig.for_task(parse_task(task).name, algo, **{**small, **quiet, **settings})


@pytest.fixture
def tiny_config(tmp_path) -> Callable[..., RunConfig]:
    """``tiny_config(task=..., algo=..., **settings)``: a ``tiny_run_config`` writing under tmp_path."""
    return lambda **kwargs: tiny_run_config(tmp_path, **kwargs)


@pytest.fixture(scope="session")
def apo_run(tmp_path_factory) -> Path:
    """A short real APO run on Mario 1-1 (goal:250, so some episodes succeed) with a W&B offline run."""
    from mario_apo.runs import create_run
    from mario_apo.train import train

    cfg = tiny_run_config(tmp_path_factory.mktemp("runs"), task="mario:1-1:goal:250", seed=2, anchors=3, video_every=1)
    run_dir = create_run(cfg)
    train(cfg, run_dir)
    return run_dir


# ---- training in a real subprocess -------------------------------------------------------

# A few final-evaluation episodes, not the metric's 100 + 20: tests check the mechanics.
QUICK_FINAL_EVAL = ["--final-eval-episodes", "4", "--final-eval-greedy", "2"]
TRAIN = [sys.executable, "-m", "mario_apo.cli", "train", "--wandb", "disabled", "--no-progress", *QUICK_FINAL_EVAL]


def start_train(run_dir_parent: Path, flags: str) -> subprocess.Popen:
    """``mario-apo train FLAGS`` in a real process (W&B off, no progress bar), not waited for."""
    command = TRAIN + ["--run-dir", str(run_dir_parent), *flags.split()]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_train(run_dir_parent: Path, flags: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mario-apo train FLAGS`` in a real process, waited for; its output captured."""
    command = TRAIN + ["--run-dir", str(run_dir_parent), *flags.split()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def train_in_process(run_dir_parent: Path, flags: str) -> int:
    """``mario-apo train FLAGS`` through ``main`` in this process; its exit code."""
    from mario_apo.cli import main

    flags = ["--wandb", "disabled", "--no-progress", *QUICK_FINAL_EVAL, *flags.split()]
    return main(["train", "--run-dir", str(run_dir_parent), *flags])


def assert_one_line_error(stderr: str, valid: str) -> None:
    """Bad input: exactly one line ``mario-apo: error: ...`` that names what is valid, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mario-apo: error:") and valid in lines[0], lines


def wait_for_checkpoint(path: Path, min_update: int, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                state = None  # never half-written (atomic rename), but be patient with the filesystem
            if state and state["update"] >= min_update:
                return state
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint with update >= {min_update} within {timeout}s")


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["global_step"] for line in (run_dir / "metrics.jsonl").open() if "charts/SPS" in line]


def assert_tables_on_grid(markdown: str) -> None:
    """Every table's rows, separator included, have as many cells as its header: none renders off the grid."""
    tables = [[]]
    for line in markdown.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    for table in filter(None, tables):
        assert all(line.endswith("|") and line.count("|") == table[0].count("|") for line in table), table


def wandb_records(run_dir: Path) -> list:
    """The records of a run's offline W&B file, read back as W&B syncs them: the file is a LevelDB-style
    log (a 7-byte header, then records in 32 KiB blocks, split FIRST/MIDDLE/LAST across blocks) of
    ``wandb_internal_pb2.Record`` messages. W&B 0.31 ships no Python reader for it."""
    (path,) = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    # W&B's writer is its own process (wandb-core) and may still be flushing after finish() returned:
    # read until the run's last record, "exit", is there.
    deadline = time.monotonic() + 30
    while True:
        records = _parse_wandb_file(path.read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _parse_wandb_file(data: bytes) -> list:
    from wandb.proto import wandb_internal_pb2

    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the padding at a block's end
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            break
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_summary(run_dir: Path) -> dict[str, Any]:
    """The run's W&B summary (the last value of every key) from its offline file."""
    summary: dict[str, Any] = {}
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "summary":
            summary.update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update}
            )
    return summary
