"""``mario-apo bench env|train|parity|population``: throughput and parity benchmarks from the command line.

The benchmark modules import torch (and SB3, Ray): each handler imports its own, so that
``mario-apo --help`` and the other commands start without them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mario_apo.config import ppo_defaults
from mario_apo.device import DEVICE_FORMS, resolve_device
from mario_apo.errors import UsageError
from mario_apo.flags import Parser, add_env_flags, env_config, output_file, positive_int, positive_int_list
from mario_apo.runs import check_output_dir, write_json
from mario_apo.tasks import parse_task

MARIO = ppo_defaults("mario")  # the rollout a Mario budget must hold: MARIO.num_envs x MARIO.num_steps


def add_bench_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="throughput benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    for add_bench in (_add_env_bench, _add_train_bench, _add_parity_bench, _add_population_bench):
        add_bench(benches)


def _add_env_bench(benches: argparse._SubParsersAction) -> None:
    env = benches.add_parser("env", help="raw env (emulator) vs wrapped env vs vector env throughput")
    env.add_argument("--task", default="mario:1-1", help="a Mario or MiniGrid task string. Default: mario:1-1")
    cores = os.cpu_count() or 1
    env.add_argument(
        "--num-envs",
        type=positive_int_list,
        default=sorted({1, 2, cores, 2 * cores}),
        help="comma-separated vector env sizes. Default: 1,2,cores,2*cores "
        f"(here {','.join(map(str, sorted({1, 2, cores, 2 * cores})))})",
    )
    env.set_defaults(run=run_bench_env)
    env.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement. Default: 8")
    env.add_argument("--seed", type=int, default=0, help="seed of the random actions. Default: 0")
    _add_json_flag(env, "bench-env.json")
    add_env_flags(env)


def _add_train_bench(benches: argparse._SubParsersAction) -> None:
    train_bench = benches.add_parser(
        "train",
        help="our trainer's Mario SPS per env count and device, where the time goes (env, inference, learn); "
        "APO and Stable-Baselines3 PPO beside it; CartPole time to eval >= 475; peak RSS",
    )
    train_bench.set_defaults(run=run_bench_train)
    train_bench.add_argument(
        "--mario-steps",
        type=positive_int,
        default=16384,
        help=f"agent steps per Mario job (at least one rollout, N x {MARIO.num_steps}). Default: 16384",
    )
    train_bench.add_argument(
        "--num-envs",
        type=positive_int_list,
        default=[8],
        help="comma-separated env counts (env worker processes) for our PPO on Mario; APO and SB3 run at the "
        "first. Default: 8",
    )
    train_bench.add_argument("--device", default="auto", help=f"where the learners run: {DEVICE_FORMS}. Default: auto")
    train_bench.add_argument("--skip-sb3", action="store_true", help="only our jobs (no Stable-Baselines3 needed)")
    train_bench.add_argument(
        "--cartpole-steps", type=positive_int, default=100_000, help="steps per CartPole job. Default: 100000"
    )
    train_bench.add_argument("--skip-cartpole", action="store_true", help="only the Mario SPS comparison")
    train_bench.add_argument("--seed", type=int, default=1, help="seed of every job. Default: 1")
    _add_json_flag(train_bench, "bench-train.json")


def _add_parity_bench(benches: argparse._SubParsersAction) -> None:
    parity = benches.add_parser(
        "parity",
        help="our PPO vs Stable-Baselines3's PPO with identical rl-zoo settings: final-policy success, paired by seed",
    )
    parity.set_defaults(run=run_bench_parity)
    parity.add_argument(
        "--cartpole-steps", type=int, default=100_000, help="steps per CartPole run (0: skip the task). Default: 100000"
    )
    parity.add_argument(
        "--mountaincar-steps", type=int, default=500_000, help="steps per MountainCar run (0: skip). Default: 500000"
    )
    parity.add_argument(
        "--minigrid-steps",
        type=int,
        default=100_000,
        help="steps per MiniGrid DoorKey-5x5 run, the zoo's budget (0: skip). Default: 100000",
    )
    parity.add_argument(
        "--mario-steps",
        type=int,
        default=0,
        help="agent steps per Mario 1-1 (dense) run, our Mario defaults for both (0: skip; hours per seed on a "
        "2-core box). Metric: the final policy's mean max x (and flag rate). Default: 0",
    )
    parity.add_argument(
        "--seeds", type=positive_int, default=10, help="seeds 1..N per task and implementation. Default: 10"
    )
    parity.add_argument(
        "--episodes", type=positive_int, default=100, help="sampled final-policy episodes. Default: 100"
    )
    parity.add_argument(
        "--greedy-episodes", type=positive_int, default=20, help="greedy final-policy episodes. Default: 20"
    )
    parity.add_argument(
        "--keep-jobs",
        metavar="DIR",
        help="keep each finished (implementation, task, seed) job's result in DIR; a rerun with the same "
        "flags reuses them and runs only the rest (a job cut off midway starts over). Default: keep nothing",
    )
    _add_json_flag(parity, "bench-parity.json")


def _add_population_bench(benches: argparse._SubParsersAction) -> None:
    population = benches.add_parser(
        "population",
        help="SPS of a 2-learner shared-anchor population (Ray) vs two independent APO runs side by side",
    )
    population.set_defaults(run=run_bench_population)
    population.add_argument("--task", default="mario:1-1", help="the task both sides train. Default: mario:1-1")
    population.add_argument(
        "--steps",
        type=positive_int,
        default=8192,
        help=f"agent steps per learner. Default: 8192 (2 Mario updates of {MARIO.num_envs} x {MARIO.num_steps})",
    )
    population.add_argument("--seed", type=int, default=1, help="seed of the runs. Default: 1")
    _add_json_flag(population, "bench-population.json")


def _add_json_flag(bench: argparse.ArgumentParser, default: str) -> None:
    """Where a benchmark writes its result (checked before the benchmark runs)."""
    bench.add_argument(
        "--json", type=output_file, default=default, help=f"where to write the JSON result. Default: {default}"
    )


def _show(result: dict, table: str, path: str) -> None:
    print(table)
    write_json(Path(path), result)
    print(f"wrote {path}")


def run_bench_env(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_env, format_env_table

    task = parse_task(args.task)
    if task.family not in ("mario", "minigrid"):
        raise UsageError(
            f"bench env measures an env worth vectorising: --task must be a Mario (mario:W-S[:REWARD]) or "
            f"MiniGrid (minigrid:NAME) task, got {args.task!r}"
        )
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    result = bench_env(task, env_config(args), args.num_envs, args.seconds, args.seed)
    _show(result, format_env_table(result), args.json)


def require_sb3(command: str) -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise UsageError(
            f"bench {command} compares against Stable-Baselines3: pip install 'mario-apo[bench]'"
        ) from None


def run_bench_train(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_train, format_train_table

    if not args.skip_sb3:
        require_sb3("train")
    resolve_device(args.device)
    if args.mario_steps < max(args.num_envs) * MARIO.num_steps:
        raise UsageError(f"--mario-steps {args.mario_steps} is less than one rollout at {max(args.num_envs)} envs")
    result = bench_train(
        args.mario_steps,
        args.cartpole_steps,
        args.seed,
        args.num_envs,
        args.device,
        args.skip_cartpole,
        args.skip_sb3,
    )
    _show(result, format_train_table(result), args.json)


def run_bench_parity(args: argparse.Namespace) -> None:
    require_sb3("parity")
    from mario_apo.bench_sb3 import bench_parity, format_parity_table

    budgets = (
        ("cartpole", args.cartpole_steps),
        ("mountaincar", args.mountaincar_steps),
        ("minigrid:DoorKey-5x5", args.minigrid_steps),
        ("mario:1-1:dense", args.mario_steps),
    )
    if not any(n for _, n in budgets) or min(n for _, n in budgets) < 0:
        raise UsageError(
            "--cartpole-steps, --mountaincar-steps, --minigrid-steps and --mario-steps are budgets >= 0; "
            "one must be > 0"
        )
    steps = {task: n for task, n in budgets if n}
    if steps.get("mario:1-1:dense", MARIO.batch_size) < MARIO.batch_size:
        raise UsageError(
            f"--mario-steps {args.mario_steps} is less than one Mario rollout "
            f"({MARIO.num_envs} envs x {MARIO.num_steps} = {MARIO.batch_size})"
        )
    keep = check_output_dir(args.keep_jobs, "--keep-jobs") if args.keep_jobs else None
    result = bench_parity(steps, list(range(1, args.seeds + 1)), args.episodes, args.greedy_episodes, keep)
    _show(result, format_parity_table(result), args.json)


def run_bench_population(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_population, format_population_table
    from mario_apo.population import require_ray

    require_ray()
    task = parse_task(args.task)
    with tempfile.TemporaryDirectory(prefix="bench-population-") as runs:
        result = bench_population(task.name, args.steps, args.seed, Path(runs))
    _show(result, format_population_table(result), args.json)
