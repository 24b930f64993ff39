"""How rare is the goal? A uniform-random policy's success curve, P(max x >= X), per Mario level,
and its success rate on any other task (``calibrate_task``: a MiniGrid rung is a size or a step limit).

``mario-apo calibrate`` plays N random episodes under the exact env settings a
training run uses (action set, frame skip, sticky actions, stall and time limits)
and writes, per level, the whole rarity curve at once: for every X, the fraction
of episodes whose furthest x reached X, with a Wilson 95% interval. A ``goal:X``
rung succeeds exactly when the episode reaches X, so its random success rate is
this curve at X; the rungs of a ladder are the X nearest each target rarity.

Episodes are independent of how they are spread over worker processes: episode
``i`` is seeded from ``SeedSequence(seed)``'s ``i``-th child, as are its actions.

Each episode's x-position after every agent step is kept, so the effect of a
stall truncation can be computed exactly afterwards: with a random policy, a
stall-truncated episode is a prefix of the untruncated one.
"""

from __future__ import annotations

import multiprocessing
import signal
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mario_apo.config import EnvConfig
from mario_apo.runs import write_json
from mario_apo.stats import wilson_interval
from mario_apo.tasks import Task, make_env, parse_task

DEFAULT_TARGETS = (0.3, 0.1, 0.03, 0.01, 0.003)
DEFAULT_OUT = Path("experiments/results/calibration")
"""Where the committed calibrations live (reports read the random policy's numbers from there)."""


@dataclass
class RandomEpisode:
    success: bool
    length: int
    """Agent steps."""
    x_trace: list[int]
    """x-position at reset and after every agent step (Mario; empty for the classic tasks)."""

    @property
    def max_x(self) -> int:
        return max(self.x_trace, default=0)


def _worker_signals() -> None:
    # A terminal's Ctrl-C reaches the workers too: the parent decides, and terminates them with
    # SIGTERM, whose default action a forked worker must get back from the parent's stop handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _play_chunk(job: tuple[int, str, dict[str, Any], list[int]]) -> tuple[int, list[RandomEpisode]]:
    index, task_name, env_cfg, seeds = job
    return index, _play_random(task_name, env_cfg, seeds)


def _play_random(task_name: str, env_cfg: dict[str, Any], seeds: list[int]) -> list[RandomEpisode]:
    """Worker: one random episode per seed, on one env."""
    task = parse_task(task_name)
    env = make_env(task, EnvConfig(**env_cfg))
    episodes = []
    try:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            _, info = env.reset(seed=seed)
            trace = [info["x_pos"]] if task.is_mario else []
            while True:
                _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
                if task.is_mario:
                    trace.append(info["x_pos"])
                if terminated or truncated:
                    episode = info["episode"]
                    episodes.append(RandomEpisode(bool(episode["success"]), int(episode["l"]), trace))
                    break
    finally:
        env.close()
    return episodes


def random_episodes(
    task: Task, env_cfg: EnvConfig, episodes: int, seed: int = 0, workers: int = 1, progress: bool = True
) -> list[RandomEpisode]:
    """``episodes`` episodes of a uniform-random policy, in ``workers`` processes."""
    seeds = [int(s.generate_state(1, np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(episodes)]
    chunk = max(1, min(20, episodes // (4 * workers) or 1))
    chunks = [seeds[i : i + chunk] for i in range(0, episodes, chunk)]
    results: list[list[RandomEpisode]] = [[] for _ in chunks]
    jobs = [(k, task.name, asdict(env_cfg), part) for k, part in enumerate(chunks)]
    with tqdm(total=episodes, desc=f"random policy {task.name}", unit="episode", disable=not progress) as bar:
        # leaving the pool terminates its workers, also when a stop signal interrupts the wait
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_signals) as pool:
            for index, part in pool.imap_unordered(_play_chunk, jobs):  # stored by index: timing does not matter
                results[index] = part
                bar.update(len(part))
    return [episode for part in results for episode in part]


def stalled(episode: RandomEpisode, stall_steps: int) -> RandomEpisode:
    """The episode as a stall truncation after ``stall_steps`` steps without a new max x would have cut it."""
    best, since = episode.x_trace[0], 0
    for step, x in enumerate(episode.x_trace[1:], start=1):
        if x > best:
            best, since = x, 0
        else:
            since += 1
        if since >= stall_steps and step < episode.length:
            return replace(episode, success=False, length=step, x_trace=episode.x_trace[: step + 1])
    return episode


def steps_to_reach(episode: RandomEpisode, x: int) -> int:
    """Agent steps the episode spends on a ``goal:x`` rung: until it first reaches x, or all of it."""
    reached = np.flatnonzero(np.asarray(episode.x_trace) >= x)
    return int(reached[0]) if reached.size else episode.length


def rung(episodes: list[RandomEpisode], x: int) -> dict[str, Any]:
    """A ``goal:x`` rung under these episodes: success rate with its Wilson interval, and steps per success."""
    successes = sum(e.max_x >= x for e in episodes)
    low, high = wilson_interval(successes, len(episodes))
    steps = sum(steps_to_reach(e, x) for e in episodes)
    return {
        "x": int(x),
        "successes": int(successes),
        "rate": successes / len(episodes),
        "low": low,
        "high": high,
        "steps_per_success": steps / successes if successes else None,
    }


def rarity_curve(episodes: list[RandomEpisode]) -> dict[str, list]:
    """P(max x >= X) at every X where it changes (each distinct max x), with Wilson 95% intervals."""
    max_xs = np.array([e.max_x for e in episodes])
    xs = np.unique(max_xs)
    counts = [int((max_xs >= x).sum()) for x in xs]
    intervals = [wilson_interval(count, len(episodes)) for count in counts]
    return {
        "x": xs.tolist(),
        "rate": [count / len(episodes) for count in counts],
        "low": [low for low, _ in intervals],
        "high": [high for _, high in intervals],
    }


def nearest_x(curve: dict[str, list], target: float) -> int:
    """The X whose random success rate is nearest ``target`` on a log scale (rarity is multiplicative)."""
    rates = np.array(curve["rate"])
    distance = np.abs(np.log(np.maximum(rates, 1e-12)) - np.log(target))
    return int(curve["x"][int(np.argmin(distance))])


def calibrate_level(
    level: str,
    env_cfg: EnvConfig,
    episodes: int,
    targets: list[float],
    compare_stall: list[int],
    seed: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """The calibration record of one level (what ``calibration-<level>.json`` holds)."""
    task = parse_task(f"mario:{level}:dense")
    played = random_episodes(task, env_cfg, episodes, seed, workers)
    curve = rarity_curve(played)
    rungs = [{"target": target, **rung(played, nearest_x(curve, target))} for target in targets]
    lengths = np.array([e.length for e in played])
    record = {
        "level": level,
        "env": asdict(env_cfg),
        "episodes": episodes,
        "seed": seed,
        "agent_steps": int(lengths.sum()),
        "median_length": float(np.median(lengths)),
        "mean_length": float(lengths.mean()),
        "time_limit_fraction": float(np.mean(lengths >= env_cfg.max_episode_steps)),
        "rungs": rungs,
        "curve": curve,
    }
    if compare_stall:
        record["stall_comparison"] = {
            str(stall): [{"target": r["target"], **rung([stalled(e, stall) for e in played], r["x"])} for r in rungs]
            for stall in compare_stall
        }
    return record


def calibrate_task(task: Task, episodes: int, seed: int = 0, workers: int = 1) -> dict[str, Any]:
    """The calibration record of a task whose rungs are tasks (MiniGrid sizes and step limits): the
    random policy's success rate with its Wilson 95% interval, and agent steps per success."""
    env_cfg = EnvConfig()  # the env settings are Mario's; other tasks are fixed by their task string
    played = random_episodes(task, env_cfg, episodes, seed, workers)
    successes = sum(e.success for e in played)
    low, high = wilson_interval(successes, episodes)
    lengths = np.array([e.length for e in played])
    return {
        "task": task.name,
        "episodes": episodes,
        "seed": seed,
        "successes": int(successes),
        "rate": successes / episodes,
        "low": low,
        "high": high,
        "agent_steps": int(lengths.sum()),
        "mean_length": float(lengths.mean()),
        "steps_per_success": float(lengths.sum() / successes) if successes else None,
    }


def task_calibration_path(task: Task, out_dir: Path) -> Path:
    """``calibration-<task>.json``, the task string's colons made dashes (a task string is a name)."""
    return out_dir / f"calibration-{task.name.replace(':', '-')}.json"


def plot_calibration(record: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step(curve["x"], curve["rate"], where="post", label=f"random policy ({record['episodes']} episodes)")
    ax.fill_between(curve["x"], curve["low"], curve["high"], step="post", alpha=0.25, label="Wilson 95%")
    for r in record["rungs"]:
        ax.plot(r["x"], r["rate"], "o", color="black")
        ax.annotate(f"goal:{r['x']} ({r['rate']:.3f})", (r["x"], r["rate"]), xytext=(4, 4), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylim(max(0.5 / record["episodes"], 1e-4), 1.05)
    env = record["env"]
    ax.set(
        title=f"Mario {record['level']}: P(max x >= X), sticky {env['sticky_actions']}, stall {env['stall_steps']}",
        xlabel="X (x-position, pixels)",
        ylabel="random-policy success rate (log)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_calibration(record: dict[str, Any], out_dir: Path) -> Path:
    """``calibration-<level>.json`` and its PNG plot; returns the JSON path. The JSON comes last and
    whole (temp file + rename): where it exists, the level's calibration is complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"calibration-{record['level']}.json"
    plot_calibration(record, path.with_suffix(".png"))
    write_json(path, record, indent=1)
    return path
