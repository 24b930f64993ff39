"""The ``mario-apo`` command line: PPO and Anchored Policy Optimization on Super Mario Bros.

Every bad input ends with one line ``mario-apo: error: ...`` naming what is
valid, and exit code 2, before anything on disk is touched.
"""

from __future__ import annotations

import argparse
import json
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


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


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


def add_train_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``mario-apo train``: one per field of the run config (see mario_apo/config.py)."""
    from mario_apo.config import ALGOS, ANCHOR_ADMIT, ANCHOR_KL_DIRECTIONS, BETA_SCHEDULES, WANDB_MODES

    what = parser.add_argument_group("what to train")
    what.add_argument("--algo", choices=ALGOS, default="apo", help="ppo, or apo (Anchored Policy Optimization). Default: apo")
    what.add_argument("--level", help="Mario level W-S; shorthand for --task mario:W-S[:REWARD]")
    what.add_argument("--reward", help="Mario reward mode with --level: dense (default), sparse or goal:X")
    what.add_argument("--task", help="a task string (see 'mario-apo tasks'). Default: mario:1-1")
    what.add_argument("--seed", type=int, default=1, help="seed of torch, numpy and the envs. Default: 1")
    what.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> from its checkpoint (its saved config is used; --total-steps may extend it)")

    ppo = parser.add_argument_group("PPO (defaults depend on the task family; Mario's are shown, the README has the table)")
    ppo.add_argument("--total-steps", type=positive_int, help="agent steps over all envs. Default: Mario 1M, CartPole 100k, MountainCar 1M")
    ppo.add_argument("--num-envs", type=positive_int, help="parallel envs. Default: Mario 8, CartPole 8, MountainCar 16")
    ppo.add_argument("--num-steps", type=positive_int, help="steps per env per rollout. Default: Mario 128")
    ppo.add_argument("--lr", type=positive_float, help="Adam learning rate. Default: Mario 2.5e-4")
    ppo.add_argument("--anneal-lr", action=argparse.BooleanOptionalAction, help="anneal the learning rate linearly to 0. Default: on")
    ppo.add_argument("--anneal-clip", action=argparse.BooleanOptionalAction, help="anneal the clip epsilon linearly to 0. Default: CartPole on, others off")
    ppo.add_argument("--gamma", type=positive_float, help="discount. Default: Mario 0.99")
    ppo.add_argument("--gae-lambda", type=non_negative_float, help="GAE lambda. Default: Mario 0.95")
    ppo.add_argument("--update-epochs", type=positive_int, help="passes over each batch. Default: Mario 4")
    ppo.add_argument("--num-minibatches", type=positive_int, help="minibatches per pass. Default: Mario 4")
    ppo.add_argument("--clip-coef", type=positive_float, help="surrogate clip epsilon. Default: Mario 0.1")
    ppo.add_argument("--clip-vloss", action=argparse.BooleanOptionalAction, help="clip the value loss around the old values. Default: Mario on, CartPole/MountainCar off")
    ppo.add_argument("--ent-coef", type=non_negative_float, help="entropy bonus. Default: Mario 0.01")
    ppo.add_argument("--vf-coef", type=non_negative_float, help="value loss weight. Default: 0.5 (CartPole 1.0)")
    ppo.add_argument("--max-grad-norm", type=positive_float, help="global grad-norm clip. Default: 0.5")

    apo = parser.add_argument_group("APO (ignored with --algo ppo)")
    apo.add_argument("--beta", type=non_negative_float, help="anchor KL weight; 0 makes APO exactly PPO. Default: 0.1")
    apo.add_argument("--beta-schedule", choices=BETA_SCHEDULES, help="constant (default), linear-decay or linear-warmup")
    apo.add_argument("--anchors", type=positive_int, help="K, the number of best episodes kept. Default: 8")
    apo.add_argument("--anchor-batch", type=positive_int, help="anchor states per minibatch step. Default: 64")
    apo.add_argument("--anchor-admit", choices=ANCHOR_ADMIT, help="top: top-K by return (default); success: only goal-reaching episodes")
    apo.add_argument("--anchor-kl", choices=ANCHOR_KL_DIRECTIONS, help="forward: KL(p_best||pi) (default); reverse: KL(pi||p_best)")
    apo.add_argument("--anchor-max-mb", type=positive_float, help="anchor buffer cap in MB (worst evicted first). Default: 256")

    log = parser.add_argument_group("logging and checkpoints")
    log.add_argument("--run-dir", default="runs", help="parent folder of run dirs. Default: runs")
    log.add_argument("--name", help="run name. Default: <algo>-<task>-s<seed>-<time>")
    log.add_argument("--wandb", choices=WANDB_MODES, default="offline", help="W&B mode. Default: offline (no account or network)")
    log.add_argument("--wandb-project", default="mario-apo", help="W&B project. Default: mario-apo")
    log.add_argument("--wandb-group", default="", help="W&B group. Default: the task string")
    log.add_argument("--wandb-tags", default="", help="extra comma-separated W&B tags (algo and task are always added)")
    log.add_argument("--checkpoint-every", type=positive_int, default=50, help="checkpoint every N updates (and at the end). Default: 50")
    log.add_argument("--no-progress", action="store_true", help="no progress bar")
    log.add_argument("--eval-every", type=int, default=0, help="evaluate the greedy policy every N updates, logged as eval/* (0: never). Default: 0")
    log.add_argument("--eval-episodes", type=positive_int, default=10, help="episodes per evaluation. Default: 10")
    log.add_argument("--video-every", type=int, default=100, help="APO on Mario: when a new best anchor is admitted, write its replay video and log it to W&B, at most once per N updates (0: off). Default: 100")
    log.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: all cores). Default: 0")
    add_env_args(parser)


def requested_task(args: argparse.Namespace) -> str | None:
    """The task string given by --level/--reward or --task; None when neither is given."""
    return f"mario:{args.level}:{args.reward or 'dense'}" if args.level else args.task


def train_config(args: argparse.Namespace):
    """Resolve the flags of a new run into a RunConfig (family defaults, then flags)."""
    from mario_apo.config import AnchorConfig, LogConfig, RunConfig, ppo_defaults
    from mario_apo.tasks import parse_task

    if args.level and args.task:
        raise UsageError("give --level (Mario shorthand) or --task, not both")
    if args.reward and not args.level:
        raise UsageError("--reward goes with --level; with --task write the reward into the task string (mario:1-1:sparse)")
    task = parse_task(requested_task(args) or "mario:1-1")
    ppo = ppo_defaults(task.family)
    overrides = {
        "total_steps": args.total_steps, "num_envs": args.num_envs, "num_steps": args.num_steps,
        "learning_rate": args.lr, "gamma": args.gamma, "gae_lambda": args.gae_lambda,
        "update_epochs": args.update_epochs, "num_minibatches": args.num_minibatches, "clip_coef": args.clip_coef,
        "ent_coef": args.ent_coef, "vf_coef": args.vf_coef, "max_grad_norm": args.max_grad_norm,
        "anneal_lr": args.anneal_lr, "anneal_clip": args.anneal_clip, "clip_vloss": args.clip_vloss,
    }
    for name, value in overrides.items():
        if value is not None:
            setattr(ppo, name, value)
    anchor = AnchorConfig()
    for name in ("beta", "beta_schedule", "anchors", "anchor_batch", "anchor_admit", "anchor_kl", "anchor_max_mb"):
        if getattr(args, name) is not None:
            setattr(anchor, name, getattr(args, name))
    log = LogConfig(
        run_dir=args.run_dir, name=args.name or "", wandb=args.wandb, wandb_project=args.wandb_project,
        wandb_group=args.wandb_group, wandb_tags=[t for t in args.wandb_tags.split(",") if t],
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
        eval_every=max(args.eval_every, 0), eval_episodes=args.eval_episodes, video_every=max(args.video_every, 0),
    )
    cfg = RunConfig(algo=args.algo, task=task.name, seed=args.seed, torch_threads=args.torch_threads,
                    env=env_config(args), ppo=ppo, anchor=anchor, log=log)
    check_rollout_fits(cfg)
    return cfg


def check_rollout_fits(cfg) -> None:
    ppo = cfg.ppo
    if ppo.total_steps < ppo.batch_size:
        raise UsageError(
            f"--total-steps {ppo.total_steps} is less than one rollout (num_envs x num_steps = {ppo.batch_size})"
        )
    if ppo.batch_size % ppo.num_minibatches:
        raise UsageError(f"--num-minibatches {ppo.num_minibatches} must divide the batch ({ppo.batch_size} = num_envs x num_steps)")


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
    train_bench = benches.add_parser(
        "train", help="our PPO and APO vs Stable-Baselines3 PPO: Mario SPS, CartPole time to eval >= 475, peak RSS"
    )
    train_bench.add_argument("--mario-steps", type=positive_int, default=10240, help="agent steps per Mario job. Default: 10240 (10 updates)")
    train_bench.add_argument("--cartpole-steps", type=positive_int, default=100_000, help="steps per CartPole job. Default: 100000")
    train_bench.add_argument("--skip-cartpole", action="store_true", help="only the Mario SPS comparison")
    train_bench.add_argument("--seed", type=int, default=1, help="seed of every job. Default: 1")
    train_bench.add_argument("--json", default="bench-train.json", help="where to write the JSON result. Default: bench-train.json")

    replay = commands.add_parser(
        "replay",
        help="re-simulate anchored Mario episodes, verify them, and write full-colour video",
        description="Re-run anchored episodes' recorded actions on a fresh emulator, check that return, "
        "length, max x and success (and every step's frame) match what was recorded, and write MP4 or GIF.",
    )
    replay.add_argument("run_dir", help="a run dir, runs/<name>")
    replay.add_argument("--episode", default="best", help="best (default), all, or an anchor rank N (0 = best)")
    replay.add_argument("--out", help="video file, .mp4 or .gif. Default: <run_dir>/videos/anchor-<rank>-ep<id>.mp4")
    replay.add_argument("--fps", type=positive_int, default=60, help="frames per second (the NES draws 60). Default: 60")
    replay.add_argument("--scale", type=positive_int, default=2, help="pixel scale of the 256x240 screen. Default: 2")

    evaluation = commands.add_parser(
        "eval", help="evaluate a run's checkpoint on fresh envs: success (flag) rate, returns, max x, lengths"
    )
    evaluation.add_argument("run_dir", help="a run dir, runs/<name>")
    evaluation.add_argument("--checkpoint", default="latest", help="latest (the run's checkpoint.pt) or a checkpoint path. Default: latest")
    evaluation.add_argument("--episodes", type=positive_int, default=20, help="episodes per level. Default: 20")
    policy = evaluation.add_mutually_exclusive_group()
    policy.add_argument("--greedy", dest="greedy", action="store_true", default=True, help="most probable action (default)")
    policy.add_argument("--sample", dest="greedy", action="store_false", help="sample actions from the policy")
    evaluation.add_argument("--level", nargs="+", metavar="W-S", help="Mario levels to evaluate on (the run's reward mode). Default: the run's level")
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the eval envs and sampling. Default: 0")
    evaluation.add_argument("--video", help="record the first episode (of the first level) to this .mp4 or .gif")
    evaluation.add_argument("--json", help="where to write the results. Default: <run_dir>/eval.json")

    suite = commands.add_parser("suite", help="benchmark suites: run the matrix, write the report")
    suites = suite.add_subparsers(dest="suite", required=True, parser_class=Parser)
    suite_run = suites.add_parser(
        "run", help="run every (task, algo, seed) of a suite, each in its own process; skips finished runs, resumes interrupted ones"
    )
    suite_run.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_run.add_argument("--jobs", type=positive_int, help="runs at once (torch threads = cores // jobs). Default: the suite's jobs")
    suite_report = suites.add_parser("report", help="Markdown report and PNG figures from the suite's local run dirs")
    suite_report.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_report.add_argument("--out", help="output folder. Default: experiments/results/<suite name>")

    train = commands.add_parser(
        "train",
        help="train PPO or APO (Anchored Policy Optimization) on a task",
        description="Train PPO or APO (Anchored Policy Optimization: PPO + beta * KL(p_best || pi_theta) "
        "over states of the best episodes so far). Writes runs/<name>/ (config.json, metrics.jsonl, "
        "checkpoint.pt, anchors.json) and an offline W&B run.",
    )
    add_train_args(train)
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


def run_bench_train(args: argparse.Namespace) -> None:
    from mario_apo.bench import bench_train, format_train_table, write_json

    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        raise UsageError("bench train compares against Stable-Baselines3: pip install 'mario-apo[bench]'") from None
    result = bench_train(args.mario_steps, args.cartpole_steps, args.seed, args.skip_cartpole)
    print(format_train_table(result))
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

    from mario_apo.replay import ReplayMismatch, load_anchor_index, replay, select_anchors, stored_frames_by_episode
    from mario_apo.tasks import EnvConfig, parse_task
    from mario_apo.video import VideoWriter

    run_dir = Path(args.run_dir)
    index = load_anchor_index(run_dir)
    chosen = select_anchors(index, args.episode)
    task, env_cfg = parse_task(index["task"]), EnvConfig(**index["env"])
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
                episode = replay(task, env_cfg, anchor["actions"], anchor, stored.get(anchor["episode_id"]), video)
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

    from mario_apo.checkpoint import CheckpointError, load_checkpoint
    from mario_apo.evaluate import evaluate
    from mario_apo.tasks import make_env, parse_task
    from mario_apo.train import load_run_config
    from models.actor_critic import make_model

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
    probe = make_env(task, cfg.env)
    model = make_model(probe.observation_space, probe.action_space)
    probe.close()
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {checkpoint_path} does not fit this run's model: {str(err).splitlines()[0]}") from None
    model.eval()
    results = []
    for k, eval_task in enumerate(tasks):
        video = Path(args.video) if args.video and k == 0 else None
        result = evaluate(model, eval_task, cfg.env, args.episodes, args.greedy, args.seed, video)
        result.update({"checkpoint": str(checkpoint_path), "global_step": state["global_step"]})
        results.append(result)
        print(
            f"{eval_task.name}: success {result['success_rate']:.2f} over {result['episodes']} {result['policy']} episodes; "
            f"return mean {result['mean_return']:.2f} median {result['median_return']:.2f}; "
            f"max x mean {result['mean_max_x']:.0f}; length mean {result['mean_length']:.0f}"
        )
    out = Path(args.json) if args.json else run_dir / "eval.json"
    out.write_text(json.dumps({"run_dir": str(run_dir), "results": results}, indent=2))
    print(f"wrote {out}" + (f" and {args.video}" if args.video else ""))


def run_suite_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.suite import load_suite, run_suite

    suite = load_suite(Path(args.suite_file))
    if args.suite == "run":
        counts = run_suite(suite, args.jobs)
        print(f"suite {suite.name}: {counts['done']} already finished, {counts['ran']} ran, {counts['failed']} failed")
        return 1 if counts["failed"] else 0
    from mario_apo.report import write_report

    report = write_report(suite, Path(args.out) if args.out else None)
    print(f"wrote {report}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mario_apo.ppo import NonFiniteLoss
    from mario_apo.tasks import parse_task
    from mario_apo.train import TrainingError, create_run, load_run_config, train

    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir)
        asked = requested_task(args)
        if asked and parse_task(asked).name != cfg.task:
            raise UsageError(f"{run_dir} trains {cfg.task!r}, not {parse_task(asked).name!r}: a run resumes its own task")
        if args.total_steps is not None:
            cfg.ppo.total_steps = args.total_steps
            check_rollout_fits(cfg)
        cfg.log.progress = not args.no_progress
    else:
        cfg = train_config(args)
        run_dir = create_run(cfg)
        print(f"run dir: {run_dir}", file=sys.stderr)
    try:
        summary = train(cfg, run_dir, resume=bool(args.resume))
    except (NonFiniteLoss, TrainingError) as err:
        print(f"mario-apo: training stopped: {err}; the last good checkpoint in {run_dir} is kept", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    from mario_apo.checkpoint import CheckpointError
    from mario_apo.replay import ReplayError
    from mario_apo.suite import SuiteError
    from mario_apo.tasks import TaskError

    try:
        args = build_parser().parse_args(argv)
        if args.command == "tasks":
            run_tasks(args)
        elif args.command == "bench" and args.bench == "env":
            run_bench_env(args)
        elif args.command == "bench" and args.bench == "train":
            run_bench_train(args)
        elif args.command == "train":
            return run_train(args)
        elif args.command == "replay":
            return run_replay(args)
        elif args.command == "eval":
            run_eval(args)
        elif args.command == "suite":
            return run_suite_command(args)
    except (UsageError, TaskError, CheckpointError, ReplayError, SuiteError) as err:
        print(f"mario-apo: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
