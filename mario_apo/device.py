"""Where the learner runs (``--device auto|cpu|cuda|cuda:N``), checked before anything is written.

The model, its optimizer, the rollout storage, GAE and APO's anchor minibatches live on
the device; env workers stay CPU processes. Actions are drawn on the CPU from the
device's probabilities by torch's CPU generator (``models.actor_critic.act``), so a run
draws the same random stream on any device and its checkpoint (saved on the CPU)
resumes, evaluates and replays anywhere. The observation normaliser (vector tasks only)
keeps its float64 statistics on the host, where the env's observations arrive: standardising
there costs microseconds and keeps its numbers identical on every device.
"""

from __future__ import annotations

import os
import platform
import re
from typing import TYPE_CHECKING

from mario_apo.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_FORMS = "auto (CUDA when torch sees a GPU), cpu, cuda or cuda:N"


def check_device_spec(spec: str) -> None:
    """``spec`` is one of the device forms (whether this machine has that device is ``resolve_device``'s
    question: a suite written for GPUs still loads, reports and packs on a CPU machine)."""
    if spec not in ("auto", "cpu") and re.fullmatch(r"cuda(:\d+)?", spec) is None:
        raise UsageError(f"--device {spec!r} names no device: valid are {DEVICE_FORMS}")


def resolve_device(spec: str) -> torch.device:
    """The torch device ``spec`` names on this machine; a GPU that torch does not see is a usage error."""
    import torch  # here, not at the top: the command line checks a spec's form without torch's start-up

    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"--device {spec}: torch {torch.__version__} ({build}) sees no CUDA GPU here; use --device cpu or auto"
        )
    index, count = int(spec.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        raise UsageError(f"--device {spec}: torch sees {count} GPU(s) here, cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


def device_record(device: torch.device) -> dict[str, str | int]:
    """What config.json and benchmark records say about where a run ran."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "cpu_cores": os.cpu_count() or 1}
