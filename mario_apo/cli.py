"""The ``mario-apo`` command line: PPO and Anchored Policy Optimization on Super Mario Bros.

Every bad input ends with one line ``mario-apo: error: ...`` naming what is
valid, and exit code 2, before anything on disk is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from mario_apo import __version__
from mario_apo.calibrate import DEFAULT_TARGETS
from mario_apo.device import DEVICE_FORMS, check_device_spec, resolve_device
from mario_apo.errors import TrainingError, UsageError
from mario_apo.flags import (
    Parser,
    add_env_flags,
    add_train_flags,
    check_rollout_fits,
    env_config,
    fraction_list,
    non_negative_float,
    positive_int,
    positive_int_list,
    requested_task,
    resolve_run_config,
)

USAGE_ERROR = 2


def build_parser() -> Parser:
    parser = Parser(
        prog="mario-apo",
        description="PPO and Anchored Policy Optimization (APO: PPO + beta * KL(p_best || pi)) on Super Mario Bros.",
    )
    parser.add_argument("--version", action="version", version=f"mario-apo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    commands.add_parser("tasks", help="list the task strings (levels, reward modes, action sets)")

    _add_bench_commands(commands)
    _add_replay_command(commands)
    _add_eval_command(commands)
    _add_suite_commands(commands)
    _add_calibrate_command(commands)
    _add_upgrade_checkpoint_command(commands)
    train = commands.add_parser(
        "train",
        help="train PPO or APO (Anchored Policy Optimization) on a task",
        description="Train PPO or APO (Anchored Policy Optimization: PPO + beta * KL(p_best || pi_theta) "
        "over states of the best episodes so far). Writes runs/<name>/ (config.json, metrics.jsonl, "
        "checkpoint.pt, anchors.json) and an offline W&B run.",
    )
    add_train_flags(train)
    return parser


def _add_bench_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="throughput benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    env = benches.add_parser("env", help="raw emulator vs wrapped env vs vector env throughput")
    env.add_argument("--task", default="mario:1-1", help="a Mario task string. Default: mario:1-1")
    cores = os.cpu_count() or 1
    env.add_argument(
        "--num-envs",
        type=positive_int_list,
        default=sorted({1, 2, cores, 2 * cores}),
        help="comma-separated vector env sizes. Default: 1,2,cores,2*cores "
        f"(here {','.join(map(str, sorted({1, 2, cores, 2 * cores})))})",
    )
    env.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement. Default: 8")
    env.add_argument("--seed", type=int, default=0, help="seed of the random actions. Default: 0")
    env.add_argument("--json", default="bench-env.json", help="where to write the JSON result. Default: bench-env.json")
    add_env_flags(env)
    train_bench = benches.add_parser(
        "train",
        help="our trainer's Mario SPS per env count and device, where the time goes (env, inference, learn); "
        "APO and Stable-Baselines3 PPO beside it; CartPole time to eval >= 475; peak RSS",
    )
    train_bench.add_argument(
        "--mario-steps",
        type=positive_int,
        default=10240,
        help="agent steps per Mario job (at least one rollout, N x 128). Default: 10240",
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
    train_bench.add_argument(
        "--json", default="bench-train.json", help="where to write the JSON result. Default: bench-train.json"
    )
    parity = benches.add_parser(
        "parity",
        help="our PPO vs Stable-Baselines3's PPO with identical rl-zoo settings: final-policy success, paired by seed",
    )
    parity.add_argument(
        "--cartpole-steps", type=int, default=100_000, help="steps per CartPole run (0: skip the task). Default: 100000"
    )
    parity.add_argument(
        "--mountaincar-steps", type=int, default=500_000, help="steps per MountainCar run (0: skip). Default: 500000"
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
        "--json", default="bench-parity.json", help="where to write the JSON result. Default: bench-parity.json"
    )
    population = benches.add_parser(
        "population",
        help="SPS of a 2-learner shared-anchor population (Ray) vs two independent APO runs side by side",
    )
    population.add_argument("--task", default="mario:1-1", help="the task both sides train. Default: mario:1-1")
    population.add_argument(
        "--steps", type=positive_int, default=10240, help="agent steps per learner. Default: 10240 (10 Mario updates)"
    )
    population.add_argument("--seed", type=int, default=1, help="seed of the runs. Default: 1")
    population.add_argument(
        "--json", default="bench-population.json", help="where to write the JSON result. Default: bench-population.json"
    )


def _add_replay_command(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser(
        "replay",
        help="re-simulate anchored Mario episodes, verify them, and write full-colour video",
        description="Re-run anchored episodes' recorded actions on a fresh emulator, check that return, "
        "length, max x and success (and every step's frame) match what was recorded, and write MP4 or GIF.",
    )
    replay.add_argument("run_dir", help="a run dir, runs/<name>")
    replay.add_argument("--episode", default="best", help="best (default), all, or an anchor rank N (0 = best)")
    replay.add_argument("--out", help="video file, .mp4 or .gif. Default: <run_dir>/videos/anchor-<rank>-ep<id>.mp4")
    replay.add_argument(
        "--fps", type=positive_int, default=60, help="frames per second (the NES draws 60). Default: 60"
    )
    replay.add_argument("--scale", type=positive_int, default=2, help="pixel scale of the 256x240 screen. Default: 2")


def _add_eval_command(commands: argparse._SubParsersAction) -> None:
    evaluation = commands.add_parser(
        "eval", help="evaluate a run's checkpoint on fresh envs: success (flag) rate, returns, max x, lengths"
    )
    evaluation.add_argument("run_dir", help="a run dir, runs/<name>")
    evaluation.add_argument(
        "--checkpoint", default="latest", help="latest (the run's checkpoint.pt) or a checkpoint path. Default: latest"
    )
    evaluation.add_argument("--episodes", type=positive_int, default=20, help="episodes per level. Default: 20")
    policy = evaluation.add_mutually_exclusive_group()
    policy.add_argument(
        "--greedy", dest="greedy", action="store_true", default=True, help="most probable action (default)"
    )
    policy.add_argument("--sample", dest="greedy", action="store_false", help="sample actions from the policy")
    evaluation.add_argument(
        "--level",
        nargs="+",
        metavar="W-S",
        help="Mario levels to evaluate on (the run's reward mode). Default: the run's level",
    )
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the eval envs and sampling. Default: 0")
    evaluation.add_argument("--video", help="record the first episode (of the first level) to this .mp4 or .gif")
    evaluation.add_argument("--json", help="where to write the results. Default: <run_dir>/eval.json")
    evaluation.add_argument("--device", default="auto", help=f"where the policy runs: {DEVICE_FORMS}. Default: auto")


def _add_suite_commands(commands: argparse._SubParsersAction) -> None:
    suite = commands.add_parser("suite", help="benchmark suites: run the matrix, write the report")
    suites = suite.add_subparsers(dest="suite", required=True, parser_class=Parser)
    suite_run = suites.add_parser(
        "run",
        help="run every (task, algo, seed) of a suite, each in its own process; "
        "skips finished runs, resumes interrupted ones",
    )
    suite_run.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_run.add_argument(
        "--jobs", type=positive_int, help="runs at once (torch threads = cores // jobs). Default: the suite's jobs"
    )
    suite_run.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: processes on this machine; ray: each run a Ray task on a cluster (pip install -e '.[ray]'). "
        "Default: local",
    )
    suite_run.add_argument(
        "--address",
        help="with --backend ray: the cluster (auto, or HOST:PORT of 'ray start --head'). Default: a local instance",
    )
    suite_run.add_argument(
        "--cpus-per-run",
        type=positive_int,
        help="with --backend ray: CPUs (and torch threads) each run asks Ray for. Default: cores // jobs",
    )
    suite_run.add_argument(
        "--gpus-per-run",
        type=non_negative_float,
        help="with --backend ray: GPUs each run asks Ray for (fractional shares one GPU, e.g. 0.25: four runs "
        "per GPU); Ray makes just those visible to the run, whose --device auto then uses them. Default: 0",
    )
    suite_report = suites.add_parser("report", help="Markdown report and PNG figures from the suite's local run dirs")
    suite_report.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_report.add_argument("--out", help="output folder. Default: experiments/results/<suite name>")
    suite_report.add_argument(
        "--wandb",
        choices=("offline", "online", "disabled"),
        default="offline",
        help="also write the report as one W&B run in the suite's group (runs/<suite>/report/wandb/; "
        "offline needs no account or network). Default: offline",
    )
    suite_pack = suites.add_parser(
        "pack",
        help="a .tar.gz of the finished runs' logs (config, metrics, summary, anchors; no checkpoints) to commit",
    )
    suite_pack.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_pack.add_argument("--out", help="the archive. Default: experiments/results/<suite name>/finished-runs.tar.gz")
    suite_status = suites.add_parser(
        "status", help="the matrix at a glance: finished / running / interrupted (at step) / pending, and an ETA"
    )
    suite_status.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_status.add_argument("--json", action="store_true", help="print the status as JSON")


def _add_upgrade_checkpoint_command(commands: argparse._SubParsersAction) -> None:
    upgrade = commands.add_parser(
        "upgrade-checkpoint",
        help="convert a trusted run's checkpoint from mario-apo < 0.2 (pickled numpy) to the safe format",
        description="Checkpoints load with torch.load(weights_only=True): tensors and plain values only. One "
        "written by mario-apo before 0.2 holds numpy objects and is refused. If you trust where the run came "
        "from, this loads it once with full unpickling and rewrites it safely (the original is kept as "
        "checkpoint.pt.before-upgrade).",
    )
    upgrade.add_argument("run_dir", help="a run dir, runs/<name>")


def _add_calibrate_command(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="how rare is the goal: a uniform-random policy's P(max x >= X) per Mario level, and the rungs",
        description="Play N uniform-random episodes under the env settings a training run uses and write, per "
        "level, P(max x >= X) for every X with Wilson 95%% intervals, the X nearest each target rarity "
        "(the goal:X rungs), and a log-scale plot.",
    )
    calibrate.add_argument("--level", nargs="+", default=["1-1"], metavar="W-S", help="Mario levels. Default: 1-1")
    calibrate.add_argument("--episodes", type=positive_int, default=1000, help="episodes per level. Default: 1000")
    calibrate.add_argument(
        "--targets",
        type=fraction_list,
        default=list(DEFAULT_TARGETS),
        help=f"target random success rates of the rungs. Default: {','.join(map(str, DEFAULT_TARGETS))}",
    )
    calibrate.add_argument(
        "--compare-stall",
        type=positive_int_list,
        default=[],
        help="also report each rung's success rate and steps per success as if stall truncation after N steps "
        "were on (comma-separated N; exact, computed from the same episodes). Default: none",
    )
    calibrate.add_argument(
        "--workers", type=positive_int, default=os.cpu_count() or 1, help="worker processes. Default: all cores"
    )
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the episodes and actions. Default: 0")
    calibrate.add_argument(
        "--out",
        default="experiments/results/calibration",
        help="output folder. Default: experiments/results/calibration",
    )
    add_env_flags(calibrate)


def run_calibrate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mario_apo.calibrate import calibrate_level, write_calibration
    from mario_apo.tasks import parse_task

    env_cfg = env_config(args)
    for level in args.level:
        parse_task(f"mario:{level}")  # every level checked before hours of episodes

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    written = []
    try:
        for level in args.level:
            record = calibrate_level(
                level, env_cfg, args.episodes, args.targets, args.compare_stall, args.seed, args.workers
            )
            path = write_calibration(record, Path(args.out))
            written.append(level)
            rungs = ", ".join(f"{r['target']}: goal:{r['x']} ({r['rate']:.4f})" for r in record["rungs"])
            print(f"{level}: median episode {record['median_length']:.0f} steps; rungs {rungs}; wrote {path}")
    except KeyboardInterrupt as stopped:
        # finished levels stay written; one cut short is not (fewer episodes would misstate its rarity)
        left = ", ".join(level for level in args.level if level not in written)
        print(f"mario-apo: calibrate: {stopped or 'SIGINT'}: stopped; not written: {left}", file=sys.stderr)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_tasks(args: argparse.Namespace) -> None:
    from mario_apo.tasks import task_listing

    print(task_listing())


def run_bench_env(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_env, format_env_table
    from mario_apo.bench_jobs import write_json
    from mario_apo.tasks import parse_task

    task = parse_task(args.task)
    if not task.is_mario:
        raise UsageError(
            f"bench env measures the emulator: --task must be a Mario task (mario:W-S[:REWARD]), got {args.task!r}"
        )
    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    result = bench_env(task, env_config(args), args.num_envs, args.seconds, args.seed)
    print(format_env_table(result))
    write_json(result, args.json)
    print(f"wrote {args.json}")


def require_sb3(command: str) -> None:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise UsageError(
            f"bench {command} compares against Stable-Baselines3: pip install 'mario-apo[bench]'"
        ) from None


def run_bench_train(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_train, format_train_table
    from mario_apo.bench_jobs import write_json

    if not args.skip_sb3:
        require_sb3("train")
    resolve_device(args.device)
    if args.mario_steps < max(args.num_envs) * 128:
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
    print(format_train_table(result))
    write_json(result, args.json)
    print(f"wrote {args.json}")


def run_bench_parity(args: argparse.Namespace) -> None:
    from mario_apo.bench_jobs import write_json
    from mario_apo.bench_sb3 import bench_parity, format_parity_table

    require_sb3("parity")
    steps = {task: n for task, n in (("cartpole", args.cartpole_steps), ("mountaincar", args.mountaincar_steps)) if n}
    if not steps or min(steps.values()) < 0:
        raise UsageError("--cartpole-steps and --mountaincar-steps are step budgets >= 0, and one must be > 0")
    result = bench_parity(steps, list(range(1, args.seeds + 1)), args.episodes, args.greedy_episodes)
    print(format_parity_table(result))
    write_json(result, args.json)
    print(f"wrote {args.json}")


def run_bench_population(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    from mario_apo.bench import bench_population, format_population_table
    from mario_apo.bench_jobs import write_json
    from mario_apo.population import require_ray
    from mario_apo.tasks import parse_task

    require_ray()
    task = parse_task(args.task)
    with tempfile.TemporaryDirectory(prefix="bench-population-") as runs:
        result = bench_population(task.name, args.steps, args.seed, Path(runs))
    print(format_population_table(result))
    write_json(result, args.json)
    print(f"wrote {args.json}")


def usable_video_path(path: str) -> None:
    from pathlib import Path

    from mario_apo.video import check_video_path

    try:
        check_video_path(Path(path))
    except ValueError as err:
        raise UsageError(str(err)) from None


def run_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.config import EnvConfig
    from mario_apo.errors import ReplayMismatch
    from mario_apo.replay import load_anchor_index, replay, select_anchors, stored_frames_by_episode
    from mario_apo.tasks import parse_task
    from mario_apo.video import VideoWriter

    run_dir = Path(args.run_dir)
    index = load_anchor_index(run_dir)
    chosen = select_anchors(index, args.episode)
    task, env_cfg = parse_task(index["task"]), EnvConfig.from_record(index["env"])
    if args.out:
        usable_video_path(args.out)
    stored = stored_frames_by_episode(run_dir)
    for anchor in chosen:
        name = f"anchor-{anchor['rank']}-ep{anchor['episode_id']}"
        if args.out is None:
            out = run_dir / "videos" / f"{name}.mp4"
        elif len(chosen) > 1:
            out = Path(args.out).with_name(f"{Path(args.out).stem}-{name}{Path(args.out).suffix}")
        else:
            out = Path(args.out)
        try:
            with VideoWriter(out, fps=args.fps, scale=args.scale) as video:
                frames = stored.get((anchor.get("finder"), anchor["episode_id"]))
                episode = replay(task, env_cfg, anchor["actions"], anchor, frames, video, anchor.get("sticky_seed"))
        except ReplayMismatch as err:
            print(f"mario-apo: replay of {name} failed verification: {err}; no video written", file=sys.stderr)
            return 1
        print(
            f"{name}: verified (return {episode['r']:.3f}, length {episode['l']}, max x {episode['max_x']}, "
            f"success {episode['success']}); {video.frames} frames -> {out}"
        )
    return 0


def run_eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mario_apo.checkpoint import load_checkpoint
    from mario_apo.evaluate import evaluate, policy_from_checkpoint
    from mario_apo.runs import load_run_config
    from mario_apo.tasks import parse_task

    device = resolve_device(args.device)
    run_dir = Path(args.run_dir)
    cfg = load_run_config(run_dir)
    task = parse_task(cfg.task)
    if args.video:
        usable_video_path(args.video)
    if args.level and not task.is_mario:
        raise UsageError(f"--level is for Mario runs; {run_dir} trains {task.name!r}")
    tasks = [parse_task(f"mario:{level}:{task.reward}") for level in args.level] if args.level else [task]
    checkpoint_path = run_dir / "checkpoint.pt" if args.checkpoint == "latest" else Path(args.checkpoint)
    state = load_checkpoint(checkpoint_path, task.name)
    model, obs_transform = policy_from_checkpoint(cfg, state, checkpoint_path, device)
    results = []
    for k, eval_task in enumerate(tasks):
        video = Path(args.video) if args.video and k == 0 else None
        result = evaluate(model, eval_task, cfg.env, args.episodes, args.greedy, args.seed, video, obs_transform)
        result.update({"checkpoint": str(checkpoint_path), "global_step": state["global_step"]})
        results.append(result)
        print(
            f"{eval_task.name}: success {result['success_rate']:.2f} "
            f"over {result['episodes']} {result['policy']} episodes; "
            f"return mean {result['mean_return']:.2f} median {result['median_return']:.2f}; "
            f"max x mean {result['mean_max_x']:.0f}; length mean {result['mean_length']:.0f}"
        )
    out = Path(args.json) if args.json else run_dir / "eval.json"
    out.write_text(json.dumps({"run_dir": str(run_dir), "results": results}, indent=2))
    print(f"wrote {out}" + (f" and {args.video}" if args.video else ""))


def run_suite_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.suite import expand, load_suite, run_suite, suite_status

    suite = load_suite(Path(args.suite_file))
    if args.suite == "run":
        if args.backend != "ray" and (args.address or args.cpus_per_run or args.gpus_per_run):
            raise UsageError("--address, --cpus-per-run and --gpus-per-run are for --backend ray")
        from mario_apo.population import start_ray, stop_ray

        started = False
        try:
            started = args.backend == "ray" and start_ray(args.address, num_cpus=os.cpu_count() or 1)
            counts = run_suite(suite, args.jobs, args.backend, args.cpus_per_run, args.gpus_per_run or 0.0)
        except TrainingError as err:
            print(f"mario-apo: suite {suite.name}: {err}", file=sys.stderr)
            return 1
        finally:
            if started:
                stop_ray()
        line = f"suite {suite.name}: {counts['done']} already finished, {counts['ran']} ran, {counts['failed']} failed"
        if counts["elsewhere"]:
            line += f", {counts['elsewhere']} running elsewhere"
        if counts["stopped"]:
            line += f", {counts['stopped']} stopped (they keep their checkpoints; the same command resumes them)"
        print(line)
        return 1 if counts["failed"] else 0
    if args.suite == "pack":
        from mario_apo.suite import pack_finished_runs

        archive, count = pack_finished_runs(suite, Path(args.out) if args.out else None)
        print(f"wrote {archive}: the logs of {count} of {len(expand(suite))} runs (the finished ones)")
        return 0
    if args.suite == "status":
        status = suite_status(suite)
        print(json.dumps(status, indent=2) if args.json else format_status(status))
        return 0
    from mario_apo.report import write_report
    from mario_apo.report_population import is_population_suite, write_population_report

    if is_population_suite(suite):
        print(f"wrote {write_population_report(suite, Path(args.out) if args.out else None)}")
        return 0
    report = write_report(suite, Path(args.out) if args.out else None)
    print(f"wrote {report}")
    if args.wandb != "disabled":
        from mario_apo.report_wandb import write_wandb_summary

        summary = json.loads((report.parent / "summary.json").read_text())
        print(f"wrote the W&B summary run: {write_wandb_summary(suite, summary, report.parent, args.wandb)}")
    return 0


def format_status(status: dict) -> str:
    lines = [f"suite {status['suite']}:"]
    for cell in status["cells"]:
        detail = {
            "running": f"at step {cell['step']:,} ({cell.get('holder')})",
            "interrupted": f"at step {cell['step']:,}",
        }
        lines.append(f"  {cell['run']:<44} {cell['state']:<12} {detail.get(cell['state'], '')}".rstrip())
    counts = ", ".join(f"{count} {state}" for state, count in status["counts"].items())
    eta = status["eta_seconds"]
    when = (
        f"~{eta / 3600:.1f} h at {status['steps_per_second']:.0f} steps/s" if eta is not None else "no finished run yet"
    )
    lines.append(f"{counts}; {status['remaining_steps']:,} agent steps to go: {when}")
    return "\n".join(lines)


def run_upgrade_checkpoint(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mario_apo.checkpoint import upgrade_checkpoint

    backup = upgrade_checkpoint(Path(args.run_dir))
    print(f"upgraded {Path(args.run_dir) / 'checkpoint.pt'} to the safe format; the original is {backup}")


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.population import is_population
    from mario_apo.runs import RunLock, create_run, load_run_config
    from mario_apo.tasks import parse_task
    from mario_apo.train import train

    if args.learners or (args.resume and is_population(Path(args.resume))):
        return run_population(args)
    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir)
        asked = requested_task(args)
        if asked and parse_task(asked).name != cfg.task:
            raise UsageError(
                f"{run_dir} trains {cfg.task!r}, not {parse_task(asked).name!r}: a run resumes its own task"
            )
        if args.total_steps is not None:
            cfg.ppo.total_steps = args.total_steps
            check_rollout_fits(cfg)
        if args.progress is not None:
            cfg.log.progress = args.progress
        if args.device is not None:  # where a run resumes is the resuming machine's business
            check_device_spec(args.device)
            cfg.device = args.device
        resolve_device(cfg.device)
    else:
        cfg = resolve_run_config(args)
        resolve_device(cfg.device)  # before the run dir exists
        run_dir = create_run(cfg)
        print(f"run dir: {run_dir}", file=sys.stderr)
    try:
        with RunLock(run_dir):  # held until the process ends; the OS releases it even after kill -9
            summary = train(cfg, run_dir, resume=bool(args.resume))
    except TrainingError as err:
        print(f"mario-apo: training stopped: {err}; the last good checkpoint in {run_dir} is kept", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def run_population(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.population import (
        check_cluster_fits,
        create_population,
        read_population,
        start_ray,
        stop_ray,
        train_population,
    )

    if args.resume:
        pop_dir = Path(args.resume)
        given = [
            flag for flag, value in (("--learners", args.learners), ("--share-anchors", args.share_anchors)) if value
        ]
        if given or requested_task(args):
            raise UsageError(f"a population resumes with its own settings; drop {' '.join(given) or '--task/--level'}")
        learners = read_population(pop_dir)["population"]["learners"]
    else:
        cfg = resolve_run_config(args)
        resolve_device(cfg.device)  # the learners share it (on one GPU, cuda:0), checked before anything is written
        learners = args.learners
    started = False
    try:
        started = start_ray(args.address, num_cpus=max(os.cpu_count() or 1, learners))  # before anything is written
        check_cluster_fits(learners)
        if not args.resume:
            pop_dir = create_population(cfg, args.learners, args.share_anchors)
            print(f"population dir: {pop_dir}", file=sys.stderr)
        summary = train_population(pop_dir, args.total_steps if args.resume else None)
    except TrainingError as err:
        kept = f"; the learners' checkpoints in {pop_dir} are kept" if args.resume or started else ""
        print(f"mario-apo: training stopped: {err}{kept}", file=sys.stderr)
        return 1
    finally:
        if started:
            stop_ray()
    print(json.dumps({k: v for k, v in summary.items() if k != "learner_summaries"}))
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "tasks":
            run_tasks(args)
        elif args.command == "bench" and args.bench == "env":
            run_bench_env(args)
        elif args.command == "bench" and args.bench == "train":
            run_bench_train(args)
        elif args.command == "bench" and args.bench == "parity":
            run_bench_parity(args)
        elif args.command == "bench" and args.bench == "population":
            run_bench_population(args)
        elif args.command == "train":
            return run_train(args)
        elif args.command == "replay":
            return run_replay(args)
        elif args.command == "eval":
            run_eval(args)
        elif args.command == "suite":
            return run_suite_command(args)
        elif args.command == "calibrate":
            run_calibrate(args)
        elif args.command == "upgrade-checkpoint":
            run_upgrade_checkpoint(args)
    except UsageError as err:
        print(f"mario-apo: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
