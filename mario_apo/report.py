"""A suite's report from its local run dirs only (no network): Markdown, PNG figures, JSON summary.

Success is the rolling success rate over the last 100 episodes (``charts/success_rate``),
the flag-reach (or goal-reach) rate on Mario. Per run: the final success rate, the area
under the success curve (its mean over a grid of env steps, so 1.0 = always succeeding),
the final 100-episode mean return, the env steps to the first success, and whether it
"forgot": after first reaching its peak success rate, it fell below half that peak.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mario_apo import stats
from mario_apo.logger import read_metrics
from mario_apo.suite import RunSpec, Suite, expand

GRID_POINTS = 50


@dataclass
class RunData:
    spec: RunSpec
    steps: np.ndarray  # global step of each update
    success: np.ndarray  # rolling 100-episode success rate at each update
    returns: np.ndarray  # rolling 100-episode mean return at each update
    episode_returns: np.ndarray
    first_success_step: int | None

    def on_grid(self, values: np.ndarray, grid: np.ndarray, before: float) -> np.ndarray:
        """The step function of ``values`` (last update at or before each grid step)."""
        idx = np.searchsorted(self.steps, grid, side="right") - 1
        return np.where(idx >= 0, values[np.maximum(idx, 0)], before)

    @property
    def forgot(self) -> bool:
        peak = self.success.max(initial=0.0)
        if peak <= 0:
            return False
        after_peak = self.success[int(np.argmax(self.success >= peak)) :]
        return bool((after_peak < peak / 2).any())


def load_run(run_dir: Path, spec: RunSpec) -> RunData:
    steps, success, returns, episode_returns = [], [], [], []
    first_success = None
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if "charts/SPS" in record:
            steps.append(record["global_step"])
            success.append(record.get("charts/success_rate", 0.0))
            returns.append(record.get("charts/return_mean_100", np.nan))
        elif "charts/episodic_return" in record:
            episode_returns.append(record["charts/episodic_return"])
            if record["charts/success"] and first_success is None:
                first_success = record["global_step"]
    returns = np.array(returns, dtype=float)
    # before the first episode ends there is no return to average: carry the first one back
    if np.isnan(returns).all():
        returns[:] = 0.0
    else:
        returns = np.where(np.isnan(returns), returns[~np.isnan(returns)][0], returns)
    return RunData(
        spec,
        np.array(steps),
        np.array(success, dtype=float),
        returns,
        np.array(episode_returns, dtype=float),
        first_success,
    )


def collect(suite: Suite) -> tuple[dict[tuple[str, str], list[RunData]], list[str]]:
    """Finished runs by (task, algo label), and the names of runs left out.

    Only seeds finished for every (task, algo) are used, so every comparison and every
    stratified statistic sees the same seeds; a suite stopped part-way reports on fewer seeds.
    """
    specs = expand(suite)
    finished = {spec for spec in specs if (suite.runs_dir / spec.name / "summary.json").exists()}
    complete_seeds = [seed for seed in suite.seeds if all(s in finished for s in specs if s.seed == seed)]
    runs: dict[tuple[str, str], list[RunData]] = {}
    left_out = []
    for spec in specs:
        if spec.seed not in complete_seeds:
            left_out.append(spec.name)
            continue
        runs.setdefault((spec.task, spec.label), []).append(load_run(suite.runs_dir / spec.name, spec))
    return runs, left_out


def _fmt(point: float, low: float, high: float, digits: int = 2) -> str:
    if np.isnan(low):
        return f"{point:.{digits}f} [n/a: 1 seed]"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean over seeds with its bootstrap CI; no interval from a single seed."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan"), float("nan")
    return stats.stratified_bootstrap_ci(values, stats.mean)


def _diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Mean(a) - mean(b) over seeds with its bootstrap CI; no interval from a single seed."""
    if min(len(a), len(b)) < 2:
        return float(a.mean() - b.mean()), float("nan"), float("nan")
    return stats.mean_difference_ci(a, b)


def _verdict(label: str, diff: tuple[float, float, float], what: str) -> str:
    point, low, high = diff
    if np.isnan(low):
        return f"one seed only, too few for an interval or a verdict ({point:+.2f})"
    if low > 0:
        return f"{label} higher {what} ({_fmt(*diff)}; the 95% CI excludes 0)"
    if high < 0:
        return f"{label} lower {what} ({_fmt(*diff)}; the 95% CI excludes 0)"
    return f"no detectable difference in {what} ({_fmt(*diff)}; the 95% CI includes 0)"


def write_report(suite: Suite, out_dir: Path | None = None) -> Path:
    """Write ``report.md``, ``summary.json`` and the PNG figures; return the report path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir or suite.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, missing = collect(suite)
    labels = list(suite.algos)
    baseline = next((label for label in labels if suite.algos[label]["algo"] == "ppo"), labels[0])
    others = [label for label in labels if label != baseline]
    tasks = [task for task in suite.tasks if all((task, label) in runs for label in labels)]
    grid = np.linspace(suite.total_steps / GRID_POINTS, suite.total_steps, GRID_POINTS)
    random_path = suite.runs_dir / "random_policy.json"
    random_policy = json.loads(random_path.read_text()) if random_path.exists() else {}

    summary: dict = {
        "suite": suite.name,
        "total_steps": suite.total_steps,
        "seeds": suite.seeds,
        "missing_runs": missing,
        "tasks": {},
        "overall": {},
    }
    lines = _intro(suite, missing)

    final_scores = {label: [] for label in labels}  # label -> per task arrays of seeds
    auc_scores = {label: [] for label in labels}
    final_diffs = {label: [] for label in others}  # label -> per task (point, low, high) vs the baseline
    for task in tasks:
        summary["tasks"][task] = {}
        fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
        lines += _task_heading(task, random_policy)
        for label in labels:
            data = runs[(task, label)]
            success_curves = np.stack([r.on_grid(r.success, grid, 0.0) for r in data])
            return_curves = np.stack([r.on_grid(r.returns, grid, r.returns[0]) for r in data])
            final = np.array([r.success[-1] for r in data])
            auc = success_curves.mean(axis=1)
            final_scores[label].append(final)
            auc_scores[label].append(auc)
            summary["tasks"][task][label] = row = _algo_row(data, final, auc)
            lines.append(_algo_table_line(label, row))
            for ax, curves in ((ax_s, success_curves), (ax_r, return_curves)):
                mean_curve, low, high = stats.bootstrap_band(curves)
                ax.plot(grid, mean_curve, label=f"{label} (n={len(data)})")
                ax.fill_between(grid, low, high, alpha=0.25)
        for label in others:
            diff = _diff_ci(final_scores[label][-1], final_scores[baseline][-1])
            final_diffs[label].append(diff)
            summary["tasks"][task][f"{label}_minus_{baseline}_final_success"] = diff
            lines += ["", f"{label} vs {baseline}: {_verdict(label, diff, 'final success rate')}."]
        ax_s.set(
            title=f"{task}: success rate (last 100 episodes)", xlabel="agent steps (all envs)", ylabel="success rate"
        )
        ax_r.set(title=f"{task}: return (last 100 episodes)", xlabel="agent steps (all envs)", ylabel="return")
        figure = f"curves-{task.replace(':', '-')}.png"
        _save_figure(fig, (ax_s, ax_r), out_dir / figure)
        lines += ["", f"![{task} curves]({figure})", ""]
        lines += _episode_figure(runs, task, labels, out_dir, plt)

    if tasks:
        lines += _overall(labels, baseline, others, final_scores, auc_scores, summary)
    if random_policy and others and len(tasks) > 1:
        lines += _ladder_figure(tasks, baseline, others, final_diffs, random_policy, out_dir, plt)

    (out_dir / "summary.json").write_text(json.dumps(_without_nan(summary), indent=2))
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _intro(suite: Suite, missing: list[str]) -> list[str]:
    """The report's title, how it was made, and which runs it leaves out."""
    lines = [f"# Suite `{suite.name}`", "", suite.description.strip(), ""]
    lines += [
        f"Generated by `mario-apo suite report {suite.path}` from the run dirs under `{suite.runs_dir}/`. "
        f"Budget: {suite.total_steps:,} agent steps per run, seeds {suite.seeds}. "
        "Intervals are 95% bootstrap CIs over seeds.",
        "",
    ]
    if missing:
        lines += [
            f"**Incomplete:** {len(missing)} of {len(expand(suite))} runs are left out (not finished, or "
            f"their seed is not finished for every task and algo): "
            f"{', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}.",
            "",
        ]
    return lines


def _task_heading(task: str, random_policy: dict) -> list[str]:
    """A task's section title, its random-policy success rate, and its table's header."""
    lines = [f"## {task}", ""]
    if task in random_policy:
        lines += [
            f"Uniform-random policy success rate: {random_policy[task]['success_rate']:.3f} "
            f"({random_policy[task]['episodes']} episodes).",
            "",
        ]
    return lines + [
        "| algo | seeds | final success | success AUC | final return (100 ep.) "
        "| steps to first success (median; never) | forgot |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]


def _algo_row(data: list[RunData], final: np.ndarray, auc: np.ndarray) -> dict:
    """One algo's numbers on one task, over its seeds."""
    firsts = [r.first_success_step for r in data]
    reached = [f for f in firsts if f is not None]
    return {
        "seeds": len(data),
        "final_success": _mean_ci(final),
        "success_auc": _mean_ci(auc),
        "final_return": _mean_ci(np.array([r.returns[-1] for r in data])),
        "median_steps_to_first_success": float(np.median(reached)) if reached else None,
        "never_succeeded": len(firsts) - len(reached),
        "forgetting_fraction": float(np.mean([r.forgot for r in data])),
    }


def _algo_table_line(label: str, row: dict) -> str:
    steps = row["median_steps_to_first_success"]
    first_text = f"{steps:,.0f}" if steps is not None else "-"
    return (
        f"| {label} | {row['seeds']} | {_fmt(*row['final_success'])} | {_fmt(*row['success_auc'])} | "
        f"{_fmt(*row['final_return'])} | {first_text}; {row['never_succeeded']} | {row['forgetting_fraction']:.2f} |"
    )


def _without_nan(value):
    """JSON has no NaN: a missing interval (one seed) becomes null."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def _save_figure(fig, axes, path: Path) -> None:
    """Legend and grid on every axis; save the figure and free it."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _overall(labels, baseline, others, final_scores, auc_scores, summary) -> list[str]:
    lines = [
        "## Overall (all tasks)",
        "",
        "IQM over all (task, seed) scores with 95% stratified bootstrap CIs; P(X > Y) as in rliable.",
        "",
        "| algo | IQM final success | IQM success AUC |",
        "| --- | --- | --- |",
    ]
    for label in labels:
        final = np.stack(final_scores[label], axis=1)
        auc = np.stack(auc_scores[label], axis=1)
        row = {
            "iqm_final_success": stats.stratified_bootstrap_ci(final, stats.iqm),
            "iqm_success_auc": stats.stratified_bootstrap_ci(auc, stats.iqm),
        }
        summary["overall"][label] = row
        lines.append(f"| {label} | {_fmt(*row['iqm_final_success'])} | {_fmt(*row['iqm_success_auc'])} |")
    lines.append("")
    for label in others:
        x_final, y_final = np.stack(final_scores[label], 1), np.stack(final_scores[baseline], 1)
        x_auc, y_auc = np.stack(auc_scores[label], 1), np.stack(auc_scores[baseline], 1)
        poi_final = stats.probability_of_improvement_ci(x_final, y_final)
        poi_auc = stats.probability_of_improvement_ci(x_auc, y_auc)
        summary["overall"][f"P({label}>{baseline})"] = {"final_success": poi_final, "success_auc": poi_auc}
        lines.append(
            f"P({label} > {baseline}): final success {_fmt(*poi_final)}, success AUC {_fmt(*poi_auc)} "
            "(0.5 = no difference)."
        )
    return lines + [""]


def _episode_figure(runs, task, labels, out_dir: Path, plt) -> list[str]:
    """The talk's figure: return, 100-episode moving average, vs episodes; mean and 95% CI over seeds."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label in labels:
        data = runs[(task, label)]
        length = min(len(r.episode_returns) for r in data)
        if length == 0:
            continue
        curves = []
        for r in data:
            cumulative = np.cumsum(np.insert(r.episode_returns[:length], 0, 0.0))
            window = np.minimum(np.arange(1, length + 1), 100)
            curves.append((cumulative[1:] - cumulative[np.arange(1, length + 1) - window]) / window)
        mean_curve, low, high = stats.bootstrap_band(np.stack(curves))
        episodes = np.arange(1, length + 1)
        ax.plot(episodes, mean_curve, label=f"{label} (n={len(data)})")
        ax.fill_between(episodes, low, high, alpha=0.25)
    ax.set(title=f"{task}: return, 100-episode moving average", xlabel="episode", ylabel="return")
    figure = f"episodes-{task.replace(':', '-')}.png"
    _save_figure(fig, (ax,), out_dir / figure)
    return [
        "### Return vs episodes (the talk's figure)",
        "",
        "Return, 100-episode moving average, mean and 95% CI over seeds; episodes counted up to the "
        "shortest run's episode count.",
        "",
        f"![{task} moving average]({figure})",
        "",
    ]


def _ladder_figure(tasks, baseline, others, final_diffs, random_policy, out_dir: Path, plt) -> list[str]:
    """The hypothesis in one picture: APO - PPO final success vs how often a random policy succeeds."""
    fig, ax = plt.subplots(figsize=(7, 4))
    rows = [
        "| task | random-policy success | " + " | ".join(f"{label} - {baseline}" for label in others) + " |",
        "| --- | --- | " + " | ".join("---" for _ in others) + " |",
    ]
    for label in others:
        rungs = []
        for k, task in enumerate(tasks):
            if task in random_policy:
                point, low, high = final_diffs[label][k]
                rungs.append((max(random_policy[task]["success_rate"], 1e-3), point, point - low, high - point, task))
        rungs.sort()  # rarest rung first
        xs, points, lows, highs, names = zip(*rungs, strict=True)
        ax.errorbar(xs, points, yerr=[lows, highs], fmt="o-", capsize=4, label=f"{label} - {baseline}")
        for x, point, name in zip(xs, points, names, strict=True):
            ax.annotate(name.split(":", 2)[-1], (x, point), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for k, task in enumerate(tasks):
        if task in random_policy:
            cells = [_fmt(*final_diffs[label][k]) for label in others]
            rows.append(f"| {task} | {random_policy[task]['success_rate']:.3f} | " + " | ".join(cells) + " |")
    ax.axhline(0.0, color="grey", lw=1)
    ax.set_xscale("log")
    ax.set(
        title="Anchoring benefit vs goal rarity",
        xlabel="random-policy success rate (log; rarer to the left)",
        ylabel="final success rate difference",
    )
    _save_figure(fig, (ax,), out_dir / "ladder.png")
    return [
        "## The ladder: anchoring benefit vs goal rarity",
        "",
        *rows,
        "",
        "A random policy that never succeeded is drawn at 0.001.",
        "",
        "![ladder](ladder.png)",
        "",
    ]
