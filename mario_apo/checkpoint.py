"""Atomic, safe checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds only tensors and plain Python values (numpy arrays are stored as
tensors), so it loads with ``torch.load(weights_only=True)``: run dirs are shared
between people and machines, and a pickle that could run code on load is refused.
Checkpoints written before this format (numpy objects inside) are refused too; if
you trust where one came from, ``mario-apo upgrade-checkpoint RUN_DIR`` converts it once.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mario_apo.errors import CheckpointError, TrainingError, UnsafeCheckpoint, first_line
from mario_apo.runs import RunFiles, write_atomic


def rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, np.asarray(keys), *rest))
    random.setstate(states["python"])


def as_tensors(value: Any) -> Any:
    """``value`` with every numpy array a tensor and every numpy scalar a Python number (containers recursed)."""
    if isinstance(value, np.ndarray):
        # read-only arrays (a population's shared anchors arrive as such from Ray) are copied
        return torch.from_numpy(np.require(value, requirements=["C", "W"]))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: as_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_tensors(item) for item in value)
    return value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename: a crash or a full disk never leaves
    half a checkpoint, and the previous one stays valid.

    :raises TrainingError: the write failed (disk full, file size limit); the message says why
    """
    # Serialised in memory first: torch's own file writer reports a full disk as an opaque
    # "unexpected pos" error, a plain write reports it as what it is (ENOSPC, EFBIG).
    buffer = io.BytesIO()
    torch.save(as_tensors(state), buffer)
    try:
        write_atomic(path, buffer.getbuffer())
    except OSError as err:
        raise TrainingError(f"could not write the checkpoint {path} ({err.strerror or err})") from None


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """The state saved at ``path``; with ``task``, it must come from a run of that task."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise CheckpointError(f"checkpoint {path} is corrupt or unreadable (UnpicklingError)") from None
        raise UnsafeCheckpoint(
            f"checkpoint {path} holds more than tensors and plain values (written by mario-apo before 0.2, or "
            "crafted), so it was not loaded; if you trust its source, convert it once with "
            f"'mario-apo upgrade-checkpoint {path.parent}'"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}): {first_line(err)}"
        ) from None
    problem = _structure_problem(state)
    if problem:
        raise CheckpointError(f"checkpoint {path} is not a mario-apo checkpoint: {problem}")
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"checkpoint {path} is from task {state.get('task')!r}, not {task!r}")
    return state


def _structure_problem(state: Any) -> str | None:
    """What is missing or malformed in a loaded checkpoint's top level (None: it has the shape)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict of the run's state"
    model = state.get("model")
    if not isinstance(model, dict) or not model or not all(torch.is_tensor(v) for v in model.values()):
        return "its model weights (a dict of tensors) are missing"
    if not isinstance(state.get("task"), str):
        return "its task string is missing"
    step = state.get("global_step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return "its global_step is missing or not an integer >= 0"
    anchors = state.get("anchors")
    if anchors is not None and not (isinstance(anchors, dict) and isinstance(anchors.get("anchors", []), list)):
        return "its anchor state is malformed"
    return None


def upgrade_checkpoint(run_dir: Path) -> Path:
    """Rewrite an older (pickled numpy) checkpoint of a *trusted* run in the safe format; the original
    is kept beside it as ``checkpoint.pt.before-upgrade``. Returns the backup's path."""
    path = RunFiles(run_dir).checkpoint
    try:
        load_checkpoint(path)  # missing or corrupt: its one-line error
    except UnsafeCheckpoint:
        pass
    else:
        raise CheckpointError(f"checkpoint {path} is already in the safe format; nothing to upgrade")
    try:
        # The one place that unpickles arbitrary objects: the user asked for it, for a run they trust.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(err).__name__})") from None
    backup = path.with_name(path.name + ".before-upgrade")
    backup.write_bytes(path.read_bytes())
    save_checkpoint(path, state)
    return backup
