"""Populations of learners on Ray: ``mario-apo train ... --learners N [--share-anchors]``.

A population is N ordinary runs trained at once, each in a Ray actor (``Learner``) with
its own env workers, model and optimizer, with seeds derived from the run seed::

    runs/<name>/population.json     what the population is (its settings, N, sharing, the learner seeds)
    runs/<name>/metrics.jsonl       population/* metrics (and a W&B run), x-axis: all learners' steps together
    runs/<name>/summary.json        written when every learner has finished
    runs/<name>/learner-<i>/        an ordinary run dir: eval, replay, --resume and reports work on it

With ``--share-anchors`` (APO only), one more actor, the ``AnchorHub``, holds the population's
top K anchors under the learners' ranking rule (``--anchor-rank``, ``--anchor-ties``; ties
go by when the hub received an episode). After each rollout a learner offers the hub the
episodes that would enter its copy of the top K, and takes the hub's top K when its
version changed (``mario_apo.anchors.SharedAnchoring``). The KL target of an anchor stays
the distribution its finder recorded. The hub holds the top K once, under the same MB cap
as a learner's buffer, and is rebuilt from the learners' checkpoints on ``--resume``.

The driver (this process) watches the learners' metrics files for the population
metrics, turns the first Ctrl-C or SIGTERM into a stop request to every learner (each
finishes its update and checkpoints), and lets Ray restart a learner whose process died
(``max_restarts``): it resumes from its checkpoint while the others go on.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mario_apo.anchors import Anchor, AnchorBuffer, anchors_from_state
from mario_apo.checkpoint import load_checkpoint
from mario_apo.config import AnchorConfig, RunConfig
from mario_apo.episodes import RECENT_EPISODES
from mario_apo.errors import CheckpointError, TrainingError, UsageError, first_line
from mario_apo.logger import RunLogger
from mario_apo.runs import (
    RunFiles,
    RunLock,
    create_run,
    load_run_config,
    new_run_dir,
    read_json,
    run_record,
    write_json,
)
from mario_apo.seeding import SeedStreams
from mario_apo.stopping import StopFlag, StopRequest

LEARNER_RESTARTS = 3
"""How often Ray restarts a learner whose process died before the population gives up on it."""
POLL_SECONDS = 2.0
CONNECT_SECONDS = 5.0
LOCAL_START_ATTEMPTS = 3
"""A busy machine can make Ray's processes miss the 30 s it gives them to start; try again before giving up."""


def require_ray():
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("populations and --backend ray need Ray: pip install -e '.[ray]'") from None
    return ray


def start_ray(address: str | None, num_cpus: int) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local instance with ``num_cpus`` CPUs;
    whether this call started it (and so should shut it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address and address != "auto":
        check_reachable(address)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPU-visibility warnings on CPU boxes
    # Ray renices its workers to 15, and with them the learners, the suite's runs and their env workers:
    # any other process on the machine would then starve them (10x slower beside one busy process)
    os.environ.setdefault("RAY_worker_niceness", "0")
    if address:
        try:
            ray.init(address=address, log_to_driver=True, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UsageError(
                f"cannot reach a Ray cluster at --address {address!r} ({first_line(err)}); start one with "
                "'ray start --head', or leave --address out for a local instance"
            ) from None
        return True
    for attempt in range(LOCAL_START_ATTEMPTS):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR")
            return True
        except Exception as err:  # a bare Exception when Ray's processes miss its fixed 30 s start-up window
            ray.shutdown()
            if attempt + 1 == LOCAL_START_ATTEMPTS:
                raise TrainingError(
                    f"the local Ray instance did not start ({first_line(err)}); on an overloaded machine its "
                    "start can outlast Ray's timeout: run the same command again"
                ) from None
    return True


def check_reachable(address: str) -> None:
    """A HOST:PORT that accepts no connection within seconds is one line, not minutes of Ray's retries."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected auto or HOST:PORT (what 'ray start --head' prints)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as err:
        raise UsageError(
            f"cannot reach a Ray cluster at --address {address!r} ({err.strerror or err}); start one with "
            "'ray start --head', or leave --address out for a local instance"
        ) from None


def learner_dirs(pop_dir: Path, learners: int) -> list[Path]:
    return [RunFiles(pop_dir).learner(i) for i in range(learners)]


def hub_name(record: dict[str, Any]) -> str:
    """The hub actor's name: unique per population (learners find their hub by it; a handle among
    a restartable actor's constructor arguments would live in the object store)."""
    return f"mario-apo-hub-{record['wandb_id']}"


# ---- the hub ------------------------------------------------------------------------


class AnchorHub:
    """The population's top K anchors (a Ray actor): one ranking, one copy, versioned."""

    def __init__(self, cfg: AnchorConfig):
        self.buffer = AnchorBuffer(cfg, num_envs=0, frame_stack=None, rng=None, gamma=None)
        self.version = 0

    def restore(self, anchors: list[Anchor]) -> int:
        """Rebuild from the learners' checkpoints (each holds a copy of the top K it last saw): every
        anchor once, in its recorded order. Returns how many anchors the hub holds."""
        unique = {(a.finder, a.episode_id): a for a in anchors}
        self.buffer.replace(sorted(unique.values(), key=self.buffer.key)[: self.buffer.cfg.anchors])
        self.version += 1
        return len(self.buffer)

    def sync(self, offers: list[Anchor], version: int) -> tuple[int, list[Anchor] | None, int]:
        """Rank ``offers`` (in the order they ended) into the top K; return the hub's version, its
        top K when that differs from ``version`` (None otherwise), and how many offers it kept."""
        accepted = sum(self.buffer.admit(anchor) for anchor in offers)
        if accepted:
            self.version += 1
        return self.version, (self.buffer.anchors if version != self.version else None), accepted

    def stats(self) -> dict[str, float]:
        return {"anchors": len(self.buffer), "mb": self.buffer.nbytes / 2**20, "version": self.version}


@dataclass
class HubClient:
    """A learner's line to the hub actor (``mario_apo.anchors.Hub``)."""

    handle: Any
    learner: int

    def sync(self, offers: list[Anchor], version: int) -> tuple[int, list[Anchor] | None, int]:
        import ray

        return ray.get(self.handle.sync.remote(offers, version))


# ---- the learners ---------------------------------------------------------------------


class Learner:
    """One learner (a Ray actor): an ordinary run in its own run dir. When Ray restarts it after its
    process died, ``run`` is called again and resumes from the run's checkpoint."""

    def __init__(self, index: int, hub: str | None):
        """:param hub: the name of the population's hub actor (None: no shared anchors)"""
        import mario_apo.train  # noqa: F401  (and with it torch: the slow part of a learner's start)

        self.index = index
        self.hub = None if hub is None else require_ray().get_actor(hub)
        self.stop = StopFlag()

    def run(self, cfg: RunConfig, run_dir: str) -> dict[str, Any]:
        from mario_apo.train import train

        run_dir = Path(run_dir)
        files = RunFiles(run_dir)
        resume = files.checkpoint.exists()
        if not resume:  # started before and died before its first checkpoint: start over
            for leftover in (files.metrics, files.anchors, files.summary):
                leftover.unlink(missing_ok=True)
        if resume:
            print(f"{run_dir.name}: resuming from its checkpoint", file=sys.stderr, flush=True)
        hub = None if self.hub is None else HubClient(self.hub, self.index)
        with RunLock(run_dir):
            return train(cfg, run_dir, resume=resume, stop=self.stop, hub=hub)

    def request_stop(self) -> None:
        self.stop.requested = True

    def pid(self) -> int:
        return os.getpid()


# ---- creating and reading a population dir ----------------------------------------------------


def create_population(cfg: RunConfig, learners: int, share_anchors: bool) -> Path:
    """A new population dir: population.json, and one run dir with its config.json per learner."""
    pop_dir = new_run_dir(cfg)
    cfg.log.wandb_group = cfg.log.wandb_group or pop_dir.name  # the population's W&B run and its learners' runs
    seeds = SeedStreams(cfg.seed).learner_seeds(learners)
    threads = cfg.torch_threads or max(1, (os.cpu_count() or 1) // learners)
    for i, seed in enumerate(seeds):
        learner = RunConfig.from_dict(cfg.to_dict())
        learner.seed, learner.torch_threads = seed, threads
        name = RunFiles(pop_dir).learner(i).name
        learner.log.run_dir, learner.log.name, learner.log.progress = str(pop_dir), name, False
        learner.log.wandb_tags = [*cfg.log.wandb_tags, "population", name]
        create_run(learner)
    record = run_record(cfg)
    record["population"] = {"learners": learners, "share_anchors": share_anchors, "learner_seeds": seeds}
    write_json(RunFiles(pop_dir).population, record)
    return pop_dir


def read_population(pop_dir: Path) -> dict[str, Any]:
    path = RunFiles(pop_dir).population
    try:
        record = read_json(path)
        RunConfig.from_dict(record, source=str(path))
        population = record.get("population")
        learners = population.get("learners") if isinstance(population, dict) else None
        if not isinstance(learners, int) or isinstance(learners, bool) or not 1 <= learners <= 1024:
            raise UsageError("population.learners must be an integer in 1-1024")
        if not isinstance(population.get("share_anchors"), bool):
            raise UsageError("population.share_anchors must be true or false")
    except (OSError, UnicodeDecodeError, ValueError) as err:  # ValueError: bad JSON, and UsageError
        message = first_line(err)
        raise CheckpointError(message if str(path) in message else f"{path}: {message}") from None
    missing = [str(d) for d in learner_dirs(pop_dir, learners) if not RunFiles(d).config.exists()]
    if missing:
        raise CheckpointError(f"population {pop_dir} lacks its learners' run dirs: {', '.join(missing)}")
    return record


# ---- the population metrics -----------------------------------------------------------------


@dataclass
class LearnerProgress:
    """What the driver has read of one learner's metrics.jsonl."""

    path: Path
    offset: int = 0
    step: int = 0
    first_success_step: int | None = None


@dataclass
class PopulationMonitor:
    """Population metrics from the learners' metrics files (so they hold for any cluster that shares
    the run dir): the best return, the success rate of the population's last 100 episodes, and the
    first success (in the finder's own agent steps: the population had taken about N times as many)."""

    learners: list[LearnerProgress]
    best_return: float = float("-inf")
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_EPISODES))
    episodes: int = 0

    @classmethod
    def of(cls, pop_dir: Path, learners: int) -> PopulationMonitor:
        return cls([LearnerProgress(RunFiles(d).metrics) for d in learner_dirs(pop_dir, learners)])

    def poll(self) -> bool:
        """Read what the learners wrote since the last poll; whether an episode ended meanwhile."""
        before = self.episodes
        for learner in self.learners:
            for record in self._new_records(learner):
                learner.step = max(learner.step, record["global_step"])
                if "charts/success" in record:
                    self.episodes += 1
                    self.best_return = max(self.best_return, record["charts/episodic_return"])
                    self.recent.append(record["charts/success"])
                    if record["charts/success"] and learner.first_success_step is None:
                        learner.first_success_step = record["global_step"]
        return self.episodes > before

    @staticmethod
    def _new_records(learner: LearnerProgress) -> list[dict[str, Any]]:
        """Whole lines appended since the last read (a line being written is left for the next)."""
        try:
            with learner.path.open("rb") as file:
                if os.fstat(file.fileno()).st_size < learner.offset:
                    # a restarted learner cut its file back to its checkpoint: read on from there (the
                    # episodes it ran before it died stay counted: they happened)
                    learner.offset = 0
                    learner.step = 0
                file.seek(learner.offset)
                chunk = file.read()
        except FileNotFoundError:
            return []
        whole = chunk[: chunk.rfind(b"\n") + 1]
        learner.offset += len(whole)
        records = []
        for line in whole.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    @property
    def total_steps(self) -> int:
        return sum(learner.step for learner in self.learners)

    def metrics(self) -> dict[str, float]:
        firsts = [(ln.first_success_step, i) for i, ln in enumerate(self.learners) if ln.first_success_step is not None]
        metrics = {
            "population/episodes": self.episodes,
            "population/learners_succeeded": len(firsts),
        }
        if self.recent:
            metrics["population/best_return"] = self.best_return
            metrics["population/success_rate"] = sum(self.recent) / len(self.recent)
        if firsts:
            step, finder = min(firsts)
            metrics["population/first_success_step"] = step
            metrics["population/first_success_learner"] = finder
        return metrics


# ---- the driver -------------------------------------------------------------------------------


def stop_ray() -> None:
    require_ray().shutdown()


def train_population(pop_dir: Path, total_steps: int | None = None) -> dict[str, Any]:
    """Train (or resume) every unfinished learner of the population in ``pop_dir`` on the Ray
    instance this process is connected to (``start_ray``); the population's summary (also
    ``summary.json`` once every learner has finished)."""
    record = read_population(pop_dir)
    learners, share = record["population"]["learners"], record["population"]["share_anchors"]
    dirs = learner_dirs(pop_dir, learners)
    configs = [load_run_config(d) for d in dirs]
    for cfg in configs:
        if total_steps is not None:
            cfg.ppo.total_steps = total_steps
    RunFiles(pop_dir).summary.unlink(missing_ok=True)
    with RunLock(pop_dir):
        return _supervise(pop_dir, record, dirs, configs, share)


def _start_hub(record: dict[str, Any], dirs: list[Path]):
    """The hub actor, rebuilt from the learners' checkpoints when the population resumes."""
    ray = require_ray()
    hub = (
        ray.remote(num_cpus=0)(AnchorHub)
        .options(name=hub_name(record))
        .remote(AnchorConfig.from_record(record["anchor"]))
    )
    saved = [
        anchor
        for d in dirs
        if RunFiles(d).checkpoint.exists()
        for anchor in anchors_from_state(load_checkpoint(RunFiles(d).checkpoint)["anchors"])
    ]
    if saved:
        ray.get(hub.restore.remote(saved))
    return hub


def _learner_slots(learners: int):
    """A CPU for every learner, reserved at once (a placement group): populations that share a cluster
    never each hold part of what they need while waiting for the rest."""
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group([{"CPU": 1}] * learners, strategy="PACK")
    require_ray().get(group.ready())
    return PlacementGroupSchedulingStrategy(placement_group=group)


def check_cluster_fits(learners: int) -> None:
    """A population needs a CPU per learner at once; a cluster that has fewer would wait forever."""
    cpus = require_ray().cluster_resources().get("CPU", 0)
    if cpus < learners:
        raise UsageError(f"a population of {learners} learners needs {learners} CPUs; the Ray cluster has {cpus:g}")


def _supervise(
    pop_dir: Path, record: dict[str, Any], dirs: list[Path], configs: list[RunConfig], share: bool
) -> dict[str, Any]:
    ray = require_ray()
    hub = _start_hub(record, dirs) if share else None
    actor = ray.remote(num_cpus=1, max_restarts=LEARNER_RESTARTS, max_task_retries=LEARNER_RESTARTS, max_concurrency=2)(
        Learner
    )
    slots = _learner_slots(len(dirs))
    actors = [
        actor.options(scheduling_strategy=slots).remote(i, hub_name(record) if share else None)
        for i in range(len(dirs))
    ]
    ray.get([a.pid.remote() for a in actors])  # every learner up (torch imported) before any starts: a fair start
    pending = {
        actors[i].run.remote(configs[i], str(d.resolve())): i
        for i, d in enumerate(dirs)
        if not RunFiles(d).summary.exists()
    }
    summaries = {i: read_json(RunFiles(d).summary) for i, d in enumerate(dirs) if i not in pending.values()}
    failed: dict[int, str] = {}
    monitor = PopulationMonitor.of(pop_dir, len(dirs))
    RunFiles(pop_dir).metrics.unlink(missing_ok=True)  # rebuilt from the learners' files
    logger = RunLogger(pop_dir, record)
    budget = sum(cfg.ppo.num_updates * cfg.ppo.batch_size for cfg in configs)
    progress = tqdm(total=budget, unit="step", desc=f"population {pop_dir.name}", disable=not record["log"]["progress"])
    stop = StopRequest(f"population {pop_dir.name}: stopping every learner after its update, with a checkpoint", False)
    asked = False
    try:
        with stop:  # SIGTERM too (docker stop, kill): Ray's own handler would exit at once
            while pending:
                if stop.aborted:
                    for a in actors:
                        ray.kill(a, no_restart=True)
                    raise KeyboardInterrupt
                if stop.requested and not asked:
                    asked = True
                    for a in actors:
                        a.request_stop.remote()
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        summaries[i] = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        failed[i] = (str(err).strip().splitlines() or [type(err).__name__])[-1]
                        tqdm.write(f"population {pop_dir.name}: learner {i} failed: {failed[i]}", file=sys.stderr)
                if monitor.poll() or done:
                    logger.log(monitor.total_steps, monitor.metrics())
                progress.update(monitor.total_steps - progress.n)
        if monitor.poll():
            logger.log(monitor.total_steps, monitor.metrics())
    finally:
        progress.close()
        logger.close()
    return _write_summary(pop_dir, monitor, summaries, failed, hub)


def _write_summary(
    pop_dir: Path, monitor: PopulationMonitor, summaries: dict[int, dict], failed: dict[int, str], hub: Any
) -> dict[str, Any]:
    learners = len(monitor.learners)
    finished = [i for i in range(learners) if i in summaries and not summaries[i]["interrupted"]]
    metrics = monitor.metrics()
    summary = {
        "run_dir": str(pop_dir),
        "learners": learners,
        "finished": finished,
        "failed": failed,
        "interrupted": len(finished) < learners,
        "total_steps": monitor.total_steps,
        **{key.split("/", 1)[1]: value for key, value in metrics.items()},
        "learner_summaries": [summaries.get(i) for i in range(learners)],
    }
    if hub is not None:
        summary["hub"] = require_ray().get(hub.stats.remote())
    if not summary["interrupted"]:
        try:
            write_json(RunFiles(pop_dir).summary, summary)
        except OSError as err:
            raise TrainingError(f"could not write {pop_dir / 'summary.json'} ({err})") from None
    return summary
