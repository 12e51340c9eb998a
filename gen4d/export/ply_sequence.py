"""Per-frame PLY sequences: the deformed Gaussians at each frame time in the standard 3DGS
layout (``frame_0000.ply``, ...), which common 3DGS viewers and ``gen4d view`` open."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gen4d.gaussians.core import Gaussians
from gen4d.gaussians.ply import save_ply

__all__ = ["frame_times", "write_ply_sequence"]


def frame_times(num_frames: int) -> torch.Tensor:
    """(F,) times i / (F - 1) of F frames spanning [0, 1] (a single frame sits at 0)."""
    if num_frames <= 0:
        raise ValueError(f"frame_times: num_frames must be > 0, got {num_frames}")
    if num_frames == 1:
        return torch.zeros(1)
    return torch.arange(num_frames, dtype=torch.float32) / (num_frames - 1)


@torch.no_grad()
def write_ply_sequence(
    gaussians_at: Callable[[torch.Tensor], Gaussians],
    times: Sequence[float] | torch.Tensor,
    folder: str | os.PathLike,
    batch: int = 8,
    progress: bool = False,
) -> list[Path]:
    """Write ``frame_XXXX.ply`` for each time, where ``gaussians_at(times (B,)) -> Gaussians (B, N)``
    (e.g. ``DynamicGaussians.at``). Each file is written atomically; returns the paths."""
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    chunks = range(0, times.numel(), batch)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="ply", leave=False)
    for start in chunks:
        chunk = times[start : start + batch]
        sets = gaussians_at(chunk)
        for offset in range(chunk.numel()):
            path = folder / f"frame_{start + offset:04d}.ply"
            save_ply(sets.map(lambda x, offset=offset: x[offset]), path)
            paths.append(path)
    return paths
