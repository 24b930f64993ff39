"""A suite's report from its local run dirs only (no network): Markdown, PNG figures, JSON summary.

The metric is the final policy (the protocol's): each run's ``summary.json`` holds its final
checkpoint evaluated on fresh episodes with sampled and with greedy actions. Runs that predate
that evaluation fall back to the success rate of their last 100 training episodes, and the
report says so. Per run besides: success per window of agent steps (the learning curve), its
area (the curve's mean, 1.0 = always succeeding), the steps to the first success, whether it
"forgot" (fell below half its peak window after reaching it), and the last update's policy and
anchor diagnostics. Differences between algos are paired by seed (same seed, same env streams):
a t-interval and a bootstrap interval over the per-seed differences, n beside each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mario_apo import stats
from mario_apo.episodes import RECENT_EPISODES
from mario_apo.logger import is_update_record
from mario_apo.report_progress import label_agent_steps, onset_section, progress_section
from mario_apo.run_logs import read_random_policies, read_summary, records
from mario_apo.runs import RunFiles, write_atomic, write_json
from mario_apo.suite import RunSpec, Suite, expand, run_config
from mario_apo.tasks import parse_task

WINDOWS = 20
"""Learning-curve windows per run: success rate among the episodes that ended in each."""
DODGE = 1.08
"""The ladder figure's sideways shift between algos, a factor on its log x axis."""
DIAGNOSTICS = {
    "losses/entropy": "policy entropy",
    "anchor/p_best_entropy": "anchors' p_best entropy",
    "anchor/mean_age_updates": "anchor age (updates)",
    "anchor/mean_length": "anchor length (steps)",
    "anchor/success_count": "successful anchors",
}
"""The last update's diagnostics shown per algo: does APO anchor, or only regularise?"""


@dataclass
class RunData:
    spec: RunSpec
    steps: np.ndarray  # global step of each update
    returns: np.ndarray  # rolling 100-episode mean return at each update
    episode_steps: np.ndarray  # global step at which each episode ended
    episode_returns: np.ndarray
    episode_success: np.ndarray
    final_eval: dict | None  # summary.json's final-policy evaluation (None: the run has none with sampled actions)
    diagnostics: dict[str, float]  # the last value of each DIAGNOSTICS metric the run logged
    episode_max_x: np.ndarray  # furthest x of each episode (Mario; 0 elsewhere)
    budget_evals: dict  # summary.json's final-policy evaluations at --final-eval-at budgets (empty: none)

    @property
    def first_success_step(self) -> int | None:
        hits = np.flatnonzero(self.episode_success)
        return int(self.episode_steps[hits[0]]) if hits.size else None

    def windowed_success(self, edges: np.ndarray) -> np.ndarray:
        """Success rate among the episodes that ended in each window ``(edges[k], edges[k + 1]]``;
        a window in which no episode ended repeats the one before (0 before any)."""
        which = np.searchsorted(edges, self.episode_steps, side="left") - 1
        curve, last = np.zeros(len(edges) - 1), 0.0
        for k in range(len(curve)):
            in_window = self.episode_success[which == k]
            last = float(in_window.mean()) if in_window.size else last
            curve[k] = last
        return curve

    def final_success(self, policy: str) -> float:
        """The final policy's success rate (``sampled`` or ``greedy``); without a final evaluation,
        the last 100 training episodes' (the pre-protocol metric)."""
        if self.final_eval is not None:
            return float(self.final_eval[policy]["success_rate"])
        return float(self.episode_success[-RECENT_EPISODES:].mean()) if self.episode_success.size else 0.0


def forgot(curve: np.ndarray) -> bool:
    """After first reaching its peak, the curve fell below half of it."""
    peak = curve.max(initial=0.0)
    if peak <= 0:
        return False
    return bool((curve[int(np.argmax(curve >= peak)) :] < peak / 2).any())


def load_run(run_dir: Path, spec: RunSpec) -> RunData:
    steps, returns, episode_steps, episode_returns, episode_success, episode_max_x = [], [], [], [], [], []
    diagnostics: dict[str, float] = {}
    files = RunFiles(run_dir)
    for record in records(files.metrics):
        if is_update_record(record):
            steps.append(record["global_step"])
            returns.append(record.get("charts/return_mean_100", np.nan))
            diagnostics.update({key: record[key] for key in DIAGNOSTICS if key in record})
        elif "charts/episodic_return" in record:
            episode_steps.append(record["global_step"])
            episode_returns.append(record["charts/episodic_return"])
            episode_success.append(bool(record["charts/success"]))
            episode_max_x.append(record.get("charts/max_x", 0))
    returns = np.array(returns, dtype=float)
    # before the first episode ends there is no return to average: carry the first one back
    if np.isnan(returns).all():
        returns[:] = 0.0
    else:
        returns = np.where(np.isnan(returns), returns[~np.isnan(returns)][0], returns)
    summary = read_summary(files.summary) if files.summary.exists() else {}  # absent while the run is unfinished
    final_eval = summary.get("final_eval") or {}
    return RunData(
        spec,
        np.array(steps),
        returns,
        np.array(episode_steps),
        np.array(episode_returns, dtype=float),
        np.array(episode_success, dtype=bool),
        final_eval if "sampled" in final_eval else None,  # the protocol's metric is the sampled policy's
        diagnostics,
        np.array(episode_max_x, dtype=int),
        summary.get("budget_evals") or {},
    )


def collect(suite: Suite) -> tuple[dict[tuple[str, str], list[RunData]], list[str]]:
    """Finished runs by (task, algo label), and the names of runs left out.

    Only seeds finished for every (task, algo) are used, so every comparison and every
    stratified statistic sees the same seeds; a suite stopped part-way reports on fewer seeds.
    """
    specs = expand(suite)
    finished = {spec for spec in specs if RunFiles(suite.runs_dir / spec.name).summary.exists()}
    complete_seeds = [seed for seed in suite.seeds if all(s in finished for s in specs if s.seed == seed)]
    runs: dict[tuple[str, str], list[RunData]] = {}
    left_out = []
    for spec in specs:
        if spec.seed not in complete_seeds:
            left_out.append(spec.name)
            continue
        runs.setdefault((spec.task, spec.label), []).append(load_run(suite.runs_dir / spec.name, spec))
    return runs, left_out


def format_ci(point: float, low: float, high: float, digits: int = 2) -> str:
    if np.isnan(low):
        return f"{point:.{digits}f} [n/a: 1 seed]"
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean over seeds with its bootstrap CI; no interval from a single seed."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan"), float("nan")
    return stats.stratified_bootstrap_ci(values, stats.mean)


def _metrics(protocol: bool, greedy: bool, edges: np.ndarray) -> dict[str, tuple[str, callable]]:
    """The per-run scores the report compares: name -> (what it is in words, run -> score); the greedy
    policy's success where every run evaluated it."""
    final = "final-policy success, sampled" if protocol else f"success, last {RECENT_EPISODES} training episodes"
    metrics = {"final_success": (final, lambda r: r.final_success("sampled"))}
    if protocol and greedy:
        metrics["final_success_greedy"] = ("final-policy success, greedy", lambda r: r.final_success("greedy"))
    metrics["success_auc"] = ("success AUC (per-window curve)", lambda r: float(r.windowed_success(edges).mean()))
    return metrics


def _pairs(labels: list[str], baseline: str) -> list[tuple[str, str]]:
    """Every algo vs the PPO baseline, and APO vs each control: ppo-ent (regularisation only) and
    apo-success (anchoring to successes only)."""
    pairs = [(label, baseline) for label in labels if label != baseline]
    if "apo" in labels and baseline != "apo":
        pairs += [("apo", label) for label in labels if label not in (baseline, "apo")]
    return pairs


def _compare(a: list[RunData], b: list[RunData], score) -> dict:
    """A - B paired by seed: mean difference, t-interval and bootstrap interval, n."""
    x, y = np.array([score(r) for r in a]), np.array([score(r) for r in b])
    _, t_low, t_high = stats.paired_t_ci(x, y)
    point, b_low, b_high = stats.paired_difference_ci(x, y) if len(x) > 1 else (float((x - y).mean()), np.nan, np.nan)
    return {
        "n": len(x),
        "mean": point,
        "t95": [t_low, t_high],
        "bootstrap95": [b_low, b_high],
        "seeds_to_resolve": stats.seeds_to_resolve(x - y),
    }


def _verdict(difference: dict) -> str:
    intervals = (difference["t95"], difference["bootstrap95"])
    if np.isnan(intervals[0][0]):
        return "one seed: no interval"
    if np.isclose(*intervals[0], rtol=1e-9, atol=1e-12) and difference["mean"] != 0:
        # With few seeds and 100-episode success rates every seed can differ by the same 0.01: the spread
        # is 0 (up to rounding), the intervals shrink to a point and would call one episode in a hundred a
        # difference.
        return "undecided: every seed differs by the same amount, so the intervals have no width"
    if all(low > 0 for low, _ in intervals):
        return "higher (both intervals exclude 0)"
    if all(high < 0 for _, high in intervals):
        return "lower (both intervals exclude 0)"
    return "no detectable difference"


def write_report(suite: Suite, out_dir: Path | None = None) -> Path:
    """Write ``report.md``, ``summary.json`` and the PNG figures; return the report path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, missing = collect(suite)  # every log is read and checked before anything is written
    random_policy = read_random_policies(suite.runs_dir / "random_policy.json")
    out_dir = Path(out_dir or suite.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(suite.algos)
    baseline = next((label for label in labels if suite.algos[label]["algo"] == "ppo"), labels[0])
    tasks = [task for task in suite.tasks if all((task, label) in runs for label in labels)]
    edges = np.linspace(0, suite.total_steps, WINDOWS + 1)
    protocol = all(r.final_eval is not None for data in runs.values() for r in data)
    metrics = _metrics(protocol, all("greedy" in (r.final_eval or {}) for data in runs.values() for r in data), edges)

    summary: dict = {
        "suite": suite.name,
        "total_steps": suite.total_steps,
        "seeds": suite.seeds,
        "metric": metrics["final_success"][0],
        "missing_runs": missing,
        "tasks": {},
        "overall": {},
    }
    lines = _intro(suite, missing, protocol)
    for task in tasks:
        task_runs = {label: runs[(task, label)] for label in labels}
        rows = {label: _algo_row(data, metrics, edges) for label, data in task_runs.items()}
        comparisons = [
            {"a": a, "b": b, "metric": name, **_compare(task_runs[a], task_runs[b], score)}
            for a, b in _pairs(labels, baseline)
            for name, (_, score) in metrics.items()
        ]
        summary["tasks"][task] = {"algos": rows, "comparisons": comparisons, "success_curves": {}}
        lines += _task_heading(task, random_policy, metrics)
        lines += [_algo_table_line(label, row, metrics) for label, row in rows.items()]
        lines += _per_run_table(task_runs, protocol)
        lines += _comparison_table(comparisons, metrics)
        lines += _diagnostics_table(task_runs)
        lines += _curve_figure(task, task_runs, edges, out_dir, plt, summary["tasks"][task]["success_curves"])
        lines += _episode_figure(runs, task, labels, out_dir, plt)
        if parse_task(task).is_mario and parse_task(task).reward == "dense":
            env_cfg = run_config(suite, RunSpec(task, labels[0], suite.seeds[0])).env
            section, summary["tasks"][task]["progress"] = progress_section(
                task, task_runs, env_cfg, suite.total_steps, out_dir, plt
            )
            lines += section
        if any(r.budget_evals for data in task_runs.values() for r in data):
            section, summary["tasks"][task]["budget_evals"] = onset_section(task_runs, random_policy.get(task))
            lines += section

    if tasks:
        scores = {
            label: {name: np.stack([[score(r) for r in runs[(task, label)]] for task in tasks], axis=1)
                    for name, (_, score) in metrics.items()}
            for label in labels
        }  # fmt: skip
        lines += _overall(labels, baseline, scores, metrics, summary)
    if random_policy and len(labels) > 1 and len(tasks) > 1:
        lines += _ladder_figure(tasks, baseline, labels, summary, random_policy, out_dir, plt)
    if tasks and len(labels) > 1:
        lines += _verdict_section(tasks, runs, labels, summary, random_policy, metrics)
    summary["random_policy"] = {task: random_policy[task] for task in tasks if task in random_policy}
    summary["baseline"] = baseline

    write_json(out_dir / "summary.json", _without_nan(summary))  # the report's own numbers, beside report.md
    report = out_dir / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    return report


def _intro(suite: Suite, missing: list[str], protocol: bool) -> list[str]:
    """The report's title, how it was made, what its metric is, and which runs it leaves out."""
    lines = [f"# Suite `{suite.name}`", "", suite.description.strip(), ""]
    lines += [
        f"Generated by `mario-apo suite report {suite.path}` from the run dirs under `{suite.runs_dir}/`. "
        f"Budget: {suite.total_steps:,} agent steps per run, seeds {suite.seeds}. Means over seeds carry 95% "
        "bootstrap CIs; differences are paired by seed, with a t-interval and a bootstrap interval "
        f"({stats.PAIRED_REPS:,} resamples), n beside each. Learning curves: success rate among the episodes that "
        f"ended in each of {WINDOWS} equal windows of agent steps. After the first success in training, a run "
        "*kept* it if its final policy still reaches the goal (sampled success > 0) and *lost* it if not.",
        "",
    ]
    if not protocol:
        lines += [
            '**Pre-protocol runs:** these runs have no final-policy evaluation, so "final success" here is '
            f"the success rate of each run's last {RECENT_EPISODES} training episodes, which spans a different "
            "share of the run on every task.",
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


def _task_heading(task: str, random_policy: dict, metrics: dict) -> list[str]:
    """A task's section title, its random-policy success rate, and its table's header."""
    lines = [f"## {task}", ""]
    if task in random_policy:
        rate = random_policy[task]
        interval = " [{:.3f}, {:.3f}], Wilson 95%".format(*rate["wilson_95"]) if "wilson_95" in rate else ""
        lines += [
            f"Uniform-random policy success rate: {rate['success_rate']:.3f} ({rate['episodes']} episodes{interval}).",
            "",
        ]
    return lines + table_header(
        [
            "algo",
            "n",
            *(what for what, _ in metrics.values()),
            "steps to first success (median); then kept / lost / never found",
            "forgot",
        ]
    )


def table_header(columns: list[str]) -> list[str]:
    """A Markdown table's header and separator lines, so that the two always have as many cells."""
    return ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]


def _algo_row(data: list[RunData], metrics: dict, edges: np.ndarray) -> dict:
    """One algo's numbers on one task, over its seeds."""
    firsts = [r.first_success_step for r in data]
    reached = [f for f in firsts if f is not None]
    found = [r for r in data if r.first_success_step is not None]
    row = {"n": len(data)}
    row.update({name: mean_ci(np.array([score(r) for r in data])) for name, (_, score) in metrics.items()})
    row.update(
        {
            "median_steps_to_first_success": float(np.median(reached)) if reached else None,
            "never_succeeded": len(firsts) - len(reached),
            "kept_first_success": sum(r.final_success("sampled") > 0 for r in found),
            "lost_first_success": sum(r.final_success("sampled") == 0 for r in found),
            "forgetting_fraction": float(np.mean([forgot(r.windowed_success(edges)) for r in data])),
        }
    )
    return row


def _algo_table_line(label: str, row: dict, metrics: dict) -> str:
    steps = row["median_steps_to_first_success"]
    first_text = f"{steps:,.0f}" if steps is not None else "-"
    cells = " | ".join(format_ci(*row[name]) for name in metrics)
    forgetting = row["forgetting_fraction"]
    outcome = f"{row['kept_first_success']} / {row['lost_first_success']} / {row['never_succeeded']}"
    return f"| {label} | {row['n']} | {cells} | {first_text}; {outcome} | {forgetting:.2f} |"


def _per_run_table(task_runs: dict[str, list[RunData]], protocol: bool) -> list[str]:
    """Each run's final-policy successes with their Wilson interval, and its evaluation's cost."""
    if not protocol:
        return [""]
    lines = [
        "",
        "<details><summary>Per run: final-policy successes (Wilson 95%) and evaluation cost</summary>",
        "",
        *table_header(["run", "sampled", "greedy", "eval steps (not in the budget)"]),
    ]
    for data in task_runs.values():
        for r in data:
            cells = []
            for policy in ("sampled", "greedy"):
                result = r.final_eval.get(policy)
                cells.append(
                    "-"
                    if result is None
                    else f"{result['successes']}/{result['episodes']} [{result['wilson95'][0]:.2f}, "
                    f"{result['wilson95'][1]:.2f}]"
                )
            lines.append(f"| {r.spec.name} | {cells[0]} | {cells[1]} | {r.final_eval['steps']:,} |")
    return lines + ["", "</details>", ""]


def _comparison_table(comparisons: list[dict], metrics: dict) -> list[str]:
    if not comparisons:  # a suite of one algorithm (a pilot): nothing to pair
        return ["One algorithm: no paired differences.", ""]
    n = min(c["n"] for c in comparisons)
    lines = [
        "Paired differences (A - B, per seed):",
        "",
        *table_header(["A - B", "metric", "n", "mean", "t 95% CI", "bootstrap 95% CI", "verdict"]),
    ]
    for c in comparisons:
        lines.append(
            f"| {c['a']} - {c['b']} | {metrics[c['metric']][0]} | {c['n']} | {c['mean']:+.3f} | "
            f"{format_ci(c['mean'], *c['t95'], digits=3)} | {format_ci(c['mean'], *c['bootstrap95'], digits=3)} | "
            f"{_verdict(c)} |"
        )
    if n < 10:
        lines += [
            "",
            f"n = {n} < 10: these intervals are approximate (a percentile bootstrap under-covers at small n; "
            "the t-interval assumes normal per-seed differences, which success rates near 0 or 1 are not).",
        ]
    return lines + [""]


def _diagnostics_table(task_runs: dict[str, list[RunData]]) -> list[str]:
    """Policy entropy beside the anchors' own: an APO whose anchors are near-uniform early episodes
    regularises rather than anchors."""
    keys = [key for key in DIAGNOSTICS if any(key in r.diagnostics for data in task_runs.values() for r in data)]
    lines = ["At the last update (mean over seeds):", "", *table_header(["algo", *(DIAGNOSTICS[k] for k in keys)])]
    for label, data in task_runs.items():
        cells = []
        for key in keys:
            values = [r.diagnostics[key] for r in data if key in r.diagnostics]
            cells.append(f"{np.mean(values):.3g}" if values else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _curve_figure(
    task: str, task_runs: dict[str, list[RunData]], edges: np.ndarray, out_dir: Path, plt, curves_out: dict
) -> list[str]:
    """Success per window and the 100-episode return vs agent steps; mean and 95% band over seeds.
    ``curves_out`` receives the window centres and each algo's mean success curve (for summary.json)."""
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(11, 4))
    centres = (edges[:-1] + edges[1:]) / 2
    curves_out["steps"] = centres.tolist()
    for label, data in task_runs.items():
        success = np.stack([r.windowed_success(edges) for r in data])
        returns = np.stack([np.interp(centres, r.steps, r.returns) for r in data])
        curves_out[label] = success.mean(axis=0).tolist()
        for ax, curves in ((ax_s, success), (ax_r, returns)):
            mean_curve, low, high = stats.bootstrap_band(curves)
            ax.plot(centres, mean_curve, label=f"{label} (n={len(data)})")
            ax.fill_between(centres, low, high, alpha=0.25)
    window = edges[1] - edges[0]
    ax_s.set(title=f"{task}: success per {window:,.0f}-step window", ylabel="success")
    ax_r.set(title=f"{task}: return (last 100 episodes)", ylabel="return")
    for ax in (ax_s, ax_r):
        label_agent_steps(ax, "agent steps (all envs)")
    figure = f"curves-{task.replace(':', '-')}.png"
    _save_figure(fig, (ax_s, ax_r), out_dir / figure)
    return ["", f"![{task} curves]({figure})", ""]


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


def _overall(labels, baseline, scores, metrics, summary) -> list[str]:
    """IQM per algo over every (task, seed) score and P(algo > baseline), as rliable defines them."""
    names = [name for name in ("final_success", "success_auc") if name in metrics]
    lines = [
        "## Overall (all tasks)",
        "",
        "IQM over all (task, seed) scores with 95% stratified bootstrap CIs; P(X > Y) as in rliable.",
        "",
        *table_header(["algo", *(f"IQM {metrics[name][0]}" for name in names)]),
    ]
    for label in labels:
        summary["overall"][label] = row = {f"iqm_{name}": stats.stratified_bootstrap_ci(scores[label][name], stats.iqm)
                                           for name in names}  # fmt: skip
        lines.append(f"| {label} | " + " | ".join(format_ci(*row[f"iqm_{name}"]) for name in names) + " |")
    lines.append("")
    for label in labels:
        if label == baseline:
            continue
        poi = {name: stats.probability_of_improvement_ci(scores[label][name], scores[baseline][name]) for name in names}
        summary["overall"][f"P({label}>{baseline})"] = poi
        text = ", ".join(f"{metrics[name][0]} {format_ci(*poi[name])}" for name in names)
        lines.append(f"P({label} > {baseline}): {text} (0.5 = no difference).")
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


def _ladder_figure(tasks, baseline, labels, summary, random_policy, out_dir: Path, plt) -> list[str]:
    """The hypothesis in one picture: each algo's paired final-success difference from the baseline vs
    how often a uniform-random policy succeeds (its Wilson interval as horizontal bars)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    others = [label for label in labels if label != baseline]
    rows = table_header(["task", "random-policy success", *(f"{label} - {baseline} (n)" for label in others)])

    def difference(task: str, label: str) -> dict:
        return next(
            c for c in summary["tasks"][task]["comparisons"]
            if (c["a"], c["b"], c["metric"]) == (label, baseline, "final_success")
        )  # fmt: skip

    rated = sorted((t for t in tasks if t in random_policy), key=lambda t: random_policy[t]["success_rate"])
    floor = 1e-3  # a rung a random policy never solved is drawn here
    xs = np.array([max(random_policy[t]["success_rate"], floor) for t in rated])
    x_low = [max(random_policy[t].get("wilson_95", (x, x))[0], floor) for t, x in zip(rated, xs, strict=True)]
    x_high = [max(random_policy[t].get("wilson_95", (x, x))[1], floor) for t, x in zip(rated, xs, strict=True)]
    for i, label in enumerate(others):
        diffs = [difference(t, label) for t in rated]
        points = np.array([d["mean"] for d in diffs])
        lows = np.array([d["bootstrap95"][0] for d in diffs])
        highs = np.array([d["bootstrap95"][1] for d in diffs])
        # Arms often tie (differences are multiples of 1/episodes): shift each sideways on the log axis so
        # one arm's markers and bars don't hide another's; the whole bar moves with its marker.
        dodge = DODGE ** (i - (len(others) - 1) / 2)
        ax.errorbar(xs * dodge, points, yerr=[points - lows, highs - points],
                    xerr=[(xs - x_low) * dodge, (np.array(x_high) - xs) * dodge],
                    fmt="o-", capsize=4, label=f"{label} - {baseline}")  # fmt: skip
    for task in rated:
        cells = [
            f"{format_ci(d['mean'], *d['bootstrap95'])} ({d['n']})" for d in (difference(task, lb) for lb in others)
        ]
        rows.append(f"| {task} | {random_policy[task]['success_rate']:.3f} | " + " | ".join(cells) + " |")
    ax.axhline(0.0, color="grey", lw=1)
    ax.set_xscale("log")
    # Rung names along the top edge, where no marker or bar can sit on them (set after the log scale,
    # which would reset them to powers of ten).
    rungs = ax.secondary_xaxis("top")
    rungs.set_xticks(xs, [task.split(":", 2)[-1] for task in rated], fontsize=8)
    rungs.minorticks_off()
    ax.set(
        title="Anchoring benefit vs goal rarity",
        xlabel="random-policy success rate (log; rarer to the left)",
        ylabel=f"final success - {baseline} (paired)",
    )
    _save_figure(fig, (ax,), out_dir / "ladder.png")
    return [
        "## The ladder: difference from the baseline vs goal rarity",
        "",
        *rows,
        "",
        f"Paired bootstrap 95% intervals. A random policy that never succeeded is drawn at {floor}. In the "
        f"figure each algo is shifted sideways by a factor {DODGE} per algo so tied points stay visible; the "
        "rung's random success rate is the table's.",
        "",
        "![ladder](ladder.png)",
        "",
    ]


def _seeds_to_resolve_note(difference: dict) -> str:
    """The budget that would settle an unresolved paired difference, in words."""
    if difference["seeds_to_resolve"]:
        return f"; seeds to resolve: {difference['seeds_to_resolve']:,}"
    if abs(difference["mean"]) < 1e-9:  # success rates are hundredths: what is left is rounding
        return "; the mean difference is 0"
    return f"; seeds to resolve: more than {stats.MOST_SEEDS_TO_RESOLVE:,}"  # a mean tiny beside its spread


def _verdict_section(tasks, runs, labels, summary, random_policy, metrics) -> list[str]:
    """The comparisons on the headline metric in words, rarest rung first, with what an unresolved one
    would cost to settle: the seeds its observed mean and spread call for, times a run's agent steps."""
    rarity = {task: random_policy.get(task, {}).get("success_rate", np.inf) for task in tasks}
    lines = [
        f"## Verdict: {metrics['final_success'][0]} (paired by seed)",
        "",
        '"Higher" or "lower" where the t and the bootstrap intervals both exclude 0. "Seeds to resolve": how '
        "many seeds the t-interval would need to exclude 0 if the per-seed differences kept the mean and "
        "spread measured here.",
        "",
    ]
    for task in sorted(tasks, key=rarity.get):
        random_rate = f" (random policy {rarity[task]:.3f})" if np.isfinite(rarity[task]) else ""
        lines.append(f"- **{task}**{random_rate}:")
        for c in summary["tasks"][task]["comparisons"]:
            if c["metric"] != "final_success":
                continue
            verdict = _verdict(c)
            if verdict == "no detectable difference":
                verdict += _seeds_to_resolve_note(c)
            t_interval = "" if np.isnan(c["t95"][0]) else " t 95% [{:+.3f}, {:+.3f}],".format(*c["t95"])
            lines.append(f"  - {c['a']} - {c['b']}: {c['mean']:+.3f},{t_interval} n = {c['n']}: {verdict}.")
    steps = [
        r.steps[-1] + (r.final_eval["steps"] if r.final_eval else 0)
        for task in tasks
        for label in labels
        for r in runs[(task, label)]
    ]
    lines += [
        "",
        f"A seed costs one run per algo and rung: here {np.mean(steps):,.0f} agent steps on average "
        "(training and the final evaluation).",
        "",
    ]
    return lines
