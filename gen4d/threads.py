"""How many CPU threads torch uses: chosen once when the ``gen4d`` command starts.

torch's default is one thread per core. On a small machine that also runs other work (a shared
2-core box, a CI runner) its OpenMP threads then wait for each other: a short 4D construction
measured 5-17x slower with 2 threads than with 1 there. gen4d therefore uses, unless told:

- ``GEN4D_THREADS`` or ``OMP_NUM_THREADS`` when set (the user's choice, unchanged);
- otherwise the cores that are free: at most the usable cores on machines with 2 or fewer, else
  ``min(usable cores // 2, 4)`` (hyper-threads share a physical core, and beyond 4 the small
  kernels of the reference renderer gain little), less the 1-minute load average, and at least 1.
  On the idle 2-core development machine the demo took 40 s with 2 threads and 51 s with 1; with
  another job running, 1 thread is the right choice.

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


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(
    environ: dict[str, str] | None = None, cores: int | None = None, load: float | None = None
) -> tuple[int, str]:
    """(threads, why) for this machine, its current load and the environment."""
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
    load = _load() if load is None else load
    cap = cores if cores <= 2 else min(cores // 2, 4)
    count = max(1, min(cap, int(cores - load + 0.5)))
    return count, f"{cores} usable core(s), load {load:.1f}: {count} thread(s) (set OMP_NUM_THREADS to change)"


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
