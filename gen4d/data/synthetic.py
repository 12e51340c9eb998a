"""A synthetic dynamic scene with known motion, rendered by gen4d itself (tests, the demo's
fallback data).

A few coloured blobs of Gaussians (inside the unit cube, like a normalised Objaverse object)
each translate along their own sinusoidal path and spin about the vertical axis. Rendered with
gen4d's reference rasteriser into the Diffusion4D split layout:

* ``orbit`` (V): T views, azimuth 360 i / T at time i / (T - 1) (view and time advance together);
* ``static_orbit`` (V-bar): the same poses at time 0;
* ``front``: the front view (azimuth 0) at every frame time;
* ``eval``: held-out views (elevation ``eval_elevation_deg``, azimuths between the orbit's) at
  frame times - view-time pairs no training image has.

All RGBA (colour not premultiplied, alpha = rendered coverage), camera distance 2, FOV 39.6 deg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gen4d.cameras import Cameras, orbit
from gen4d.data.dataset import MultiViewVideo
from gen4d.gaussians.core import Gaussians, from_points

__all__ = ["SyntheticScene", "synthetic_scene", "synthetic_dataset"]

_COLOURS = ((0.9, 0.2, 0.15), (0.15, 0.6, 0.9), (0.95, 0.8, 0.1), (0.3, 0.8, 0.3), (0.7, 0.3, 0.8), (0.95, 0.5, 0.1))


@dataclass(frozen=True)
class SyntheticScene:
    """Blobs of Gaussians with analytic motion; ``at(t)`` gives the ground truth at time t."""

    canonical: Gaussians
    """(N, ...) the scene at rest (before motion)."""
    blob: torch.Tensor
    """(N,) long blob id of each Gaussian."""
    centres: torch.Tensor
    """(K, 3) blob centres at rest."""
    amplitudes: torch.Tensor
    """(K, 3) translation amplitude vectors."""
    phases: torch.Tensor
    """(K,) phase of each blob's path (radians)."""
    spins: torch.Tensor
    """(K,) rotation about +Z over the clip (radians at t = 1)."""

    def at(self, t: float) -> Gaussians:
        """The scene at time ``t`` in [0, 1]."""
        k = self.blob
        angle = self.spins[k] * t  # (N,)
        cos, sin = torch.cos(angle), torch.sin(angle)
        local = self.canonical.means - self.centres[k]
        rotated = torch.stack(
            [cos * local[:, 0] - sin * local[:, 1], sin * local[:, 0] + cos * local[:, 1], local[:, 2]], -1
        )
        offset = self.amplitudes[k] * torch.sin(2 * math.pi * t + self.phases[k])[:, None]
        means = self.centres[k] + rotated + offset
        half = angle / 2  # rotation about z as a quaternion, composed with the rest rotation (identity here)
        quats = torch.stack([torch.cos(half), torch.zeros_like(half), torch.zeros_like(half), torch.sin(half)], -1)
        return self.canonical.with_(means=means, quats=quats)


def synthetic_scene(blobs: int = 4, per_blob: int = 40, seed: int = 0, motion: float = 1.0) -> SyntheticScene:
    """A reproducible scene of ``blobs`` x ``per_blob`` Gaussians; ``motion`` scales the movement."""
    if blobs < 1 or blobs > len(_COLOURS) or per_blob < 1:
        raise ValueError(
            f"synthetic_scene: need 1 <= blobs <= {len(_COLOURS)} and per_blob >= 1, got {blobs}, {per_blob}"
        )
    gen = torch.Generator().manual_seed(seed)
    angles = torch.arange(blobs, dtype=torch.float32) * (2 * math.pi / blobs)
    centres = torch.stack([0.32 * torch.cos(angles), 0.32 * torch.sin(angles), 0.15 * torch.sin(2 * angles)], -1)
    if blobs == 1:
        centres.zero_()
    points, colours, ids = [], [], []
    for i in range(blobs):
        # Ellipsoidal blobs of different shapes so views differ from each other.
        radii = torch.tensor([0.17, 0.12, 0.15]) * (0.8 + 0.4 * torch.rand(3, generator=gen))
        direction = torch.nn.functional.normalize(torch.randn(per_blob, 3, generator=gen), dim=-1)
        r = torch.rand(per_blob, 1, generator=gen) ** (1 / 3)
        points.append(centres[i] + direction * r * radii)
        base = torch.tensor(_COLOURS[i])
        shade = 0.75 + 0.25 * (direction[:, 2:3] + 1) / 2  # lighter on top: texture within a blob
        colours.append((base * shade).clamp(0, 1))
        ids.append(torch.full((per_blob,), i, dtype=torch.long))
    canonical = from_points(torch.cat(points), torch.cat(colours), scale=0.05, opacity=0.9)
    amplitudes = motion * 0.15 * torch.nn.functional.normalize(torch.randn(blobs, 3, generator=gen), dim=-1)
    phases = 2 * math.pi * torch.rand(blobs, generator=gen)
    spins = motion * (math.pi / 2) * (torch.rand(blobs, generator=gen) * 2 - 1)
    return SyntheticScene(canonical, torch.cat(ids), centres, amplitudes, phases, spins)


@torch.no_grad()
def _render_rgba(scene: SyntheticScene, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    from gen4d.render import RenderOptions, render

    images, alphas = [], []
    for i in range(len(cameras)):
        cam = cameras[i]
        out = render(scene.at(float(cam.times[0])), cam, options=RenderOptions(backend="torch"))
        alpha = out.alpha.clamp(0, 1)
        rgb = torch.where(alpha > 1e-4, out.rgb / alpha.clamp_min(1e-4), torch.zeros_like(out.rgb)).clamp(0, 1)
        images.append(rgb)
        alphas.append(alpha)
    return torch.cat(images), torch.cat(alphas)


def synthetic_dataset(
    size: int = 32,
    frames: int = 8,
    eval_views: int = 4,
    eval_elevation_deg: float = 20.0,
    blobs: int = 4,
    per_blob: int = 40,
    seed: int = 0,
    motion: float = 1.0,
    static_orbit: bool = True,
    front: bool = True,
) -> MultiViewVideo:
    """Render :func:`synthetic_scene` into a :class:`MultiViewVideo` (splits in the module docstring)."""
    if frames < 2:
        raise ValueError(f"synthetic_dataset: frames must be >= 2, got {frames}")
    scene = synthetic_scene(blobs, per_blob, seed, motion)
    fov = math.degrees(2 * math.atan(18.0 / 50.0))
    times = torch.arange(frames, dtype=torch.float32) / (frames - 1)
    azimuths = 360.0 * torch.arange(frames, dtype=torch.float32) / frames
    parts: dict[str, Cameras] = {"orbit": orbit(0.0, azimuths, 2.0, fov, size, size, times)}
    if static_orbit:
        parts["static_orbit"] = orbit(0.0, azimuths, 2.0, fov, size, size, 0.0)
    if front:
        parts["front"] = orbit(0.0, 0.0, 2.0, fov, size, size, times)
    if eval_views:
        gen = torch.Generator().manual_seed(seed + 1)
        eval_az = 360.0 * (torch.arange(eval_views, dtype=torch.float32) + 0.5) / eval_views + 360.0 / (2 * frames)
        eval_t = times[torch.randint(1, frames, (eval_views,), generator=gen)]
        parts["eval"] = orbit(eval_elevation_deg, eval_az, 2.0, fov, size, size, eval_t)
    splits, start = {}, 0
    for name, cams in parts.items():
        splits[name] = torch.arange(start, start + len(cams))
        start += len(cams)
    cameras = Cameras.cat(list(parts.values()))
    images, alphas = _render_rgba(scene, cameras)
    return MultiViewVideo(
        images=images, alphas=alphas, cameras=cameras, splits=splits, num_frames=frames, name=f"synthetic-{seed}"
    )
