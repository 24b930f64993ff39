"""Run dirs: the one owner of their layout (``RunFiles``) and of writing into them (``write_atomic``,
``open_for_append``); create one with its ``config.json``, read a saved config back, lock it while
training.

Run dirs are shared between people and machines, so what one holds is untrusted: no write here
follows a symbolic link (``O_NOFOLLOW``; temp files are created exclusively under fresh names), a
write replaces only a regular file, and every name that becomes part of a path (run names, suite
names, names taken from files) is checked to be a name, never a path (``check_name``).

Kept apart from the training loop so that ``eval``, ``replay``, ``bench`` and the
suite runner can read a run's settings without importing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import socket
import stat
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import mario_apo
from mario_apo.config import RunConfig
from mario_apo.errors import CheckpointError, UsageError, first_line
from mario_apo.tasks import parse_task


@dataclass(frozen=True)
class RunFiles:
    """Every file a run dir (or a population dir) holds, by what it holds: the one place their names
    are spelled. ``RunFiles(run_dir).summary`` is the path of its summary.json."""

    dir: Path

    LEARNER_PREFIX: ClassVar[str] = "learner-"
    PACKED: ClassVar[tuple[str, ...]] = (
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "anchors.json",
        "population.json",
    )
    """A finished run's logs (``suite pack``): enough to regenerate every report, no checkpoints or W&B files."""

    @property
    def config(self) -> Path:
        """Every resolved setting, the versions that ran it, the W&B id (``write_run_config``)."""
        return self.dir / "config.json"

    @property
    def metrics(self) -> Path:
        """One JSON record per log call (``mario_apo.logger``)."""
        return self.dir / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """The final numbers; where it exists, the run is finished."""
        return self.dir / "summary.json"

    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def anchors(self) -> Path:
        """APO's anchors: each one's numbers and exact actions, enough to replay it (``mario_apo.anchor_files``)."""
        return self.dir / "anchors.json"

    @property
    def population(self) -> Path:
        """A population dir's settings and learner seeds."""
        return self.dir / "population.json"

    @property
    def lock(self) -> Path:
        return self.dir / ".lock"

    @property
    def evaluation(self) -> Path:
        """``mario-apo eval``'s default output."""
        return self.dir / "eval.json"

    @property
    def videos(self) -> Path:
        return self.dir / "videos"

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    def refuse_links(self) -> None:
        """Before a process writes into this run dir: refuse one that holds a symbolic link (at its top or
        in a folder the run writes into), which would have the run's writes land elsewhere.

        :raises CheckpointError: naming the first link
        """
        wandb = self.dir / "wandb"
        for folder in (self.dir, self.videos, self.tensorboard, wandb):
            if folder != self.dir and not folder.exists() and not folder.is_symlink():
                continue
            entries = [folder] if folder.is_symlink() else [folder, *folder.iterdir()]
            for entry in entries:
                if not entry.is_symlink():
                    continue
                # W&B links inside its own folder (latest-run -> run-<id>, debug.log -> run-<id>/logs/...),
                # and replaces those links rather than writing through them; a link out of it is refused.
                if folder == wandb and entry != wandb and entry.resolve().is_relative_to(wandb.resolve()):
                    continue
                raise CheckpointError(
                    f"{entry} is a symbolic link: a run dir's files must be its own (links would send its writes "
                    "elsewhere); replace it with the file itself, or train a copy of the run dir"
                )

    def learner(self, index: int) -> Path:
        """A population's learner ``index``: an ordinary run dir."""
        return self.dir / f"{self.LEARNER_PREFIX}{index}"

    def learners(self) -> list[Path]:
        """A population's learner dirs that exist, in index order (none for a single run)."""
        found = [d for d in self.dir.glob(f"{self.LEARNER_PREFIX}*") if d.name[len(self.LEARNER_PREFIX) :].isdigit()]
        return sorted(found, key=lambda d: int(d.name[len(self.LEARNER_PREFIX) :]))


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")
NAME_FORM = "1-200 letters, digits and . _ + = -, starting with a letter or digit"


def check_name(value: Any, what: str) -> str:
    """``value`` if it is a name (a file name, never a path: no ``/``, no ``..``, no leading dot or
    dash); else ``UsageError`` naming ``what`` and the valid form."""
    if not isinstance(value, str) or _NAME_RE.match(value) is None or ".." in value:
        raise UsageError(f"{what} {value!r} is not a valid name: use {NAME_FORM}")
    return value


_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def refuse_non_regular(path: Path) -> None:
    """Writes replace regular files only: a symlink, a device or a directory in the way is refused."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a file"
        raise OSError(f"{path} is {kind}: refusing to replace it")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temp file beside it (created exclusively under a fresh name,
    so nothing already there is followed or reused), flushed to disk, then renamed over ``path``, so a
    crash or a full disk never leaves half a file and the previous version stays valid. Only a regular
    file (or nothing) at ``path`` is replaced.

    :raises OSError: the write failed or ``path`` is not a regular file; the temp file is removed
    """
    path = Path(path)
    refuse_non_regular(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open_new_file(tmp) as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        refuse_non_regular(path)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def make_run_subdir(path: Path) -> Path:
    """A folder inside a run dir (``videos/``, ``tensorboard/``), created if missing; one that is a
    symbolic link (it would send the run's files elsewhere) is refused.

    :raises OSError: ``path`` is a symbolic link or not a folder
    """
    path.mkdir(exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise OSError(f"{path} is not a plain folder (a symbolic link?): refusing to write into it")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """An output file named on the command line, checked before any work: nothing or a regular file at
    ``path`` (never a folder, link or device), in a folder that exists (or will be made) and is writable.

    :raises UsageError: naming ``what`` (``--json``) and the problem
    """
    path = Path(path)
    try:
        refuse_non_regular(path)
    except OSError as err:
        raise UsageError(f"{what} {err}") from None
    _check_writable_ancestor(path.parent, path, what)
    return path


def _check_writable_ancestor(folder: Path, path: Path, what: str) -> None:
    """The nearest existing folder at or above ``folder`` (where ``path`` will be made) is writable."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {path}: {folder} is not a folder this user can write into")


def open_new_file(path: Path):
    """A binary file that did not exist, created exclusively (nothing already there, a link included, is
    opened); for temp files that are renamed into place."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o644), "wb")


def check_output_dir(path: str | Path, what: str) -> Path:
    """An output folder named on the command line, checked before any work: a folder (or nothing yet,
    to be made) that this user can write into.

    :raises UsageError: naming ``what`` (``--out``) and the problem
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is not a folder")
    _check_writable_ancestor(path, path, what)
    return path


def open_for_append(path: Path):
    """A text file opened for appending (metrics.jsonl, logs), created if missing, never through a
    symbolic link.

    :raises OSError: ``path`` is a symbolic link (ELOOP) or not a regular file
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file: refusing to append to it")
    return os.fdopen(fd, "a")


def write_json(path: Path, record: Any, indent: int | None = 2) -> None:
    """``record`` as JSON at ``path``, atomically (``write_atomic``)."""
    write_atomic(path, json.dumps(record, indent=indent))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class RunLocked(UsageError):
    """Another process is training this run dir."""


class RunLock:
    """An exclusive OS lock (``flock``) on a run dir for a training process's whole life.

    The OS releases it when the process ends in any way (``kill -9`` included), so it is
    never stale. The lock file names its holder (pid and host) for the error message;
    a process that fails to get the lock writes nothing.
    """

    def __init__(self, run_dir: Path):
        self.path = RunFiles(run_dir).lock
        self._fd: int | None = None
        self._previous = b""  # what the lock file said before this process took it

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o644)
        except OSError as err:
            raise CheckpointError(f"cannot lock {self.path.parent}: {self.path}: {err.strerror or err}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"cannot lock {self.path.parent}: {self.path} is not a plain file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"{self.path.parent} is being trained by {holder}: wait for it to finish, or stop it "
                "(SIGTERM checkpoints it); two processes on one run dir would corrupt it"
            ) from None
        self._previous = os.pread(fd, 200, 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._fd is not None:
            if exc_type is not None and issubclass(exc_type, UsageError):  # refused input: leave it as it was
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, self._previous, 0)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run dir's lock ("pid P on host H"), or None when nobody trains it (writes nothing)."""
    try:
        fd = os.open(RunFiles(run_dir).lock, os.O_RDONLY | _NO_FOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, or not a lock a trainer made (a symbolic link): nobody trains through it
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
    run_dir = Path(cfg.log.run_dir) / check_name(cfg.log.name or default_run_name(cfg), "run name (--name)")
    if run_dir.exists() or run_dir.is_symlink():
        raise CheckpointError(
            f"run dir {run_dir} already exists: pick another --name, or continue it with --resume {run_dir}"
        )
    run_dir.mkdir(parents=True)
    cfg.log.name = run_dir.name
    return run_dir


def load_run_config(run_dir: Path) -> RunConfig:
    """The saved config of an existing run (for --resume, eval)."""
    files = RunFiles(run_dir)
    path = files.config
    if not path.exists() and files.population.exists():
        raise CheckpointError(
            f"{run_dir} is a population: its learners' run dirs are {run_dir}/{RunFiles.LEARNER_PREFIX}<i>"
        )
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run dir (no config.json)")
    try:
        record = read_json(path)
        cfg = RunConfig.from_dict(record, source=str(path))
        parse_task(cfg.task)
        check_name(record.get("wandb_id"), "its wandb_id (W&B names files after it)")
    except UsageError as err:
        raise CheckpointError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not readable JSON: {first_line(err)}") from None
    return cfg


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """config.json as written: the config plus its W&B id and versions."""
    return read_json(RunFiles(run_dir).config)


def write_run_config(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    """config.json: every resolved setting, the versions that ran it, and the W&B run id."""
    record = run_record(cfg)
    write_json(RunFiles(run_dir).config, record)
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
