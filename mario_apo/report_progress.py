"""A suite report's sections on whether and when learning starts. ``progress_section``, for Mario's dense
reward: how far along the level the training episodes got, per window of agent steps, beside a
uniform-random policy on the same env (the level's committed calibration, ``mario-apo calibrate``); it
answers "does PPO learn the level at all", which a success rate alone cannot while the flag is rarely
reached. ``onset_section``: the final-policy evaluation at each ``--final-eval-at`` budget of the runs,
beside the random policy's success rate: the budget below which a suite on the task measures nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mario_apo import stats
from mario_apo.calibrate import DEFAULT_OUT
from mario_apo.config import EnvConfig, settings_from_record
from mario_apo.run_logs import read_level_calibration
from mario_apo.tasks import parse_task

PROGRESS_WINDOWS = 20


def random_policy_progress(level: str, env_cfg: EnvConfig, calibration_dir: Path = DEFAULT_OUT) -> dict | None:
    """The uniform-random policy's mean max x and flag rate on ``level`` from its calibration, if it was
    calibrated under exactly these env settings (None otherwise)."""
    path = calibration_dir / f"calibration-{level}.json"
    if not path.exists():
        return None
    record = read_level_calibration(path)
    if EnvConfig.from_record(settings_from_record(EnvConfig, record.get("env"), f"{path}: env")) != env_cfg:
        return None
    curve = record["curve"]  # P(max x >= x) at every distinct max x of the random episodes
    xs, survival = np.array(curve["x"], float), np.append(curve["rate"], 0.0)
    return {
        "episodes": record["episodes"],
        "mean_max_x": float((xs * (survival[:-1] - survival[1:])).sum()),
        "max_x": int(xs.max()),
        "source": str(path),
    }


def windowed(steps: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of ``values`` among the episodes that ended in each window ``(edges[k], edges[k + 1]]`` (NaN
    where none ended)."""
    which = np.searchsorted(edges, steps, side="left") - 1
    return np.array([values[which == k].mean() if (which == k).any() else np.nan for k in range(len(edges) - 1)])


def _over_seeds(curves: np.ndarray) -> np.ndarray:
    """Per window, the mean over the seeds in which some episode ended there (NaN where none did)."""
    counts = (~np.isnan(curves)).sum(axis=0)
    return np.where(counts > 0, np.nansum(curves, axis=0) / np.maximum(counts, 1), np.nan)


def progress_section(task: str, task_runs: dict, env_cfg: EnvConfig, total_steps: int, out_dir: Path, plt) -> tuple:
    """Markdown lines and the numbers (for summary.json) of the progress section of one dense Mario task.

    :param task_runs: per algo label, its runs (``mario_apo.report.RunData``)
    """
    edges = np.linspace(0, total_steps, PROGRESS_WINDOWS + 1)
    random = random_policy_progress(parse_task(task).level, env_cfg)
    numbers: dict = {"window_edges": edges.tolist(), "random_policy": random, "algos": {}}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, data in task_runs.items():
        max_x = np.stack([windowed(r.episode_steps, r.episode_max_x.astype(float), edges) for r in data])
        flags = np.stack([windowed(r.episode_steps, r.episode_success.astype(float), edges) for r in data])
        final = [r.final_eval.get("sampled", {}) for r in data if r.final_eval]
        numbers["algos"][label] = {
            "mean_max_x": _over_seeds(max_x).tolist(),
            "flag_rate": _over_seeds(flags).tolist(),
            "flags": [int(r.episode_success.sum()) for r in data],
            "episodes": [int(r.episode_success.size) for r in data],
            "final_sampled_mean_max_x": [f.get("mean_max_x") for f in final],
            "final_sampled_success": [f.get("success_rate") for f in final],
        }
        centres = (edges[:-1] + edges[1:]) / 2
        for ax, curves in zip(axes, (max_x, flags), strict=True):
            filled = np.where(np.isnan(curves), np.nanmean(curves), curves)  # only a window where no episode ended
            mean, low, high = stats.bootstrap_band(filled)
            ax.plot(centres, mean, label=f"{label} (n={len(data)})")
            ax.fill_between(centres, low, high, alpha=0.25)
    if random is not None:
        axes[0].axhline(random["mean_max_x"], color="grey", linestyle="--", label="uniform-random policy")
        axes[1].axhline(0.0, color="grey", linestyle="--")
    axes[0].set(title=f"{task}: mean max x of training episodes", ylabel="max x (px)")
    axes[1].set(title="flag reached (training episodes)", ylabel="rate")
    for ax in axes:
        label_agent_steps(ax)
    axes[0].legend(fontsize=8)
    figure = f"progress-{task.replace(':', '-')}.png"
    fig.tight_layout()
    fig.savefig(out_dir / figure, dpi=110)
    plt.close(fig)
    return _lines(task, numbers, edges, figure), numbers


def label_agent_steps(ax, label: str = "agent steps") -> None:
    """The x axis in agent steps written as 50k / 1.5M: full integers run into each other from 100k on."""
    from matplotlib.ticker import FuncFormatter

    def short(steps: float, _position) -> str:
        return f"{steps / 1e6:g}M" if abs(steps) >= 1e6 else f"{steps / 1e3:g}k" if steps else "0"

    ax.xaxis.set_major_formatter(FuncFormatter(short))
    ax.set_xlabel(label)


def _lines(task: str, numbers: dict, edges: np.ndarray, figure: str) -> list[str]:
    random = numbers["random_policy"]
    if random is None:
        reference = "No calibration of this level under these env settings: no random-policy reference."
    else:
        reference = (
            f"Uniform-random policy on the same env ({random['episodes']:,} episodes, {random['source']}): "
            f"mean max x {random['mean_max_x']:.0f}, furthest {random['max_x']}, so the flag is never reached."
        )
    lines = [
        "### How far along the level (training episodes)",
        "",
        f"Mean max x and flag rate of the training episodes that ended in each window of "
        f"{edges[1] - edges[0]:,.0f} agent steps, mean over seeds (figure: 95% bootstrap band). {reference}",
        "",
    ]
    labels = list(numbers["algos"])
    lines += ["| window end (agent steps) | " + " | ".join(f"{label}: max x / flag rate" for label in labels) + " |"]
    lines += ["| --- |" + " --- |" * len(labels)]
    for k, end in enumerate(edges[1:]):
        algos = [numbers["algos"][label] for label in labels]
        cells = [
            "-" if np.isnan(a["mean_max_x"][k]) else f"{a['mean_max_x'][k]:.0f} / {a['flag_rate'][k]:.3f}"
            for a in algos
        ]
        lines.append(f"| {end:,.0f} | " + " | ".join(cells) + " |")
    lines.append("")
    for label in labels:
        algo = numbers["algos"][label]
        finals = ", ".join(f"{x:.0f}" for x in algo["final_sampled_mean_max_x"] if x is not None) or "-"
        lines.append(
            f"- {label}: the flag in {sum(algo['flags'])} of {sum(algo['episodes']):,} training episodes "
            f"(per seed {algo['flags']}); final policy (sampled) mean max x per seed: {finals}."
        )
    lines += ["", f"![{task} progress]({figure})", ""]
    return lines


def onset_section(task_runs: dict, random_policy: dict | None) -> tuple[list[str], dict]:
    """Markdown lines and numbers: per budget, each algo's final-policy success (sampled) over seeds, with
    a t 95% interval, beside the random policy's rate (``random_policy.json``'s entry for the task)."""
    budgets = sorted({int(b) for data in task_runs.values() for r in data for b in r.budget_evals}, key=int)
    numbers: dict = {}
    random = "" if random_policy is None else f" The uniform-random policy's rate: {random_policy['success_rate']:.3f}."
    lines = [
        "### The onset: the final-policy evaluation at intermediate budgets",
        "",
        "Each run's policy at each budget, evaluated as the final policy is (the same fresh episodes); "
        f"success rate (sampled), mean over seeds with a t 95% interval, then each seed's rate and its greedy "
        f"successes.{random}",
        "",
        "| budget (agent steps) | " + " | ".join(task_runs) + " |",
        "| --- |" + " --- |" * len(task_runs),
    ]
    for budget in [*budgets, "final"]:
        cells = []
        for label, data in task_runs.items():
            evals = [r.final_eval if budget == "final" else r.budget_evals.get(str(budget)) for r in data]
            sampled = [e["sampled"] for e in evals if e and "sampled" in e]
            rates = np.array([result["success_rate"] for result in sampled])
            # a one-sample t-interval: the mean against 0
            point, low, high = stats.paired_t_ci(rates, np.zeros_like(rates)) if rates.size > 1 else (np.nan,) * 3
            # where sampled success is near random, greedy successes say whether the argmax has learned
            # anything, and the sampled distance whether play moved at all
            greedy = [f"{e['greedy']['successes']}/{e['greedy']['episodes']}" for e in evals if e and "greedy" in e]
            max_x = [result.get("mean_max_x") for result in sampled]
            numbers.setdefault(label, {})[str(budget)] = {
                "rates": rates.tolist(),
                "t95": [point, low, high],
                "greedy_successes": greedy,
                "sampled_mean_max_x": max_x,
            }
            per_seed = ", ".join(f"{rate:.2f}" for rate in rates)
            greedy_text = f"; greedy {', '.join(greedy)}" if greedy else ""
            if rates.size > 1:
                cells.append(f"{point:.3f} [{low:.3f}, {high:.3f}] (n={rates.size}: {per_seed}){greedy_text}")
            else:  # one seed has no interval, but its rate still says where that run stands
                cells.append(f"{per_seed} (n=1, no interval){greedy_text}" if rates.size else "-")
        lines.append(f"| {budget if budget == 'final' else f'{budget:,}'} | " + " | ".join(cells) + " |")
    return [*lines, ""], numbers
