"""Shared helpers: real emulator, real envs, no mocks."""

from __future__ import annotations

import pytest

from mario_apo.tasks import EnvConfig, parse_task

# In SIMPLE_MOVEMENT: 1 = right, 2 = right + A (jump).
RIGHT, RIGHT_JUMP = 1, 2


def hold_right_and_jump(step: int) -> int:
    """A scripted run: hold right, jump for 5 steps in every 10 (A must be released to jump again).

    On 1-1 this clears the first goombas and pipes and reaches x~1220.
    """
    return RIGHT_JUMP if step % 10 < 5 else RIGHT


@pytest.fixture
def env_cfg() -> EnvConfig:
    return EnvConfig()


@pytest.fixture
def mario_1_1():
    return parse_task("mario:1-1")
