"""mario-apo: PPO and Anchored Policy Optimization (APO) on Super Mario Bros."""

import os

import gymnasium

# OpenMP threads that busy-wait after each torch op steal the cores the emulator
# workers need between the learner's forward passes (measured: 225 -> 255 SPS on
# Mario, 2 cores). Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# CartPole/MountainCar videos render off-screen through pygame; without a display
# SDL's default video driver only prints an XDG_RUNTIME_DIR error.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

__version__ = "0.3.0"

# `gymnasium.make("mario_apo/SuperMario-v0", level="1-1", ...)`, `gymnasium.make("mario_apo/MiniGrid-v0",
# name="DoorKey-8x8")`; the module loads only when an env is made.
gymnasium.register(id="mario_apo/SuperMario-v0", entry_point="mario_apo.gym_envs:make_super_mario")
gymnasium.register(id="mario_apo/MiniGrid-v0", entry_point="mario_apo.gym_envs:make_minigrid_task")
