"""``mario-apo suite run|report|pack|status``: benchmark suites from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mario_apo.errors import TrainingError, UsageError
from mario_apo.flags import Parser, non_negative_float, output_file, positive_int
from mario_apo.report import write_report
from mario_apo.report_population import write_population_report
from mario_apo.report_wandb import write_wandb_summary
from mario_apo.runs import check_output_dir
from mario_apo.suite import expand, load_suite, pack_finished_runs, run_suite, suite_status


def add_suite_commands(commands: argparse._SubParsersAction) -> None:
    suite = commands.add_parser("suite", help="benchmark suites: run the matrix, write the report")
    suites = suite.add_subparsers(dest="suite", required=True, parser_class=Parser)
    suite_run = suites.add_parser(
        "run",
        help="run every (task, algo, seed) of a suite, each in its own process; "
        "skips finished runs, resumes interrupted ones",
    )
    suite_run.set_defaults(run=run_suite_run)
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
        help="CPUs (torch threads) each run uses; with --backend ray also what it asks Ray for. Give it when "
        "something else shares the machine (e.g. two suites at --jobs 1 on 2 cores: 1 each). Default: cores // jobs",
    )
    suite_run.add_argument(
        "--gpus-per-run",
        type=non_negative_float,
        help="with --backend ray: GPUs each run asks Ray for (fractional shares one GPU, e.g. 0.25: four runs "
        "per GPU); Ray makes just those visible to the run, whose --device auto then uses them. Default: 0",
    )
    suite_report = suites.add_parser("report", help="Markdown report and PNG figures from the suite's local run dirs")
    suite_report.set_defaults(run=run_suite_report)
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
    suite_pack.set_defaults(run=run_suite_pack)
    suite_pack.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_pack.add_argument(
        "--out", type=output_file, help="the archive. Default: experiments/results/<suite name>/finished-runs.tar.gz"
    )
    suite_status = suites.add_parser(
        "status", help="the matrix at a glance: finished / running / interrupted (at step) / pending, and an ETA"
    )
    suite_status.set_defaults(run=run_suite_status)
    suite_status.add_argument("suite_file", help="a suite file, e.g. experiments/cartpole.toml")
    suite_status.add_argument("--json", action="store_true", help="print the status as JSON")


def run_suite_run(args: argparse.Namespace) -> int:
    from mario_apo.population import start_ray, stop_ray  # Ray is an extra; torch comes with it

    suite = load_suite(Path(args.suite_file))
    if args.backend != "ray" and (args.address or args.gpus_per_run):
        raise UsageError("--address and --gpus-per-run are for --backend ray")
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


def run_suite_pack(args: argparse.Namespace) -> None:
    suite = load_suite(Path(args.suite_file))
    archive, count = pack_finished_runs(suite, Path(args.out) if args.out else None)
    print(f"wrote {archive}: the logs of {count} of {len(expand(suite))} runs (the finished ones)")


def run_suite_status(args: argparse.Namespace) -> None:
    status = suite_status(load_suite(Path(args.suite_file)))
    print(json.dumps(status, indent=2) if args.json else format_status(status))


def run_suite_report(args: argparse.Namespace) -> None:
    suite = load_suite(Path(args.suite_file))
    out = check_output_dir(args.out, "--out") if args.out else None
    if any(suite.trains_populations(label) for label in suite.algos):
        print(f"wrote {write_population_report(suite, out)}")
        return
    report = write_report(suite, out)
    print(f"wrote {report}")
    if args.wandb != "disabled":
        summary = json.loads((report.parent / "summary.json").read_text())
        print(f"wrote the W&B summary run: {write_wandb_summary(suite, summary, report.parent, args.wandb)}")


def format_status(status: dict) -> str:
    lines = [f"suite {status['suite']}:"]
    for cell in status["cells"]:
        detail = {
            "running": f"at step {cell['step']:,} ({cell.get('holder')})",
            "interrupted": f"at step {cell['step']:,}",
        }
        note = cell.get("damaged") or detail.get(cell["state"], "")
        lines.append(f"  {cell['run']:<44} {cell['state']:<12} {note}".rstrip())
    damaged = sum("damaged" in cell for cell in status["cells"])
    counts = ", ".join(f"{count} {state}" for state, count in status["counts"].items())
    counts += f" ({damaged} with a damaged log)" if damaged else ""
    eta = status["eta_seconds"]
    when = (
        f"~{eta / 3600:.1f} h at {status['steps_per_second']:.0f} steps/s" if eta is not None else "no finished run yet"
    )
    evaluations = status["remaining_eval_steps"]
    of_them = f" ({evaluations:,} of them evaluations, as many as finished runs spent)" if evaluations else ""
    lines.append(f"{counts}; {status['remaining_steps']:,} agent steps to go{of_them}: {when}")
    return "\n".join(lines)
