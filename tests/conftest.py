"""Shared pytest fixtures for gen4d (kept minimal: several test modules read it).

``shared_dir``: the project's shared folder of real data and assets (``../shared`` next to the
repository, or ``$GEN4D_SHARED``). Tests that need it call ``shared_path("data", ...)`` and are
skipped with a clear reason when the folder or file is absent; nothing from it is copied into
the repository.

Threads: under pytest-xdist (``make test`` runs ``-n 2``) each worker gets an equal share of the
cores for torch's intra-op threads. Oversubscribed OpenMP threads wait for each other on every
parallel op (about a scheduler time slice each), which made a 64x64 render 50x slower.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _share_cores_between_xdist_workers() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 0:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_cores_between_xdist_workers()


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny-model tests (faster than two on small ops, and
    leaves the other core to the other xdist worker). Use with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shared_root() -> Path:
    env = os.environ.get("GEN4D_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data folder; skips the test when it does not exist."""
    root = _shared_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} not found (set GEN4D_SHARED to its location)")
    return root


@pytest.fixture(scope="session")
def shared_path(shared_dir: Path):
    """``shared_path(*parts)`` -> an existing path under the shared folder, or skip the test."""

    def resolve(*parts: str) -> Path:
        path = shared_dir.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} not found in the shared data folder")
        return path

    return resolve
