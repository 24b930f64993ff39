"""Agent steps per success during training, per task and algo of a suite: the stall-truncation decision's measure.

    python experiments/steps_per_success.py experiments/stall.toml

Reads the finished run dirs (runs/<suite>/) only. Per algo: successes and steps summed over
seeds, their ratio (pooled), and each seed's own count, so one lucky seed is visible.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mario_apo.logger import read_metrics
from mario_apo.suite import expand, load_suite


def main(path: str) -> None:
    suite = load_suite(Path(path))
    for task, label in ((task, label) for task in suite.tasks for label in suite.algos):
        per_seed = []
        for spec in (s for s in expand(suite) if (s.task, s.label) == (task, label)):
            run_dir = suite.runs_dir / spec.name
            if not (run_dir / "summary.json").exists():
                continue
            records = list(read_metrics(run_dir / "metrics.jsonl"))
            successes = sum(r.get("charts/success", 0) for r in records)
            steps = max(r["global_step"] for r in records)
            per_seed.append((spec.task, spec.seed, successes, steps))
        if not per_seed:
            print(f"{task} {label}: no finished run")
            continue
        successes, steps = sum(p[2] for p in per_seed), sum(p[3] for p in per_seed)
        ratio = f"{steps / successes:,.0f}" if successes else "inf"
        seeds = "; ".join(f"s{seed}: {count} in {total:,}" for _, seed, count, total in per_seed)
        print(f"{task} {label}: {successes} successes in {steps:,} steps = {ratio} steps per success ({seeds})")


if __name__ == "__main__":
    main(sys.argv[1])
