"""The ``mario-apo`` command line: PPO and Anchored Policy Optimization on Super Mario Bros.

Every bad input ends with one line ``mario-apo: error: ...`` naming what is
valid, and exit code 2, before anything on disk is touched.
"""

from __future__ import annotations

import argparse
import os
import sys

from mario_apo import __version__

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def positive_int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``."""
    return [positive_int(part) for part in text.split(",")]


def add_env_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``EnvConfig`` (how a task's env is built)."""
    parser.add_argument("--actions", default="simple", help="Mario action set: right (5), simple (7) or complex (12). Default: simple")
    parser.add_argument("--frame-skip", type=positive_int, default=4, help="NES frames per agent step. Default: 4")
    parser.add_argument("--frame-stack", type=positive_int, default=4, help="frames stacked per observation. Default: 4")
    parser.add_argument(
        "--max-episode-steps", type=positive_int, default=2000, help="Mario step limit in agent steps (truncation). Default: 2000"
    )


def env_config(args: argparse.Namespace):
    from mario_apo.tasks import EnvConfig

    cfg = EnvConfig(args.actions, args.frame_skip, args.frame_stack, args.max_episode_steps)
    cfg.validate()
    return cfg


def build_parser() -> Parser:
    parser = Parser(
        prog="mario-apo",
        description="PPO and Anchored Policy Optimization (APO: PPO + beta * KL(p_best || pi)) on Super Mario Bros.",
    )
    parser.add_argument("--version", action="version", version=f"mario-apo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    commands.add_parser("tasks", help="list the task strings (levels, reward modes, action sets)")

    bench = commands.add_parser("bench", help="throughput benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    env = benches.add_parser("env", help="raw emulator vs wrapped env vs vector env throughput")
    env.add_argument("--task", default="mario:1-1", help="a Mario task string. Default: mario:1-1")
    cores = os.cpu_count() or 1
    env.add_argument(
        "--num-envs",
        type=positive_int_list,
        default=sorted({1, 2, cores, 2 * cores}),
        help=f"comma-separated vector env sizes. Default: 1,2,cores,2*cores (here {','.join(map(str, sorted({1, 2, cores, 2 * cores})))})",
    )
    env.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement. Default: 8")
    env.add_argument("--seed", type=int, default=0, help="seed of the random actions. Default: 0")
    env.add_argument("--json", default="bench-env.json", help="where to write the JSON result. Default: bench-env.json")
    add_env_args(env)
    return parser


def run_tasks(args: argparse.Namespace) -> None:
    from mario_apo.tasks import task_listing

    print(task_listing())


def run_bench_env(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_env, format_env_table, write_json
    from mario_apo.tasks import parse_task

    task = parse_task(args.task)
    if not task.is_mario:
        raise UsageError(f"bench env measures the emulator: --task must be a Mario task (mario:W-S[:REWARD]), got {args.task!r}")
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    result = bench_env(task, env_config(args), args.num_envs, args.seconds, args.seed)
    print(format_env_table(result))
    write_json(result, args.json)
    print(f"wrote {args.json}")


def main(argv: list[str] | None = None) -> int:
    from mario_apo.tasks import TaskError

    try:
        args = build_parser().parse_args(argv)
        if args.command == "tasks":
            run_tasks(args)
        elif args.command == "bench" and args.bench == "env":
            run_bench_env(args)
    except (UsageError, TaskError) as err:
        print(f"mario-apo: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
