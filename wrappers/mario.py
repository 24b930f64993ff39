"""A gymnasium-native Super Mario Bros environment on top of nes-py.

nes-py 8.2.1 speaks the old gym 4-tuple API, and its ``JoypadSpace.reset``
rejects ``seed=``, so shimmy's v26 adapter cannot wrap it. This module owns the
translation: one NES frame per ``step``, a discrete action set mapped to
controller bytes, and the episode rules of the project (the episode ends at the
first life lost or at the flag; step limits are added by ``TimeLimit`` above).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import re
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

# gym 0.26 (pulled in by nes-py) prints an "unmaintained" notice on import; we
# use it only through nes-py's emulator, never its API, so keep stderr clean.
with contextlib.redirect_stderr(io.StringIO()):
    from gym_super_mario_bros.actions import COMPLEX_MOVEMENT, RIGHT_ONLY, SIMPLE_MOVEMENT
    from gym_super_mario_bros.smb_env import SuperMarioBrosEnv
    from nes_py.nes_env import _LIB, SCREEN_SHAPE_32_BIT, SCREEN_TENSOR

ACTION_SETS: dict[str, list[list[str]]] = {
    "right": RIGHT_ONLY,
    "simple": SIMPLE_MOVEMENT,
    "complex": COMPLEX_MOVEMENT,
}

# NES controller bit for each button name (the standard joypad layout).
_BUTTON_BITS = {
    "right": 0b10000000,
    "left": 0b01000000,
    "down": 0b00100000,
    "up": 0b00010000,
    "start": 0b00001000,
    "select": 0b00000100,
    "B": 0b00000010,
    "A": 0b00000001,
    "NOOP": 0,
}

LEVELS = [f"{world}-{stage}" for world in range(1, 9) for stage in range(1, 5)]
_LEVEL_RE = re.compile(r"^([1-8])-([1-4])$")


def parse_level(level: str) -> tuple[int, int]:
    """``"4-2"`` -> ``(4, 2)``; raises ``ValueError`` naming the valid levels."""
    match = _LEVEL_RE.match(level)
    if match is None:
        raise ValueError(f"unknown level {level!r}: valid levels are W-S with W in 1-8 and S in 1-4 (e.g. 1-1, 4-2)")
    return int(match.group(1)), int(match.group(2))


def action_bytes(action_set: str) -> list[int]:
    """The controller byte for each discrete action of an action set."""
    if action_set not in ACTION_SETS:
        raise ValueError(f"unknown action set {action_set!r}: valid sets are {', '.join(ACTION_SETS)}")
    return [sum(_BUTTON_BITS[button] for button in buttons) for buttons in ACTION_SETS[action_set]]


class MarioEnv(gym.Env):
    """One Super Mario Bros level, one NES frame per step.

    Observation: the ``(240, 256, 3)`` uint8 RGB screen, or with
    ``obs_type="gray"`` the ``(240, 256)`` uint8 luminance; always a fresh
    array (nes-py reuses one screen buffer). Reward: the game's shaped per-frame reward (x progress, clock,
    death), in [-15, 15]. ``terminated`` is True at the first life lost or at
    the flag. ``info`` carries ``x_pos``, ``flag_get``, ``life``, ``time``,
    ``world``, ``stage`` and ``level``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}

    def __init__(
        self, level: str = "1-1", action_set: str = "simple", obs_type: str = "rgb", render_mode: str | None = None
    ):
        if obs_type not in ("rgb", "gray"):
            raise ValueError(f"unknown obs_type {obs_type!r}: valid types are rgb, gray")
        self.level = level
        self.world, self.stage = parse_level(level)
        self.action_set = action_set
        self._action_bytes = action_bytes(action_set)
        self.render_mode = render_mode
        self._conversion = cv2.COLOR_BGRA2RGB if obs_type == "rgb" else cv2.COLOR_BGRA2GRAY
        shape = (240, 256, 3) if obs_type == "rgb" else (240, 256)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(len(self._action_bytes))
        self._nes = SuperMarioBrosEnv(rom_mode="vanilla", target=(self.world, self.stage))
        # nes-py exposes the screen as a strided RGB view whose copy costs as
        # much as a quarter of an emulated frame; OpenCV converts the emulator's
        # own BGRx buffer to a fresh RGB or gray array ~30x faster.
        buffer = ctypes.cast(_LIB.Screen(self._nes._env), ctypes.POINTER(SCREEN_TENSOR)).contents
        self._bgrx = np.frombuffer(buffer, dtype=np.uint8).reshape(SCREEN_SHAPE_32_BIT)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # The NES itself is deterministic: every reset restores the same
        # snapshot taken after the start screen, so the seed only feeds np_random.
        self._nes.reset()
        return self._screen(), self._info(self._nes._get_info())

    def step(self, action):
        _, reward, done, info = self._nes.step(self._action_bytes[int(action)])
        return self._screen(), float(reward), bool(done), False, self._info(info)

    def _screen(self) -> np.ndarray:
        return cv2.cvtColor(self._bgrx, self._conversion)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        info["x_pos"] = int(info["x_pos"])
        info["level"] = self.level
        return info

    def render(self):
        return cv2.cvtColor(self._bgrx, cv2.COLOR_BGRA2RGB)

    def close(self):
        self._nes.close()
