"""Cheap shape / value checks used at gen4d's public boundaries.

Every check raises ``ValueError`` naming the argument and what was expected, so a user
sees ``cameras.fx: expected shape (C,), got (3, 1)`` rather than a broadcasting error deep
inside the rasteriser.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | str | None]) -> None:
    """Check ``tensor.shape`` against ``expected``.

    ``expected`` holds ints (exact size), strings (symbolic sizes that must agree with
    each other within the call, e.g. ``("N", 3)``) or ``None`` (any size).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(tensor).__name__}")
    pretty = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
    if tensor.ndim != len(expected):
        raise ValueError(f"{name}: expected shape {pretty}, got {tuple(tensor.shape)}")
    symbols: dict[str, int] = {}
    for size, want in zip(tensor.shape, expected):
        if want is None:
            continue
        if isinstance(want, str):
            if want in symbols and symbols[want] != size:
                raise ValueError(f"{name}: expected shape {pretty}, got {tuple(tensor.shape)}")
            symbols[want] = size
        elif size != want:
            raise ValueError(f"{name}: expected shape {pretty}, got {tuple(tensor.shape)}")


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` holds NaN or Inf."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name}: {bad} non-finite value(s) (NaN or Inf); expected finite values")
