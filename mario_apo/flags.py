"""Command-line flags generated from the config dataclasses, and the one function that resolves them.

Every ``option(...)`` field of ``mario_apo.config`` becomes a flag with its help
text, valid range and default (per task family for PPO's fields, from
``FAMILY_DEFAULTS``). ``resolve_run_config`` turns parsed flags into a
``RunConfig``: family defaults first, then whatever was given. The CLI, the suite
runner (a suite's settings are train flags) and the suite's random-policy baseline
all go through it, so a setting means the same thing everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mario_apo.config import (
    FAMILY_DEFAULTS,
    AnchorConfig,
    EnvConfig,
    LogConfig,
    PPOConfig,
    RunConfig,
    SILConfig,
    check_setting,
    ppo_defaults,
    valid_values,
)
from mario_apo.errors import UsageError
from mario_apo.runs import check_output_file
from mario_apo.tasks import parse_task


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def positive_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.lstrip("-").isdigit() or int(text) < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def fraction_list(text: str) -> list[float]:
    """``"0.3,0.1"`` -> ``[0.3, 0.1]``, each strictly between 0 and 1."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated rates between 0 and 1, got {text!r}")
    return values


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def probability(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1), got {text!r}")
    return value


def output_file(text: str) -> str:
    """An output file path, checked before any work (``runs.check_output_file``)."""
    try:
        check_output_file(text, "")
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err).strip()) from None
    return text


def positive_int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``."""
    return [positive_int(part) for part in text.split(",")]


def comma_list(text: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; empty parts are dropped."""
    return [part for part in text.split(",") if part]


def _flag_type(f: dataclasses.Field) -> Callable[[str], Any]:
    """The argparse type of a field's flag: the text parsed as the field's type, then ``check_setting``."""
    item = f.type[5:-1] if f.type.startswith("list[") else f.type
    parse = {"int": int, "float": float, "str": str}[item]

    def flag_value(text: str) -> Any:
        try:
            value = [parse(part) for part in text.split(",") if part] if f.type.startswith("list[") else parse(text)
            return check_setting(f, value, "")
        except (ValueError, UsageError):
            raise argparse.ArgumentTypeError(f"expected {valid_values(f)}, got {text!r}") from None

    return flag_value


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are flags (declared with ``option``)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag_dest(f: dataclasses.Field) -> str:
    """The argparse dest of a field's flag (also the key of a suite file's settings)."""
    return (f.metadata["flag"] or f.name).replace("-", "_")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return value if value != "" else '""'


def _default_text(cls: type, f: dataclasses.Field) -> str:
    if cls is not PPOConfig:
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return f"Default: {_show(default)}"
    per_family = {family: getattr(ppo_defaults(family), f.name) for family in FAMILY_DEFAULTS}
    if len(set(per_family.values())) == 1:
        return f"Default: {_show(next(iter(per_family.values())))}"
    return "Default: " + ", ".join(f"{family} {_show(value)}" for family, value in per_family.items())


def add_config_flags(group: argparse._ActionsContainer, cls: type) -> None:
    """One flag per ``option`` field of ``cls``; every default is None so resolution knows what was given."""
    for f in config_fields(cls):
        flag = "--" + flag_dest(f).replace("_", "-")
        help_text = f"{f.metadata['help']}. {_default_text(cls, f)}".replace("%", "%%")
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.metadata["choices"]:
            group.add_argument(flag, choices=f.metadata["choices"], default=None, help=help_text)
        else:
            group.add_argument(flag, type=_flag_type(f), default=None, help=help_text)


RESUME_FLAGS = ("--total-steps", "--device", "--torch-threads", "--progress/--no-progress")
"""The settings a resumed run takes from the resuming command: how long, where (device and CPU threads),
and how it shows."""


def changed_setting_flags(args: argparse.Namespace, cfg: RunConfig) -> list[str]:
    """The setting flags of this command line whose value differs from ``cfg``'s (a resumed run's saved
    settings), as ``--lr 0.1 (the run's: 0.00025)``; a flag that repeats the saved value changes nothing."""
    changed = []
    for part in (cfg, *(getattr(cfg, key) for key in RunConfig.PARTS)):
        for f in config_fields(type(part)):
            value, saved = getattr(args, flag_dest(f), None), getattr(part, f.name)
            if f.name == "run_dir" and value is not None:  # the same folder, however it is spelled
                value, saved = Path(value).resolve(), Path(saved).resolve()
            if value is not None and value != saved:
                flag = "--" + flag_dest(f).replace("_", "-")
                flag = "--progress/--no-progress" if flag == "--progress" else flag
                changed.append(f"{flag} {getattr(args, flag_dest(f))} (the run's: {getattr(part, f.name)})")
    return changed


def apply_flags(args: argparse.Namespace, target: Any) -> None:
    """Set every field of the config ``target`` whose flag was given."""
    for f in config_fields(type(target)):
        value = getattr(args, flag_dest(f), None)
        if value is not None:
            setattr(target, f.name, value)


def add_env_flags(parser: argparse.ArgumentParser) -> None:
    add_config_flags(parser.add_argument_group("env (how a task's env is built)"), EnvConfig)


def env_config(args: argparse.Namespace) -> EnvConfig:
    cfg = EnvConfig()
    apply_flags(args, cfg)
    cfg.validate()
    return cfg


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of ``mario-apo train``: the task, then one per field of the run config (mario_apo/config.py)."""
    what = parser.add_argument_group("what to train")
    what.add_argument("--level", help="Mario level W-S; shorthand for --task mario:W-S[:REWARD]")
    what.add_argument("--reward", help="Mario reward mode with --level: dense (default), sparse or goal:X")
    what.add_argument("--task", help="a task string (see 'mario-apo tasks'). Default: mario:1-1")
    what.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue runs/<name> from its checkpoint (its saved config is used; --total-steps may extend it)",
    )
    add_config_flags(what, RunConfig)
    population = parser.add_argument_group("population (Ray: pip install -e '.[ray]')")
    population.add_argument(
        "--learners",
        type=positive_int,
        help="train N learners at once (Ray actors, seeds derived from --seed), each in runs/<name>/learner-<i>/. "
        "Default: one run, no Ray",
    )
    population.add_argument(
        "--share-anchors",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="APO: the learners share one top-K of anchors (a hub actor); each anchors to what any of them "
        "found. Default: off",
    )
    population.add_argument(
        "--address",
        help="a Ray cluster to run the learners on (auto, or HOST:PORT of 'ray start --head'). "
        "Default: a local Ray instance",
    )
    add_config_flags(parser.add_argument_group("PPO (defaults per task family; the README has the table)"), PPOConfig)
    add_config_flags(parser.add_argument_group("APO (--algo apo only)"), AnchorConfig)
    add_config_flags(parser.add_argument_group("SIL (--algo sil only)"), SILConfig)
    add_config_flags(parser.add_argument_group("logging and checkpoints"), LogConfig)
    add_env_flags(parser)


def train_parser() -> Parser:
    """A parser of ``mario-apo train``'s flags alone (the suite runner checks and resolves with it)."""
    parser = Parser(prog="mario-apo train")
    add_train_flags(parser)
    return parser


def requested_task(args: argparse.Namespace) -> str | None:
    """The task string given by --level/--reward or --task; None when neither is given."""
    return f"mario:{args.level}:{args.reward or 'dense'}" if args.level is not None else args.task


def resolve_run_config(args: argparse.Namespace) -> RunConfig:
    """The flags of a new run as a RunConfig: the task family's defaults, then every flag given."""
    if args.level and args.task:
        raise UsageError("give --level (Mario shorthand) or --task, not both")
    if args.reward and not args.level:
        raise UsageError(
            "--reward goes with --level; with --task write the reward into the task string (mario:1-1:sparse)"
        )
    asked = requested_task(args)
    task = parse_task("mario:1-1" if asked is None else asked)
    cfg = RunConfig(task=task.name, ppo=ppo_defaults(task.family))
    for part in (cfg, cfg.env, cfg.ppo, cfg.anchor, cfg.sil, cfg.log):
        apply_flags(args, part)
    check_population_flags(args, cfg.algo)
    cfg.check()
    return cfg


def check_population_flags(args: argparse.Namespace, algo: str) -> None:
    if args.share_anchors and (args.learners or 1) < 2:
        raise UsageError("--share-anchors shares anchors among learners: add --learners N (N >= 2)")
    if args.share_anchors and algo != "apo":
        raise UsageError(f"--share-anchors shares APO's anchors; --algo {algo} keeps none (use --algo apo)")
    if args.address and not args.learners:
        raise UsageError("--address is the Ray cluster of a population: add --learners N")
