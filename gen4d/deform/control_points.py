"""Sparse control points with K-nearest blending (the SC-GS design) and an ARAP regulariser.

M control points (canonical positions ``p_k`` and learned RBF radii ``sigma_k``) each get a
time-dependent rigid motion ``(R_k(t), T_k(t))`` from a small MLP on positional encodings of
``p_k`` and ``t``. A Gaussian at canonical position ``x`` follows its K nearest control points
(canonical distance) with weights ``w_k ~ exp(-|x - p_k|^2 / (2 sigma_k^2))`` normalised over
the K:

* position: ``x' = sum_k w_k (R_k (x - p_k) + p_k + T_k)`` (linear blend skinning);
* rotation: ``q' = normalize(sum_k w_k q_k) * q`` (blended quaternion composed with the
  Gaussian's own);
* log-scale (optional): ``s' = s + sum_k w_k ds_k``.

ARAP (as-rigid-as-possible) regulariser on the control points at the step's times:
``mean_{k, j in N(k)} |(p'_k - p'_j) - R_k (p_k - p_j)|^2`` with ``N(k)`` the ``arap_neighbours``
nearest control points in canonical space: neighbouring control points should move rigidly
together.

Per-Gaussian state: the indices of each Gaussian's K nearest control points (N, K) are cached
and refreshed by :meth:`ControlPointField.before_step` at every ``knn_every``-th training step
(``forward`` only reads the cache); densification resizes the cache in lockstep (new Gaussians
inherit their parent's neighbours until the next refresh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gen4d.config import ConfigError, check_non_negative, check_positive
from gen4d.deform.base import DeformationField, check_times
from gen4d.gaussians.core import Gaussians, quaternion_to_matrix

__all__ = ["ControlPointConfig", "ControlPointField", "arap_energy", "farthest_point_sampling", "quaternion_multiply"]


@dataclass(frozen=True)
class ControlPointConfig:
    """Sizes of the control-point field (SC-GS uses 512-1024 points, K = 3)."""

    type_name: ClassVar[str] = "control_points"
    num_points: int = 512
    """Number of control points M."""
    neighbours: int = 3
    """K: control points blended per Gaussian."""
    arap_neighbours: int = 6
    """Control-point neighbours used by the ARAP regulariser."""
    width: int = 128
    """Hidden width of the motion MLP."""
    depth: int = 4
    """Hidden layers of the motion MLP."""
    position_frequencies: int = 8
    """Positional-encoding octaves for control-point positions."""
    time_frequencies: int = 6
    """Positional-encoding octaves for time."""
    deform_scale: bool = False
    """Also blend per-control-point log-scale offsets."""
    knn_every: int = 10
    """Refresh the cached Gaussian -> control point neighbours every this many training steps."""
    learn_positions: bool = True
    """Optimise the control-point positions (otherwise they stay where prepare() put them)."""

    def __post_init__(self) -> None:
        check_positive(self, "num_points", "neighbours", "arap_neighbours", "width", "knn_every")
        check_non_negative(self, "depth", "position_frequencies", "time_frequencies")
        if self.neighbours > self.num_points:
            raise ConfigError(
                "neighbours",
                f"expected at most num_points = {self.num_points}, got {self.neighbours}",
                "ControlPointConfig",
            )


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) quaternions (w, x, y, z)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def farthest_point_sampling(points: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Indices (count,) of ``count`` points of (N, 3) chosen greedily far apart (starting at a
    seeded random point). With fewer than ``count`` points, indices repeat."""
    total = points.shape[0]
    if total == 0:
        raise ValueError("farthest_point_sampling: no points")
    gen = torch.Generator().manual_seed(seed)
    if total <= count:
        extra = torch.randint(0, total, (count - total,), generator=gen)
        return torch.cat([torch.arange(total), extra]).to(points.device)
    chosen = torch.empty(count, dtype=torch.long, device=points.device)
    chosen[0] = int(torch.randint(0, total, (1,), generator=gen))
    distance = torch.full((total,), float("inf"), device=points.device, dtype=points.dtype)
    for i in range(1, count):
        distance = torch.minimum(distance, (points - points[chosen[i - 1]]).square().sum(-1))
        chosen[i] = torch.argmax(distance)
    return chosen


def arap_energy(rest: torch.Tensor, moved: torch.Tensor, rot: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """As-rigid-as-possible energy of M points: ``mean |(p'_k - p'_j) - R_k (p_k - p_j)|^2`` over the
    times and each point's neighbours; ``rest`` (M, 3), ``moved`` (B, M, 3), ``rot`` (B, M, 3, 3),
    ``neighbours`` (M, A) indices."""
    offsets = rest[:, None, :] - rest[neighbours]  # (M, A, 3)
    now = moved[:, :, None, :] - moved[:, neighbours]  # (B, M, A, 3)
    expected = torch.einsum("bmij,maj->bmai", rot, offsets)
    return (now - expected).square().sum(-1).mean()


def _encode(x: torch.Tensor, octaves: int) -> torch.Tensor:
    freqs = (2.0 ** torch.arange(octaves, device=x.device, dtype=x.dtype)) * math.pi
    angles = x[..., None] * freqs  # (..., D, L)
    return torch.cat([x, torch.sin(angles).flatten(-2), torch.cos(angles).flatten(-2)], -1)


def _knn(query: torch.Tensor, points: torch.Tensor, k: int, chunk: int = 8192) -> torch.Tensor:
    out = []
    for start in range(0, query.shape[0], chunk):
        dist = torch.cdist(query[start : start + chunk], points)
        out.append(dist.topk(k, largest=False).indices)
    return torch.cat(out)


class ControlPointField(DeformationField):
    """SC-GS style field: ``forward(canonical (N), times (B,)) -> Gaussians (B, N)``."""

    kind = "control_points"

    def __init__(self, config: ControlPointConfig = ControlPointConfig()):
        super().__init__()
        if config.num_points < 2 or config.neighbours < 1 or config.neighbours > config.num_points:
            raise ValueError(
                f"ControlPointConfig: need num_points >= 2 and 1 <= neighbours <= num_points, got {config.num_points}, {config.neighbours}"
            )
        self.config = config
        self.positions = nn.Parameter(torch.zeros(config.num_points, 3), requires_grad=config.learn_positions)
        self.log_radius = nn.Parameter(torch.full((config.num_points,), math.log(0.05)))
        in_dim = 3 * (1 + 2 * config.position_frequencies) + (1 + 2 * config.time_frequencies)
        layers: list[nn.Module] = []
        for i in range(config.depth):
            layers += [nn.Linear(in_dim if i == 0 else config.width, config.width), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)
        self.out_size = 7 + (3 if config.deform_scale else 0)
        self.head = nn.Linear(config.width, self.out_size)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("knn_index", torch.zeros(0, config.neighbours, dtype=torch.long), persistent=True)
        self.register_buffer("arap_index", self._arap_neighbours(), persistent=True)
        # The identity quaternion the motion head's output is added to (a buffer: it moves with the
        # field, so forward copies nothing from the host).
        self.register_buffer("identity", torch.tensor([1.0, 0.0, 0.0, 0.0]), persistent=False)

    # -- set-up -------------------------------------------------------------------------------
    def _arap_neighbours(self) -> torch.Tensor:
        k = min(self.config.arap_neighbours + 1, self.config.num_points)
        return _knn(self.positions.detach(), self.positions.detach(), k)[:, 1:]

    @torch.no_grad()
    def prepare(self, canonical: Gaussians) -> None:
        """Place the control points on the canonical Gaussians by farthest point sampling and set
        each radius to the mean distance to its nearest control points."""
        means = canonical.means.detach()
        index = farthest_point_sampling(means, self.config.num_points)
        points = means[index] + 1e-4 * torch.randn_like(means[index])
        self.positions.data.copy_(points)
        k = min(self.config.neighbours + 1, self.config.num_points)
        nearest = torch.cdist(points, points).topk(k, largest=False).values[:, 1:].mean(-1)
        self.log_radius.data.copy_(torch.log(nearest.clamp_min(1e-4)))
        self.arap_index = self._arap_neighbours()
        self.knn_index = _knn(means, points, self.config.neighbours)

    def per_gaussian_state(self) -> dict[str, torch.Tensor]:
        return {"knn_index": self.knn_index}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Fields saved before the refresh moved to before_step counted forward calls: not needed.
        state_dict.pop(prefix + "calls", None)
        # The neighbour cache has one row per Gaussian: take the stored size (N varies).
        key = prefix + "knn_index"
        if key in state_dict:
            self.knn_index = torch.empty_like(state_dict[key], device=self.knn_index.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_per_gaussian_state(self, state: dict[str, torch.Tensor]) -> None:
        unknown = set(state) - {"knn_index"}
        if unknown:
            raise ValueError(f"ControlPointField: unknown per-Gaussian state {sorted(unknown)}")
        if "knn_index" in state:
            self.knn_index = state["knn_index"]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"mlp": list(self.mlp.parameters()) + list(self.head.parameters()), "control": [self.log_radius]}
        if self.config.learn_positions:
            groups["control"].append(self.positions)
        return groups

    # -- motion -------------------------------------------------------------------------------
    def motions(self, times: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per control point and time: ``quats`` (B, M, 4) unit, ``translations`` (B, M, 3),
        ``log_scales`` (B, M, 3) when enabled."""
        check_times(times)
        batch, count = times.shape[0], self.config.num_points
        pos = _encode(self.positions, self.config.position_frequencies)  # (M, P)
        tim = _encode(times[:, None], self.config.time_frequencies)  # (B, T)
        x = torch.cat([pos[None].expand(batch, -1, -1), tim[:, None].expand(-1, count, -1)], -1)
        out = self.head(self.mlp(x))  # (B, M, out)
        result = {"quats": F.normalize(self.identity + out[..., :4], dim=-1), "translations": out[..., 4:7]}
        if self.config.deform_scale:
            result["log_scales"] = out[..., 7:10]
        return result

    @torch.no_grad()
    def before_step(self, means: torch.Tensor, step: int) -> None:
        """Refresh the neighbour cache at every ``knn_every``-th step (and when its size is stale)."""
        if self.knn_index.shape[0] != means.shape[0] or step % self.config.knn_every == 0:
            self.knn_index = _knn(means.detach(), self.positions.detach(), self.config.neighbours)

    def _neighbours(self, means: torch.Tensor) -> torch.Tensor:
        if self.knn_index.shape[0] == means.shape[0]:
            return self.knn_index
        # A set the cache was not made for (no training step ran on it): neighbours of its own.
        with torch.no_grad():
            return _knn(means.detach(), self.positions.detach(), self.config.neighbours)

    def forward(self, canonical: Gaussians, times: torch.Tensor) -> Gaussians:
        if canonical.batched:
            raise ValueError("ControlPointField: expected an unbatched canonical set (N, ...)")
        means = canonical.means
        index = self._neighbours(means)  # (N, K)
        anchors = self.positions[index]  # (N, K, 3)
        radius = torch.exp(self.log_radius)[index]  # (N, K)
        weights = torch.softmax(-(means[:, None, :] - anchors).square().sum(-1) / (2 * radius.square()), -1)  # (N, K)
        motion = self.motions(times)
        rot = quaternion_to_matrix(motion["quats"])[:, index]  # (B, N, K, 3, 3)
        offset = (means[:, None, :] - anchors)[None]  # (1, N, K, 3)
        moved = torch.einsum("bnkij,bnkj->bnki", rot, offset.expand(rot.shape[0], -1, -1, -1))
        moved = moved + anchors[None] + motion["translations"][:, index]  # (B, N, K, 3)
        new_means = (weights[None, ..., None] * moved).sum(-2)
        blended = F.normalize((weights[None, ..., None] * motion["quats"][:, index]).sum(-2), dim=-1)  # (B, N, 4)
        quats = quaternion_multiply(blended, F.normalize(canonical.quats, dim=-1)[None])
        batch = times.shape[0]
        expand = lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape))  # noqa: E731
        log_scales = expand(canonical.log_scales)
        if "log_scales" in motion:
            log_scales = log_scales + (weights[None, ..., None] * motion["log_scales"][:, index]).sum(-2)
        return Gaussians(
            means=new_means,
            log_scales=log_scales,
            quats=quats,
            opacity_logits=expand(canonical.opacity_logits),
            sh=expand(canonical.sh),
        )

    def arap(self, times: torch.Tensor) -> torch.Tensor:
        motion = self.motions(times)
        rot = quaternion_to_matrix(motion["quats"])  # (B, M, 3, 3)
        moved = self.positions[None] + motion["translations"]  # (B, M, 3)  (rotation about itself)
        return arap_energy(self.positions, moved, rot, self.arap_index)

    def regularization(self, canonical: Gaussians, times: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"arap": self.arap(times)}
