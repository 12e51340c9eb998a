"""Errors shared across gen4d (the bottom layer: no gen4d imports)."""

from __future__ import annotations

__all__ = ["NonFiniteLossError", "RunInterrupted", "UserError"]


class UserError(Exception):
    """An error caused by the user's input: the CLI prints it without a traceback (exit code 2)."""


class NonFiniteLossError(RuntimeError):
    """The loss or the parameters became NaN or infinite; the last good checkpoint is kept."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was saved (the step ``--resume`` continues from)."""
