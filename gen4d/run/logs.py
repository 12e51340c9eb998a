"""Run logging through Python ``logging``: the ``gen4d`` logger, a file handler to ``RUN/log.txt``
and a console handler that writes through tqdm (so an open progress bar is not broken).

Records logged with ``extra=FILE_ONLY`` (the per-log-step loss lines) go to the file only.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["FILE_ONLY", "LOGGER", "run_logging"]

LOGGER = logging.getLogger("gen4d")
FILE_ONLY = {"console": False}


class _Console(logging.Handler):
    def __init__(self, echo: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "console", True):
            return
        message = self.format(record)
        if self.echo is print:
            from tqdm import tqdm

            tqdm.write(message)
        else:
            self.echo(message)


@contextlib.contextmanager
def run_logging(log_file: str | os.PathLike, echo: Callable[[str], None] | None = print) -> Iterator[logging.Logger]:
    """Attach a ``log.txt`` file handler (and a console handler unless ``echo`` is None) to the
    ``gen4d`` logger for the duration of a run."""
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    handlers[0].setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    if echo is not None:
        handlers.append(_Console(echo))
    previous = LOGGER.level
    LOGGER.setLevel(logging.INFO)
    for handler in handlers:
        LOGGER.addHandler(handler)
    try:
        yield LOGGER
    finally:
        for handler in handlers:
            LOGGER.removeHandler(handler)
            handler.close()
        LOGGER.setLevel(previous)
