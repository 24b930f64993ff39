"""Statistics for the report, following rliable's definitions (Agarwal et al., 2021).

Scores are arrays of shape (runs, tasks): one score per seed and task. Confidence
intervals are percentile bootstrap intervals; "stratified" resamples runs with
replacement within each task, so every task keeps its weight.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Aggregate = Callable[[np.ndarray], float]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (rliable's trimmed mean)."""
    flat = np.sort(np.asarray(scores, dtype=float).ravel())
    n = len(flat)
    cut = int(np.floor(0.25 * n))
    return float(flat[cut : n - cut].mean()) if n - 2 * cut > 0 else float(flat.mean())


def mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


def _runs_by_tasks(scores: np.ndarray) -> np.ndarray:
    """Scores as a float (runs, tasks) array; a 1-D array is one task."""
    scores = np.asarray(scores, dtype=float)
    return scores[:, None] if scores.ndim == 1 else scores


def _percentile_interval(samples: np.ndarray, confidence: float, axis: int | None = None) -> np.ndarray:
    """The central ``confidence`` interval of bootstrap ``samples``: (low, high)."""
    alpha = (1 - confidence) / 2
    return np.quantile(samples, [alpha, 1 - alpha], axis=axis)


def stratified_bootstrap_ci(
    scores: np.ndarray, statistic: Aggregate, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``statistic`` over (runs, tasks) ``scores``."""
    scores = _runs_by_tasks(scores)
    rng = np.random.default_rng(seed)
    runs, tasks = scores.shape
    stats = np.empty(reps)
    for r in range(reps):
        picks = rng.integers(runs, size=(runs, tasks))
        stats[r] = statistic(np.take_along_axis(scores, picks, axis=0))
    low, high = _percentile_interval(stats, confidence)
    return statistic(scores), float(low), float(high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): for each task, the chance a random run of X beats a random run of Y
    (ties count half, the Mann-Whitney U statistic / (m n)); averaged over tasks."""
    x, y = _runs_by_tasks(x), _runs_by_tasks(y)
    per_task = []
    for task in range(x.shape[1]):
        a, b = x[:, task][:, None], y[:, task][None, :]
        per_task.append(np.mean((a > b) + 0.5 * (a == b)))
    return float(np.mean(per_task))


def probability_of_improvement_ci(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """P(X > Y) with a CI from resampling the runs of X and of Y independently within each task."""
    x, y = _runs_by_tasks(x), _runs_by_tasks(y)
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    for r in range(reps):
        xs = np.take_along_axis(x, rng.integers(x.shape[0], size=x.shape), axis=0)
        ys = np.take_along_axis(y, rng.integers(y.shape[0], size=y.shape), axis=0)
        stats[r] = probability_of_improvement(xs, ys)
    low, high = _percentile_interval(stats, confidence)
    return probability_of_improvement(x, y), float(low), float(high)


PAIRED_REPS = 10_000
"""Bootstrap resamples of a paired difference (the protocol asks for >= 10,000)."""


def paired_difference_ci(
    x: np.ndarray, y: np.ndarray, reps: int = PAIRED_REPS, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """mean(x - y) over seeds that pair them (same seed, same eval episodes), with a CI from resampling
    the pairs: the pairing removes the between-seed variance an independent resampling keeps."""
    differences = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(len(differences), size=(reps, len(differences)))].mean(1)
    low, high = _percentile_interval(means, confidence)
    return float(differences.mean()), float(low), float(high)


def paired_t_ci(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """mean(x - y) over paired seeds with Student's t interval (n - 1 degrees of freedom): exact when the
    per-seed differences are normal, and beside the bootstrap a check on it at small n."""
    from scipy import stats as scipy_stats

    differences = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    n = len(differences)
    point = float(differences.mean())
    if n < 2:
        return point, float("nan"), float("nan")
    half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * differences.std(ddof=1) / np.sqrt(n)
    return point, point - float(half), point + float(half)


MOST_SEEDS_TO_RESOLVE = 100_000


def seeds_to_resolve(
    differences: np.ndarray, confidence: float = 0.95, most: int = MOST_SEEDS_TO_RESOLVE
) -> int | None:
    """How many paired seeds the t-interval would need to exclude 0, were the per-seed differences'
    mean and spread what these show: the budget to settle a difference that is still unresolved.
    None where that cannot be said: fewer than 2 seeds, a mean of 0, or more than ``most`` seeds."""
    from scipy import stats as scipy_stats

    differences = np.asarray(differences, dtype=float)
    point, spread = abs(differences.mean()), differences.std(ddof=1) if len(differences) > 1 else np.nan
    if not point > 0 or np.isnan(spread):
        return None
    quantile = (1 + confidence) / 2
    # t > z, so the normal approximation's n is a lower bound; t shrinks as n grows, so count up from it
    n = max(2, int((scipy_stats.norm.ppf(quantile) * spread / point) ** 2))
    while n <= most:
        if scipy_stats.t.ppf(quantile, n - 1) * spread / np.sqrt(n) < point:
            return n
        n += 1
    return None


def bootstrap_band(curves: np.ndarray, reps: int = 1000, confidence: float = 0.95, seed: int = 0):
    """Mean curve and pointwise percentile-bootstrap band over seeds. ``curves``: (seeds, points)."""
    curves = np.asarray(curves, dtype=float)
    rng = np.random.default_rng(seed)
    means = curves[rng.integers(len(curves), size=(reps, len(curves)))].mean(axis=1)
    low, high = _percentile_interval(means, confidence, axis=0)
    return curves.mean(axis=0), low, high


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); sound at 0 and at 1 successes,
    where the normal approximation collapses to a point."""
    if trials <= 0:
        raise ValueError(f"a proportion needs at least one trial, got {trials}")
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding residue
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return float(low), float(high)
