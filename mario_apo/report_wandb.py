"""A suite's report as one W&B run: the comparison table, the ladder figure and the success curves.

The training runs of a suite are already in W&B, grouped by suite and tagged with their algo
label, task and suite. This adds one run per suite (job type ``report``, in the same group)
that holds what the Markdown report holds, as W&B tables and plots, so a synced project
compares the algos per rung without the local files. Offline by default, like training runs;
``wandb sync runs/<suite>/report/wandb/offline-run-*`` uploads it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from mario_apo.suite import Suite

COLUMNS = [
    "task",
    "random_policy_success",
    "algo",
    "n",
    "final_success",
    "final_success_low",
    "final_success_high",
    "final_success_greedy",
    "success_auc",
    "minus_baseline",
    "minus_baseline_t_low",
    "minus_baseline_t_high",
    "minus_baseline_bootstrap_low",
    "minus_baseline_bootstrap_high",
]
"""One row per (task, algo): its mean final success with the CI, and its paired difference from the
baseline (``ppo``) with both intervals; None where a value does not apply (the baseline itself)."""


def comparison_rows(summary: dict[str, Any]) -> list[list]:
    """The rows of the ``comparison`` table, from the report's summary.json."""
    rows = []
    for task, task_summary in summary["tasks"].items():
        random_rate = summary.get("random_policy", {}).get(task, {}).get("success_rate")
        for label, row in task_summary["algos"].items():
            difference = next(
                (
                    c
                    for c in task_summary["comparisons"]
                    if (c["a"], c["b"], c["metric"]) == (label, summary["baseline"], "final_success")
                ),
                None,
            )
            paired = [difference["mean"], *difference["t95"], *difference["bootstrap95"]] if difference else [None] * 5
            greedy = row.get("final_success_greedy")
            rows.append(
                [task, random_rate, label, row["n"], *row["final_success"], greedy[0] if greedy else None]
                + [row["success_auc"][0], *paired]
            )
    return rows


def write_wandb_summary(suite: Suite, summary: dict[str, Any], out_dir: Path, mode: str) -> Path:
    """Write the suite's W&B summary run (``mode``: offline or online); return its local dir.

    The run has a fixed id per suite and its local dir is rewritten, so reporting again replaces
    the summary run instead of adding another one to the project.
    """
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run_dir = suite.runs_dir / "report"
    shutil.rmtree(run_dir / "wandb", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        mode=mode,
        dir=str(run_dir.resolve()),  # W&B's writer is a service that may have started in another cwd
        project=suite.train.get("wandb_project", "mario-apo"),
        group=suite.name,
        job_type="report",
        name=f"{suite.name}-report",
        id="report-" + hashlib.sha1(suite.name.encode()).hexdigest()[:12],
        resume="allow",
        tags=["report", suite.name],
        config={key: summary[key] for key in ("suite", "metric", "total_steps", "seeds", "baseline")},
    )
    try:
        media: dict[str, Any] = {"comparison": wandb.Table(columns=COLUMNS, data=comparison_rows(summary))}
        for task, task_summary in summary["tasks"].items():
            curves = task_summary["success_curves"]
            labels = [label for label in curves if label != "steps"]
            media[f"success_curves/{task}"] = wandb.plot.line_series(
                xs=curves["steps"],
                ys=[curves[label] for label in labels],
                keys=labels,
                title=f"{task}: success per window of agent steps (mean over seeds)",
                xname="agent steps",
            )
        for figure in sorted(out_dir.glob("*.png")):
            media[f"figures/{figure.stem}"] = wandb.Image(str(figure))
        run.log(media)
        for task, task_summary in summary["tasks"].items():
            for label, row in task_summary["algos"].items():
                run.summary[f"{task}/{label}/final_success"] = row["final_success"][0]
    finally:
        run.finish()
    return run_dir / "wandb"
