"""A whole-object turn about the vertical axis per time, applied after the deformation field.

A deformation field starts at the identity and follows photometric gradients, which are local: an
object that turns by 90 degrees or more (a dancer's pirouette, an animal turning round) is not
found that way; the field keeps the body in its time-0 pose and smears it (measured on the
procedural ``spin`` creatures, docs/reconstruction.md). :class:`TurnTrack` carries the turn
explicitly: a yaw angle per knot time (linear in between), about a vertical axis (world +Z, gen4d's
up) through ``center``. The field then only models what is left (limbs, head) in the object's own
frame. The angles are found by search (:func:`gen4d.recon.turn_search.search_turn`), not by
gradients.

On top of the searched yaw, a track can carry a learned whole-object rigid motion per knot
(:meth:`TurnTrack.make_learnable`): a rotation (axis-angle vector) about ``center`` and a
translation, both zero at the first knot (the time the static orbit shows, which fixes the
canonical set) and linear in time between knots. Six numbers per time explain a lean, a roll or a
drift of the whole body from every pixel of that time's image, where a per-Gaussian field sees one
view and cannot tell motion along the line of sight; the field then models what is left.

An empty track (no knots, the default) is the identity and costs nothing. With colours of SH
degree > 0 the view-dependent part is not turned with the object (gen4d's presets use degree 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gen4d.deform.control_points import quaternion_multiply
from gen4d.gaussians.core import Gaussians, quaternion_to_matrix

__all__ = ["TurnTrack", "unwrap_degrees", "axis_angle_to_quaternion", "move_rigidly"]


def unwrap_degrees(angles: torch.Tensor) -> torch.Tensor:
    """Angles (K,) in degrees with each step from the previous one taken in (-180, 180]."""
    if angles.numel() < 2:
        return angles.clone()
    steps = torch.remainder(angles[1:] - angles[:-1] + 180.0, 360.0) - 180.0
    return torch.cat([angles[:1], angles[:1] + torch.cumsum(steps, 0)])


class TurnTrack(nn.Module):
    """Yaw (degrees) at knot times, interpolated linearly in time, plus an optional learned rigid
    motion per knot; empty = identity.

    Buffers (saved with the model): ``times`` (K,) increasing normalised times, ``degrees`` (K,)
    unwrapped yaw angles, ``center`` (3,) a point on the vertical turning axis. Parameters (empty
    until :meth:`make_learnable`): ``rotation`` and ``translation`` (K - 1, 3), the rigid motion at
    knots 1..K-1 (knot 0 is the identity)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("times", torch.zeros(0))
        self.register_buffer("degrees", torch.zeros(0))
        self.register_buffer("center", torch.zeros(3))
        self.rotation = _table(torch.zeros(0, 3))
        self.translation = _table(torch.zeros(0, 3))

    @property
    def active(self) -> bool:
        return self.times.numel() > 0

    @property
    def learnable(self) -> bool:
        """True when the track carries a learned rigid motion (:meth:`make_learnable`)."""
        return self.rotation.numel() > 0

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

    def make_learnable(self) -> list[nn.Parameter]:
        """Add a learned rigid motion (zero: the track is unchanged) at the stored knots; returns the
        new parameters (an optimiser must add them)."""
        if not self.active:
            raise ValueError("TurnTrack.make_learnable: set the knots first (TurnTrack.set)")
        rows = self.times.numel() - 1
        self.rotation = _table(torch.zeros(rows, 3, device=self.center.device))
        self.translation = _table(torch.zeros(rows, 3, device=self.center.device))
        return [self.rotation, self.translation]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The tensors' sizes depend on the track (K knots): take the stored tensors' shapes. Files
        # written before the learned motion existed have no rotation / translation: none is learned.
        state_dict = dict(state_dict)
        for name in ("times", "degrees", "center"):
            if name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[name], device=self.center.device))
        for name in ("rotation", "translation"):
            state_dict.setdefault(name, torch.zeros(0, 3))
            setattr(self, name, _table(torch.empty_like(state_dict[name], device=self.center.device)))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _segment(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of each time's right knot (B,) and its weight towards it (B,) (held outside the knots)."""
        knots = self.times.to(times.dtype)
        index = torch.searchsorted(knots, times.contiguous()).clamp(1, knots.numel() - 1)
        t0, t1 = knots[index - 1], knots[index]
        return index, ((times - t0) / (t1 - t0)).clamp(0.0, 1.0)

    def angles(self, times: torch.Tensor) -> torch.Tensor:
        """Yaw in degrees (B,) at ``times`` (B,) (held constant outside the knots)."""
        index, weight = self._segment(times)
        degrees = self.degrees.to(times.dtype)
        return torch.lerp(degrees[index - 1], degrees[index], weight)

    def rigid(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned rotation (axis-angle, B x 3) and translation (B x 3) at ``times`` (B,)."""
        index, weight = self._segment(times)
        table = torch.cat([self.rotation, self.translation], 1)
        table = torch.cat([torch.zeros_like(table[:1]), table])  # knot 0: the identity
        motion = torch.lerp(table[index - 1], table[index], weight[:, None])
        return motion[:, :3], motion[:, 3:]

    def forward(self, gaussians: Gaussians, times: torch.Tensor) -> Gaussians:
        """``gaussians`` (B, N, ...) at ``times`` (B,) turned by the track (unchanged when empty)."""
        if not self.active:
            return gaussians
        turned = turn(gaussians, self.angles(times), self.center)
        if not self.learnable:
            return turned
        return move_rigidly(turned, *self.rigid(times), self.center)


def _table(values: torch.Tensor) -> nn.Parameter:
    """A learned-motion table as a parameter; an empty one (no motion learned) is not trained."""
    return nn.Parameter(values, requires_grad=values.numel() > 0)


def axis_angle_to_quaternion(vectors: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle vectors (radians) -> (..., 4) unit quaternions (w, x, y, z); smooth at zero."""
    angle = (vectors.square().sum(-1, keepdim=True) + 1e-12).sqrt()  # no NaN gradient at zero
    # sin(angle / 2) / angle = 0.5 * sinc(angle / (2 pi)), finite at zero
    return torch.cat([torch.cos(angle / 2), vectors * 0.5 * torch.sinc(angle / (2 * math.pi))], -1)


def move_rigidly(
    gaussians: Gaussians, rotation: torch.Tensor, translation: torch.Tensor, center: torch.Tensor
) -> Gaussians:
    """``gaussians`` (B, N, ...) rotated by ``rotation`` (B, 3 axis-angle) about ``center`` and moved by ``translation`` (B, 3)."""
    q = axis_angle_to_quaternion(rotation)  # (B, 4)
    matrix = quaternion_to_matrix(q)  # (B, 3, 3)
    center = center.to(gaussians.means)
    means = torch.einsum("bij,bnj->bni", matrix, gaussians.means - center) + center + translation[:, None, :]
    quats = quaternion_multiply(q[:, None, :].expand_as(gaussians.quats), gaussians.quats)
    return gaussians.with_(means=means, quats=quats)


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
