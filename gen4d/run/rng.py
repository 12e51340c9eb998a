"""The one way gen4d derives per-step random generators from a run's seed.

Step ``s`` of a run draws from ``generator(seed, s)``, a fresh CPU generator that depends only on
(seed, step, salt): a resumed run repeats exactly the draws of an uninterrupted one without
restoring any generator state.
"""

from __future__ import annotations

import torch

__all__ = ["derived_seed", "generator"]

_STEP_STRIDE = 1_000_003
_SALT_STRIDE = 1 << 40


def derived_seed(seed: int, step: int, salt: int = 0) -> int:
    """``seed * 1_000_003 + step`` (+ ``salt * 2**40`` for independent streams of the same step)."""
    return seed * _STEP_STRIDE + step + salt * _SALT_STRIDE


def generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator seeded with :func:`derived_seed`."""
    return torch.Generator().manual_seed(derived_seed(seed, step, salt))
