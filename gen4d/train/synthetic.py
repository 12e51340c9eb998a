"""Toy training clips (a coloured disc that slides left and right) in gen4d's dataset format.

For tests and smoke runs of the training and sampling code only: they exercise the data path
(orbit V, static orbit V-bar, cameras, motion magnitudes from 0 upwards) without Blender. They are
not 3D renders (the disc looks the same from every orbit view). Real training data comes from
``gen4d render`` (procedural animated assets, glTF files)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["write_toy_clips"]


def write_toy_clips(
    folder: str | Path, count: int = 4, num_frames: int = 4, size: int = 16, seed: int = 0, max_shift: float = 0.3
) -> list[Path]:
    """Write ``count`` clip folders under ``folder`` (clip_000 ...); clip i moves i / (count - 1) of
    ``max_shift`` (fraction of the image width). Returns the folders."""
    from gen4d.cameras import Cameras, diffusion4d_orbit
    from gen4d.data.dataset import MultiViewVideo
    from gen4d.data.manifest import save_dataset

    folder = Path(folder)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    orbit = diffusion4d_orbit(num_frames, size=size)
    cams = Cameras.cat([orbit.with_times(torch.linspace(0, 1, num_frames)), orbit.with_times(0.0)])
    out = []
    for i in range(count):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        color = torch.rand(3, generator=gen) * 0.8 + 0.1
        shift = max_shift * (i / max(count - 1, 1))
        images, alphas = [], []
        for k in range(2 * num_frames):
            t = k / (num_frames - 1) if k < num_frames else 0.0
            cx = size / 2 + shift * size * math.sin(2 * math.pi * t)
            alpha = (((xs - cx) ** 2 + (ys - size / 2) ** 2) < (size / 4) ** 2).float()[..., None]
            images.append(color.expand(size, size, 3).clone())
            alphas.append(alpha)
        video = MultiViewVideo(
            images=torch.stack(images),
            alphas=torch.stack(alphas),
            cameras=cams,
            splits={"orbit": torch.arange(num_frames), "static_orbit": torch.arange(num_frames, 2 * num_frames)},
            num_frames=num_frames,
            name=f"clip_{i:03d}",
        )
        target = folder / f"clip_{i:03d}"
        save_dataset(video, target, meta={"asset": {"name": "toy disc", "kind": "gen4d.train.synthetic"}})
        out.append(target)
    return out
