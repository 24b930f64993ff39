"""Every random stream of a run, derived from one ``numpy.random.SeedSequence(run seed)``.

A run's torch, numpy and Python generators, its APO anchor sampler, each env's
seed (which seeds its sticky-action stream), and each evaluation's seed are
children of ``SeedSequence(seed)`` with their own spawn key. Streams of different
run seeds are independent (seeding env ``i`` with ``seed + i`` made runs ``s`` and
``s + 1`` share all but one env stream), and a resumed run's envs get fresh seeds
(keyed by the update it resumes at) instead of replaying their first episodes.
"""

from __future__ import annotations

import numpy as np

_TORCH, _NUMPY, _PYTHON, _ANCHORS, _ENVS, _EVAL, _FINAL_EVAL, _LEARNERS = range(8)


class SeedStreams:
    """The seeds of one run's random streams."""

    def __init__(self, seed: int):
        self.seed = seed

    def _child(self, *key: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=key)

    def _integer(self, *key: int) -> int:
        """A seed in [0, 2**32): what numpy's legacy seeding, torch and every env accept."""
        return int(self._child(*key).generate_state(1, np.uint32)[0])

    @property
    def torch(self) -> int:
        return self._integer(_TORCH)

    @property
    def numpy(self) -> int:
        return self._integer(_NUMPY)

    @property
    def python(self) -> int:
        return self._integer(_PYTHON)

    def anchors(self) -> np.random.Generator:
        """The APO anchor sampler's own generator (torch's stays untouched, so beta = 0 is PPO)."""
        return np.random.default_rng(self._child(_ANCHORS))

    def env_seeds(self, num_envs: int, start_update: int = 0) -> list[int]:
        """One seed per env, for a run (re)started at ``start_update``."""
        return [self._integer(_ENVS, start_update, env) for env in range(num_envs)]

    def eval_seed(self, update: int) -> int:
        return self._integer(_EVAL, update)

    def final_eval_seeds(self, count: int) -> list[int]:
        """Seeds of the final-policy evaluation (its envs, then its action sampler): episodes no
        training or periodic evaluation stream plays."""
        return [self._integer(_FINAL_EVAL, k) for k in range(count)]

    def learner_seeds(self, learners: int) -> list[int]:
        """The run seeds of a population's learners (``--learners``): distinct from each other and
        from every single run's streams."""
        return [self._integer(_LEARNERS, k) for k in range(learners)]
