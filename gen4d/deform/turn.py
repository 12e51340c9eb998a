"""A whole-object turn about the vertical axis per time, applied after the deformation field.

A deformation field starts at the identity and follows photometric gradients, which are local: an
object that turns by 90 degrees or more (a dancer's pirouette, an animal turning round) is not
found that way; the field keeps the body in its time-0 pose and smears it (measured on the
procedural ``spin`` creatures, docs/reconstruction.md). :class:`TurnTrack` carries the turn
explicitly: a yaw angle per knot time (linear in between), about a vertical axis (world +Z, gen4d's
up) through ``center``. The field then only models what is left (limbs, head) in the object's own
frame. The angles are found by search (:func:`gen4d.recon.turn_search.search_turn`), not by
gradients.

An empty track (no knots, the default) is the identity and costs nothing. With colours of SH
degree > 0 the view-dependent part is not turned with the object (gen4d's presets use degree 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gen4d.deform.control_points import quaternion_multiply
from gen4d.gaussians.core import Gaussians

__all__ = ["TurnTrack", "unwrap_degrees"]


def unwrap_degrees(angles: torch.Tensor) -> torch.Tensor:
    """Angles (K,) in degrees with each step from the previous one taken in (-180, 180]."""
    if angles.numel() < 2:
        return angles.clone()
    steps = torch.remainder(angles[1:] - angles[:-1] + 180.0, 360.0) - 180.0
    return torch.cat([angles[:1], angles[:1] + torch.cumsum(steps, 0)])


class TurnTrack(nn.Module):
    """Yaw (degrees) at knot times, interpolated linearly in time; empty = identity.

    Buffers (saved with the model): ``times`` (K,) increasing normalised times, ``degrees`` (K,)
    unwrapped yaw angles, ``center`` (3,) a point on the vertical turning axis."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("times", torch.zeros(0))
        self.register_buffer("degrees", torch.zeros(0))
        self.register_buffer("center", torch.zeros(3))

    @property
    def active(self) -> bool:
        return self.times.numel() > 0

    def set(self, times: torch.Tensor, degrees: torch.Tensor, center: torch.Tensor) -> None:
        """Store a track: ``times`` (K >= 2,) strictly increasing, ``degrees`` (K,), ``center`` (3,)."""
        times, degrees, center = (torch.as_tensor(x, dtype=torch.float32).detach() for x in (times, degrees, center))
        if times.ndim != 1 or times.numel() < 2 or degrees.shape != times.shape or center.shape != (3,):
            raise ValueError(
                f"TurnTrack.set: expected times (K >= 2,), degrees (K,), center (3,); got {tuple(times.shape)}, "
                f"{tuple(degrees.shape)}, {tuple(center.shape)}"
            )
        if not bool((times[1:] > times[:-1]).all()):
            raise ValueError(f"TurnTrack.set: times must increase strictly, got {times.tolist()}")
        device = self.center.device
        self.times, self.degrees, self.center = times.to(device), degrees.to(device), center.to(device)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The buffers' sizes depend on the track (K knots): take the stored tensors' shapes.
        for name in ("times", "degrees", "center"):
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name], device=self.center.device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def angles(self, times: torch.Tensor) -> torch.Tensor:
        """Yaw in degrees (B,) at ``times`` (B,) (held constant outside the knots)."""
        knots = self.times.to(times.dtype)
        index = torch.searchsorted(knots, times.contiguous()).clamp(1, knots.numel() - 1)
        t0, t1 = knots[index - 1], knots[index]
        weight = ((times - t0) / (t1 - t0)).clamp(0.0, 1.0)
        degrees = self.degrees.to(times.dtype)
        return torch.lerp(degrees[index - 1], degrees[index], weight)

    def forward(self, gaussians: Gaussians, times: torch.Tensor) -> Gaussians:
        """``gaussians`` (B, N, ...) at ``times`` (B,) turned by the track (unchanged when empty)."""
        if not self.active:
            return gaussians
        return turn(gaussians, self.angles(times), self.center)


def turn(gaussians: Gaussians, degrees: torch.Tensor, center: torch.Tensor) -> Gaussians:
    """``gaussians`` (B, N, ...) turned by ``degrees`` (B,) about the vertical axis through ``center``."""
    half = degrees * (math.pi / 360.0)
    cos, sin = torch.cos(2 * half)[:, None], torch.sin(2 * half)[:, None]
    center = center.to(gaussians.means)
    rel = gaussians.means - center
    x, y, z = rel.unbind(-1)
    means = torch.stack([cos * x - sin * y, sin * x + cos * y, z], -1) + center
    zeros = torch.zeros_like(half)
    q = torch.stack([torch.cos(half), zeros, zeros, torch.sin(half)], -1)[:, None, :]
    quats = quaternion_multiply(q.expand_as(gaussians.quats), gaussians.quats)
    return gaussians.with_(means=means, quats=quats)
