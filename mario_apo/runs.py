"""Run dirs: create one with its ``config.json``, read a saved config back, lock it while training.

Kept apart from the training loop so that ``eval``, ``replay``, ``bench`` and the
suite runner can read a run's settings without importing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import mario_apo
from mario_apo.config import RunConfig
from mario_apo.errors import CheckpointError, UsageError

LOCK = ".lock"


class RunLocked(UsageError):
    """Another process is training this run dir."""


class RunLock:
    """An exclusive OS lock (``flock``) on a run dir for a training process's whole life.

    The OS releases it when the process ends in any way (``kill -9`` included), so it is
    never stale. The lock file names its holder (pid and host) for the error message;
    a process that fails to get the lock writes nothing.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is being trained by {holder}: wait for it to finish, or stop it "
                "(SIGTERM checkpoints it); two processes on one run dir would corrupt it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run dir's lock ("pid P on host H"), or None when nobody trains it (writes nothing)."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared probe fails only while a trainer holds it
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    else:
        return None
    finally:
        os.close(fd)


def default_run_name(cfg: RunConfig) -> str:
    task = cfg.task.replace(":", "-")
    return f"{cfg.algo}-{task}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"


def create_run(cfg: RunConfig) -> Path:
    """A new run dir with its config.json; refuses to overwrite an existing run."""
    run_dir = new_run_dir(cfg)
    write_run_config(run_dir, cfg)
    return run_dir


def new_run_dir(cfg: RunConfig) -> Path:
    """The empty dir of a new run (or population), named in ``cfg.log.name``; an existing one is refused."""
    run_dir = Path(cfg.log.run_dir) / (cfg.log.name or default_run_name(cfg))
    if run_dir.exists():
        raise CheckpointError(
            f"run dir {run_dir} already exists: pick another --name, or continue it with --resume {run_dir}"
        )
    run_dir.mkdir(parents=True)
    cfg.log.name = run_dir.name
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    """The saved config of an existing run (for --resume, eval)."""
    path = run_dir / "config.json"
    if not path.exists() and (run_dir / "population.json").exists():
        raise CheckpointError(f"{run_dir} is a population: its learners' run dirs are {run_dir}/learner-<i>")
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run dir (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from None


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """config.json as written: the config plus its W&B id and versions."""
    return json.loads((run_dir / "config.json").read_text())


def write_run_config(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """config.json: every resolved setting, the versions that ran it, and the W&B run id."""
    record = run_record(cfg)
    (run_dir / "config.json").write_text(json.dumps(record, indent=2))
    return record


def run_record(cfg: RunConfig) -> dict[str, Any]:
    """Every resolved setting, the versions that ran it, the device it was created on, and a new W&B run id."""
    import gymnasium
    import numpy as np
    import torch

    from mario_apo.device import device_record, resolve_device

    record = cfg.to_dict()
    record["wandb_id"] = uuid.uuid4().hex[:12]
    record["hardware"] = device_record(resolve_device(cfg.device))
    record["versions"] = {
        "mario_apo": mario_apo.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
    }
    return record


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
