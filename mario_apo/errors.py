"""The project's exceptions, in one place so every module can raise them without importing another's.

``UsageError`` and its subclasses are bad input (flags, task strings, files on disk):
the command line reports them as one line ``mario-apo: error: ...`` and exits 2,
before anything on disk is touched. ``TrainingError`` means a run cannot go on; its
last good checkpoint is kept and the command exits 1.
"""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none), for one-line errors."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


class UsageError(ValueError):
    """Bad input from the user: reported as one line naming what is valid, exit code 2."""


class TaskError(UsageError):
    """A task string, or an env setting, that does not name anything valid."""


class CheckpointError(UsageError):
    """A run dir or checkpoint that cannot be used: missing, corrupt, or from another task or model."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint holding more than tensors and plain values: refused unloaded (it could run code)."""


class SuiteError(UsageError):
    """A suite file that cannot be run."""


class RunLogError(UsageError):
    """A run's log (metrics.jsonl, summary.json) or a suite's random_policy.json that a report cannot
    read: damaged, or not what mario-apo wrote."""


class ReplayError(UsageError):
    """A replay request that cannot be served: no anchors, bad episode index, not a Mario run."""


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, dead env worker); its last checkpoint is kept."""


class NonFiniteLoss(TrainingError):
    """The loss (or the policy's output) became NaN or inf: training diverged."""


class ReplayMismatch(RuntimeError):
    """The re-simulated episode differs from the recorded one."""
