"""The training loop's one seam: the object through which APO (``mario_apo.anchors``) or PPO + SIL
(``mario_apo.sil``) enters PPO. For plain PPO it is a ``NoHooks``, whose hooks all do nothing.

The loop (``mario_apo.train``) holds one and calls

1. ``start_update``: once per update (APO: this update's beta; SIL: its SIL steps);
2. ``record``: after each rollout, with the rollout storage (it holds the full behaviour
   log-probs, the env's rewards and the episodes that ended);
3. ``loss``: inside ``ppo_update``, once per minibatch: a term added to PPO's loss (0 for PPO);
4. ``metrics``, ``state_dict``/``load_state_dict`` (the checkpoint's ``anchors`` entry),
   ``save_files`` (beside each checkpoint) and ``log_media``: bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mario_apo.logger import RunLogger
from mario_apo.ppo import Rollout

ObsTransform = Callable[[np.ndarray], np.ndarray]
"""Raw observations -> what the policy sees (the run's current observation normalisation)."""


class NoHooks:
    """PPO: every hook does nothing."""

    def start_update(self, run_fraction: float) -> None:
        """Called at the start of each update; ``run_fraction`` in [0, 1) is how far the run is."""

    def record(self, rollout: Rollout, update: int) -> None:
        """Record a finished rollout's steps and the episodes that ended in it."""

    def loss(self, model: nn.Module, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """The term added to a minibatch's PPO loss."""
        return 0.0

    def metrics(self, update: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass

    def save_files(self, run_dir: Path) -> None:
        """Files written beside each checkpoint."""

    def log_media(self, run_dir: Path, logger: RunLogger, global_step: int, update: int) -> None:
        """Media logged after an update's metrics."""
