"""Atomic checkpoints: everything needed to continue a run exactly where it stopped."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mario_apo.errors import CheckpointError

CHECKPOINT = "checkpoint.pt"


def rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """The state saved at ``path``; with ``task``, it must come from a run of that task."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # weights_only=False: the state holds numpy RNG states and anchor arrays we wrote ourselves.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}): {err}".splitlines()[0]
        ) from None
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"checkpoint {path} is from task {state.get('task')!r}, not {task!r}")
    return state
