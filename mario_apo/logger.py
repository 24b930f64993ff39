"""Metrics to local files (always) and to Weights & Biases (offline by default).

``metrics.jsonl`` holds one JSON object per log call, every scalar with its
``global_step`` (agent steps over all envs), so nothing depends on the cloud.
W&B uses ``global_step`` as the x-axis of every metric.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends to ``<run_dir>/metrics.jsonl`` and mirrors to a W&B run."""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume_step: int | None = None):
        """
        :param resume_step: when resuming, the checkpoint's global step: metric lines
            logged after it (by the interrupted process) are dropped so curves do not repeat
        """
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [
                line for line in self.path.read_text().splitlines() if json.loads(line)["global_step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        self._wandb = None
        log_cfg = config["log"]
        if log_cfg["wandb"] != "disabled":
            self._wandb = self._init_wandb(run_dir, config, log_cfg)

    @staticmethod
    def _init_wandb(run_dir: Path, config: dict[str, Any], log_cfg: dict[str, Any]):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run = wandb.init(
            mode=log_cfg["wandb"],
            dir=str(run_dir),
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

    def log(self, global_step: int, metrics: dict[str, Any]) -> None:
        record = {"global_step": global_step, **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(record)

    def log_video(self, global_step: int, key: str, path: Path) -> None:
        """A video file as W&B media (the file itself stays in the run dir)."""
        self._file.write(json.dumps({"global_step": global_step, key: str(path)}) + "\n")
        self._file.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({"global_step": global_step, key: wandb.Video(str(path), format=path.suffix[1:])})

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
