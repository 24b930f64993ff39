"""Stopping cleanly: the first Ctrl-C or SIGTERM (``kill``, ``docker stop``) asks for a stop
(a run finishes its update and checkpoints; a driver passes the request on); a second aborts."""

from __future__ import annotations

import signal
import sys

from tqdm import tqdm

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Asks a run to stop after its update, with a checkpoint: set ``requested`` (a population's
    driver does, through its learner actor; signals reach only a process's main thread)."""

    def __init__(self):
        self.requested = False
        self.aborted = False

    def __enter__(self) -> StopFlag:
        return self

    def __exit__(self, *exc) -> None:
        pass


class StopRequest(StopFlag):
    """The stop signals, while in its ``with`` block: the first sets ``requested`` and says
    ``what`` happens now; a second sets ``aborted`` and, with ``raise_on_abort``, raises
    KeyboardInterrupt at once.

    A Ray driver passes ``raise_on_abort=False`` and polls ``aborted``: Ray runs Python's signal
    handlers inside its blocking calls (``ray.wait``), and a handler that raises there leaves the
    call hung or failing with a SystemError."""

    def __init__(self, what: str = "stopping after this update to save a checkpoint", raise_on_abort: bool = True):
        super().__init__()
        self.what, self.raise_on_abort = what, raise_on_abort
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.aborted = True
            if self.raise_on_abort:
                raise KeyboardInterrupt
            return
        self.requested = True
        tqdm.write(f"mario-apo: {signal.Signals(signum).name}: {self.what} (again to abort)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
