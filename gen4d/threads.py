"""How many CPU threads torch uses: chosen once when the ``gen4d`` command starts.

torch's default is one thread per core. On a small machine that also runs other work (a shared
2-core box, a CI runner) its OpenMP threads then wait for each other: a short 4D construction
measured 5-17x slower with 2 threads than with 1 there. gen4d therefore uses, unless told:

- ``GEN4D_THREADS`` or ``OMP_NUM_THREADS`` when set (the user's choice, unchanged);
- otherwise 1 thread on machines with at most 2 usable cores, else ``min(usable cores // 2, 4)``
  (hyper-threads share a physical core, and beyond 4 the small kernels of the reference renderer
  gain little).

Importing this module does not import torch.
"""

from __future__ import annotations

import os
import sys

__all__ = ["default_threads", "configure_threads"]


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(environ: dict[str, str] | None = None, cores: int | None = None) -> tuple[int, str]:
    """(threads, why) for this machine and environment."""
    environ = os.environ if environ is None else environ
    for name in ("GEN4D_THREADS", "OMP_NUM_THREADS"):
        value = environ.get(name, "").strip()
        if value:
            try:
                count = int(value)
            except ValueError:
                raise ValueError(f"{name}: expected a whole number of threads > 0, got {value!r}") from None
            if count < 1:
                raise ValueError(f"{name}: expected a whole number of threads > 0, got {value!r}")
            return count, f"{name}={count}"
    cores = _usable_cores() if cores is None else cores
    if cores <= 2:
        return 1, f"{cores} usable core(s): 1 thread (set OMP_NUM_THREADS to change)"
    count = max(1, min(cores // 2, 4))
    return count, f"{cores} usable cores: {count} threads (set OMP_NUM_THREADS to change)"


def configure_threads() -> int:
    """Apply :func:`default_threads` to torch (now if it is imported, else through OMP_NUM_THREADS
    before it is); returns the thread count."""
    count, _ = default_threads()
    if "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
    else:
        os.environ["OMP_NUM_THREADS"] = str(count)
    return count
