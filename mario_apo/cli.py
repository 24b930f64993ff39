"""The ``mario-apo`` command line: PPO and Anchored Policy Optimization on Super Mario Bros.

A table of commands: each registers its parser and its handler (``set_defaults(run=...)``) and
``main`` calls ``args.run(args)``. The suite and bench commands live in ``cli_suite`` and
``cli_bench``. Modules that import torch (training, evaluation, checkpoints; Ray and SB3 are
extras) are imported inside the handlers that need them, so ``--help`` and ``tasks`` start at once.

Every bad input ends with one line ``mario-apo: error: ...`` naming what is
valid, and exit code 2, before anything on disk is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from mario_apo import __version__
from mario_apo.calibrate import (
    DEFAULT_OUT,
    DEFAULT_TARGETS,
    calibrate_level,
    calibrate_task,
    task_calibration_path,
    write_calibration,
)
from mario_apo.cli_bench import add_bench_commands
from mario_apo.cli_suite import add_suite_commands
from mario_apo.config import EnvConfig
from mario_apo.device import DEVICE_FORMS, resolve_device
from mario_apo.errors import ReplayMismatch, TrainingError, UsageError
from mario_apo.flags import (
    RESUME_FLAGS,
    Parser,
    add_env_flags,
    add_train_flags,
    changed_setting_flags,
    env_config,
    fraction_list,
    output_file,
    positive_int,
    positive_int_list,
    requested_task,
    resolve_run_config,
)
from mario_apo.logger import check_wandb_online
from mario_apo.replay import replay
from mario_apo.runs import (
    RunFiles,
    RunLock,
    check_output_dir,
    check_output_file,
    create_run,
    load_run_config,
    write_json,
)
from mario_apo.tasks import parse_task, task_listing
from mario_apo.video import VideoWriter, check_video_path

USAGE_ERROR = 2


def build_parser() -> Parser:
    parser = Parser(
        prog="mario-apo",
        description="PPO and Anchored Policy Optimization (APO: PPO + beta * KL(p_best || pi)) on Super Mario Bros.",
    )
    parser.add_argument("--version", action="version", version=f"mario-apo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add_command in (
        add_tasks_command,
        add_bench_commands,
        add_replay_command,
        add_eval_command,
        add_suite_commands,
        add_calibrate_command,
        add_upgrade_checkpoint_command,
        add_train_command,
    ):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A stream closed by the caller (2>&-) is None here: its output goes nowhere instead of failing.
    sys.stdout = sys.stdout or open(os.devnull, "w")  # noqa: SIM115  (for the process's life)
    sys.stderr = sys.stderr or open(os.devnull, "w")  # noqa: SIM115
    try:
        args = build_parser().parse_args(argv)
        code = args.run(args) or 0
        sys.stdout.flush()  # here, where a reader that left is caught below, not at exit
        return code
    except UsageError as err:
        print(f"mario-apo: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except BrokenPipeError:  # the reader left (mario-apo tasks | head -1): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---- train ----------------------------------------------------------------------------------------


def add_train_command(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train PPO or APO (Anchored Policy Optimization) on a task",
        description="Train PPO or APO (Anchored Policy Optimization: PPO + beta * KL(p_best || pi_theta) "
        "over states of the best episodes so far). Writes runs/<name>/ (config.json, metrics.jsonl, "
        "checkpoint.pt, anchors.json) and an offline W&B run.",
    )
    train.set_defaults(run=run_train)
    add_train_flags(train)


def run_train(args: argparse.Namespace) -> int:
    from mario_apo.train import train

    if args.learners or (args.resume and RunFiles(Path(args.resume)).population.exists()):
        return run_population(args)
    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir)
        RunFiles(run_dir).refuse_links()
        asked = requested_task(args)
        if asked is not None and parse_task(asked).name != cfg.task:
            raise UsageError(
                f"{run_dir} trains {cfg.task!r}, not {parse_task(asked).name!r}: a run resumes its own task"
            )
        ignored = [flag for flag in changed_setting_flags(args, cfg) if flag.split()[0] not in RESUME_FLAGS]
        if ignored:
            raise UsageError(
                f"a run resumes with its own settings (config.json); {ignored[0]} cannot change them: "
                f"--resume honours only {', '.join(RESUME_FLAGS)}"
            )
        if args.total_steps is not None:
            cfg.ppo.total_steps = args.total_steps
        if args.progress is not None:
            cfg.log.progress = args.progress
        if args.device is not None:  # where a run resumes is the resuming machine's business
            cfg.device = args.device
        if args.torch_threads is not None:
            cfg.torch_threads = args.torch_threads
        cfg.check()
        cfg.check_fits()
        resolve_device(cfg.device)
        check_wandb_online(cfg.log.wandb)
    else:
        cfg = resolve_run_config(args)
        cfg.check_fits()
        resolve_device(cfg.device)  # before the run dir exists
        check_wandb_online(cfg.log.wandb)
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
        check_wandb_online(cfg.log.wandb)
        cfg.check_fits()
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


# ---- eval and replay -------------------------------------------------------------------------------


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    evaluation = commands.add_parser(
        "eval", help="evaluate a run's checkpoint on fresh envs: success (flag) rate, returns, max x, lengths"
    )
    evaluation.set_defaults(run=run_eval)
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
    evaluation.add_argument(
        "--video", type=output_file, help="record the first episode (of the first level) to this .mp4 or .gif"
    )
    evaluation.add_argument("--json", type=output_file, help="where to write the results. Default: <run_dir>/eval.json")
    evaluation.add_argument("--device", default="auto", help=f"where the policy runs: {DEVICE_FORMS}. Default: auto")


def run_eval(args: argparse.Namespace) -> None:
    from mario_apo.checkpoint import load_checkpoint
    from mario_apo.evaluate import evaluate, policy_from_checkpoint

    device = resolve_device(args.device)
    run_dir = Path(args.run_dir)
    cfg = load_run_config(run_dir)
    task = parse_task(cfg.task)
    out = check_output_file(args.json or RunFiles(run_dir).evaluation, "--json")  # before the episodes
    if args.video:
        usable_video_path(args.video)
    if args.level and not task.is_mario:
        raise UsageError(f"--level is for Mario runs; {run_dir} trains {task.name!r}")
    tasks = [parse_task(f"mario:{level}:{task.reward}") for level in args.level] if args.level else [task]
    checkpoint_path = RunFiles(run_dir).checkpoint if args.checkpoint == "latest" else Path(args.checkpoint)
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
    write_json(out, {"run_dir": str(run_dir), "results": results})
    print(f"wrote {out}" + (f" and {args.video}" if args.video else ""))


def add_replay_command(commands: argparse._SubParsersAction) -> None:
    replaying = commands.add_parser(
        "replay",
        help="re-simulate anchored Mario and MiniGrid episodes, verify them, and write full-colour video",
        description="Re-run anchored episodes' recorded actions (and seeds) in a fresh env, check that return, "
        "length, max x and success (and every step's observation) match what was recorded, and write MP4 or GIF.",
    )
    replaying.set_defaults(run=run_replay)
    replaying.add_argument("run_dir", help="a run dir, runs/<name>")
    replaying.add_argument("--episode", default="best", help="best (default), all, or an anchor rank N (0 = best)")
    replaying.add_argument(
        "--out", type=output_file, help="video file, .mp4 or .gif. Default: <run_dir>/videos/anchor-<rank>-ep<id>.mp4"
    )
    replaying.add_argument(
        "--fps",
        type=positive_int,
        help="frames per second. Default: 60 for Mario (every frame the NES draws), 4 for MiniGrid (one per step)",
    )
    replaying.add_argument(
        "--scale", type=positive_int, default=2, help="pixel scale of the screen (Mario: 256x240). Default: 2"
    )


def usable_video_path(path: str) -> None:
    try:
        check_video_path(Path(path))
    except ValueError as err:
        raise UsageError(str(err)) from None


def run_replay(args: argparse.Namespace) -> int:
    from mario_apo.anchor_files import load_anchor_index, replay_video_path, select_anchors, stored_frames_by_episode

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
            out = replay_video_path(run_dir, anchor)
        elif len(chosen) > 1:
            out = Path(args.out).with_name(f"{Path(args.out).stem}-{name}{Path(args.out).suffix}")
        else:
            out = Path(args.out)
        try:
            fps = args.fps or (60 if task.is_mario else 4)
            with VideoWriter(out, fps=fps, scale=args.scale) as video:
                frames = stored.get((anchor.get("finder"), anchor["episode_id"]))
                episode = replay(task, env_cfg, anchor["actions"], anchor, frames, video, anchor)
        except ReplayMismatch as err:
            print(f"mario-apo: replay of {name} failed verification: {err}; no video written", file=sys.stderr)
            return 1
        print(
            f"{name}: verified (return {episode['r']:.3f}, length {episode['l']}, max x {episode['max_x']}, "
            f"success {episode['success']}); {video.frames} frames -> {out}"
        )
    return 0


# ---- calibrate, tasks, upgrade-checkpoint -------------------------------------------------------------


def add_calibrate_command(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="how rare is the goal: a uniform-random policy's P(max x >= X) per Mario level, and the rungs; "
        "or its success rate per task (--task)",
        description="Play N uniform-random episodes under the env settings a training run uses and write, per "
        "level, P(max x >= X) for every X with Wilson 95%% intervals, the X nearest each target rarity "
        "(the goal:X rungs), and a log-scale plot. With --task, per task (e.g. MiniGrid sizes): the success "
        "rate with its Wilson 95%% interval and agent steps per success, in calibration-<task>.json.",
    )
    calibrate.set_defaults(run=run_calibrate)
    calibrate.add_argument("--level", nargs="+", default=["1-1"], metavar="W-S", help="Mario levels. Default: 1-1")
    calibrate.add_argument(
        "--task",
        nargs="+",
        default=[],
        metavar="TASK",
        help="calibrate these tasks instead of Mario levels (not Mario: e.g. minigrid:DoorKey-8x8 "
        "minigrid:DoorKey-16x16:max_steps:1000; see 'mario-apo tasks'). Default: none",
    )
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
        default=str(DEFAULT_OUT),
        help=f"output folder. Default: {DEFAULT_OUT}",
    )
    add_env_flags(calibrate)


def run_calibrate(args: argparse.Namespace) -> None:
    env_cfg = env_config(args)
    check_output_dir(args.out, "--out")
    for level in args.level:
        parse_task(f"mario:{level}")  # every level checked before hours of episodes
    tasks = [parse_task(task) for task in args.task]
    if any(task.is_mario for task in tasks):
        raise UsageError("calibrate --task takes non-Mario tasks; calibrate Mario levels with --level W-S")

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    written = []
    try:
        for task in tasks:
            record = calibrate_task(task, args.episodes, args.seed, args.workers)
            path = task_calibration_path(task, Path(args.out))
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, record, indent=1)
            written.append(task.name)
            print(
                f"{task.name}: success {record['rate']:.4f} [{record['low']:.4f}, {record['high']:.4f}] "
                f"over {record['episodes']} episodes; mean length {record['mean_length']:.0f}; wrote {path}"
            )
        for level in [] if tasks else args.level:
            record = calibrate_level(
                level, env_cfg, args.episodes, args.targets, args.compare_stall, args.seed, args.workers
            )
            path = write_calibration(record, Path(args.out))
            written.append(level)
            rungs = ", ".join(f"{r['target']}: goal:{r['x']} ({r['rate']:.4f})" for r in record["rungs"])
            print(f"{level}: median episode {record['median_length']:.0f} steps; rungs {rungs}; wrote {path}")
    except KeyboardInterrupt as stopped:
        # finished levels stay written; one cut short is not (fewer episodes would misstate its rarity)
        left = ", ".join(name for name in (args.task or args.level) if name not in written)
        print(f"mario-apo: calibrate: {stopped or 'SIGINT'}: stopped; not written: {left}", file=sys.stderr)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def add_tasks_command(commands: argparse._SubParsersAction) -> None:
    tasks = commands.add_parser("tasks", help="list the task strings (levels, reward modes, action sets)")
    tasks.set_defaults(run=lambda args: print(task_listing()))


def add_upgrade_checkpoint_command(commands: argparse._SubParsersAction) -> None:
    upgrade = commands.add_parser(
        "upgrade-checkpoint",
        help="convert a trusted run's checkpoint from mario-apo < 0.2 (pickled numpy) to the safe format",
        description="Checkpoints load with torch.load(weights_only=True): tensors and plain values only. One "
        "written by mario-apo before 0.2 holds numpy objects and is refused. If you trust where the run came "
        "from, this loads it once with full unpickling and rewrites it safely (the original is kept as "
        "checkpoint.pt.before-upgrade).",
    )
    upgrade.set_defaults(run=run_upgrade_checkpoint)
    upgrade.add_argument("run_dir", help="a run dir, runs/<name>")


def run_upgrade_checkpoint(args: argparse.Namespace) -> None:
    from mario_apo.checkpoint import upgrade_checkpoint

    backup = upgrade_checkpoint(Path(args.run_dir))
    print(f"upgraded {RunFiles(Path(args.run_dir)).checkpoint} to the safe format; the original is {backup}")


if __name__ == "__main__":
    sys.exit(main())
