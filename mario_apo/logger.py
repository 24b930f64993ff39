"""Metrics to local files (always), to Weights & Biases (offline by default) and, on request, TensorBoard.

``metrics.jsonl`` holds one JSON object per log call, every scalar with its
``global_step`` (agent steps over all envs), so nothing depends on the cloud.
W&B and TensorBoard use ``global_step`` as the x-axis of every metric, under the
same names. A line is written whole and flushed; a run killed mid-write can leave
a torn last line, which ``read_metrics`` (and a resumed run) skips.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mario_apo.errors import TrainingError, UsageError
from mario_apo.runs import RunFiles, make_run_subdir, open_for_append, write_atomic


def is_update_record(record: dict[str, Any]) -> bool:
    """Whether a metrics record is an update's (every update logs its SPS), not an episode's or a summary's."""
    return "charts/SPS" in record


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a metrics.jsonl, skipping a line torn by a kill mid-write (or anything else that
    is not a record: a JSON object with an integer ``global_step``)."""
    with path.open(errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = record.get("global_step") if isinstance(record, dict) else None
            if isinstance(step, int) and not isinstance(step, bool):
                yield record


def check_wandb_online(mode: str) -> None:
    """Before a run dir exists: ``--wandb online`` needs an API key and a reachable server, else one line
    (W&B itself would stall for a minute and a half, then raise, leaving a dead run dir behind)."""
    if mode != "online":
        return
    import netrc
    import socket
    from urllib.parse import urlparse

    server = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = server.hostname or "api.wandb.ai", server.port or (80 if server.scheme == "http" else 443)
    try:
        logged_in = bool(os.environ.get("WANDB_API_KEY") or netrc.netrc().authenticators(host))
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    if not logged_in:
        raise UsageError(
            f"--wandb online needs a W&B API key (WANDB_API_KEY, or 'wandb login' for {host}); "
            "or use --wandb offline and 'wandb sync' later"
        )
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        raise UsageError(
            f"--wandb online: cannot reach {host}:{port} ({err.strerror or err}); use --wandb offline and "
            "'wandb sync' later"
        ) from None


class RunLogger:
    """Appends to ``<run_dir>/metrics.jsonl`` and mirrors to a W&B run (and TensorBoard event files)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int | None = None):
        """
        :param resume_step: when resuming, the checkpoint's global step: metric lines
            logged after it (by the interrupted process) are dropped so curves do not repeat
        """
        files = RunFiles(run_dir)
        self.path = files.metrics
        if resume_step is not None and self.path.exists():
            kept = [json.dumps(r) for r in read_metrics(self.path) if r["global_step"] <= resume_step]
            write_atomic(self.path, "".join(line + "\n" for line in kept))
        self._file = open_for_append(self.path)
        self._wandb = self._tensorboard = None
        log_cfg = config["log"]
        if log_cfg["wandb"] != "disabled":
            self._wandb = self._init_wandb(run_dir, config, log_cfg)
        if log_cfg.get("tensorboard"):
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: events the interrupted process wrote after the checkpoint are dropped
            purge = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(str(make_run_subdir(files.tensorboard)), purge_step=purge)

    @staticmethod
    def _init_wandb(run_dir: Path, config: dict[str, Any], log_cfg: dict[str, Any]):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run = wandb.init(
            mode=log_cfg["wandb"],
            dir=str(run_dir.resolve()),  # W&B's writer is a service that may have started in another cwd
            project=log_cfg["wandb_project"],
            group=log_cfg["wandb_group"] or config["task"],
            tags=list(dict.fromkeys([config["algo"], config["task"], *log_cfg["wandb_tags"]])),
            name=run_dir.name,
            id=config["wandb_id"],
            resume="allow",
            config=config,
        )
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
        return run

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            raise TrainingError(f"could not write a metrics line to {self.path} ({err})") from None

    def log(self, global_step: int, metrics: dict[str, Any]) -> None:
        record = {"global_step": global_step, **metrics}
        self._write(record)
        if self._wandb is not None:
            self._wandb.log(record)
        if self._tensorboard is not None:
            for name, value in metrics.items():
                self._tensorboard.add_scalar(name, value, global_step)

    def log_video(self, global_step: int, key: str, path: Path) -> None:
        """A video file as W&B media (the file itself stays in the run dir)."""
        self._write({"global_step": global_step, key: str(path)})
        if self._wandb is not None:
            import wandb

            self._wandb.log({"global_step": global_step, key: wandb.Video(str(path), format=path.suffix[1:])})

    def log_summary(self, metrics: dict[str, Any]) -> None:
        """Once-per-run numbers (the final-policy evaluation): the W&B run's summary, not a curve."""
        if self._wandb is not None:
            self._wandb.summary.update(metrics)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # the write that failed was already reported; what it left unflushed is lost either way
        if self._wandb is not None:
            self._wandb.finish()
        if self._tensorboard is not None:
            self._tensorboard.close()
