"""A few rigid motions shared by all Gaussians (motion bases, after Shape of Motion), blended by
distance to each basis' centre.

B bases each carry a rigid motion per time knot: a rotation (unit quaternion) and a translation at
``time_steps`` knots evenly spaced over [0, 1], linearly interpolated in between (the quaternion
renormalised). Each basis has a centre ``c_b`` (placed by farthest point sampling on the canonical
Gaussians when the deformation is switched on) and a radius ``sigma_b``; a Gaussian at canonical
position ``x`` takes the weights ``w_b ~ exp(-|x - c_b|^2 / (2 sigma_b^2))``, normalised over all B
bases (a softmax), and moves by the blend of the bases' motions about their centres:

* position: ``x' = sum_b w_b (R_b(t) (x - c_b) + c_b + T_b(t))`` (linear blend skinning, computed
  as one blended 3x3 matrix and one blended translation per Gaussian);
* rotation: ``q' = normalize(sum_b w_b q_b(t)) * q``;
* scale, opacity, colour: the canonical ones.

The motion has 7 x B x ``time_steps`` degrees of freedom whatever the number of Gaussians, so each
part moves rigidly and a time seen from one view borrows its shape from the canonical set. The
weights are a function of the canonical positions and the centres, so the field has no
per-Gaussian state and no hidden state (a pure function of its parameters, so a step is captured
as a CUDA graph on a GPU, like HexPlane's); with ``learn_weights`` each Gaussian's weights are
learned instead (logits starting from the distance weights, Shape of Motion's choice), a
per-Gaussian parameter that densification carries along.

Regularisers: ``time_smoothness``, the mean squared second difference of the tables along time;
``arap``, as-rigid-as-possible between neighbouring bases (SC-GS's term on its control points).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen4d.config import ConfigError, check_non_negative, check_positive
from gen4d.deform.base import DeformationField, check_times
from gen4d.deform.control_points import arap_energy, farthest_point_sampling, quaternion_multiply
from gen4d.deform.hexplane import knot_positions, row_second_difference
from gen4d.gaussians.core import Gaussians, quaternion_to_matrix

__all__ = ["MotionBasesConfig", "MotionBasesField"]


@dataclass(frozen=True)
class MotionBasesConfig:
    """Sizes of the motion-bases field."""

    type_name: ClassVar[str] = "motion_bases"
    num_bases: int = 32
    """B: rigid motions blended per Gaussian."""
    time_steps: int = 24
    """Knots of each basis' motion table over [0, 1] (linear interpolation between them)."""
    learn_centres: bool = True
    """Optimise the bases' centres and radii (otherwise they stay where prepare() put them)."""
    pivot: Literal["centre", "origin"] = "centre"
    """What a basis turns about: its own centre (``R (x - c) + c + T``, SC-GS's control points) or the
    world origin (``R x + T``, Shape of Motion's bases; a rigid motion of the whole object is then the
    same table entry for every basis)."""
    arap_neighbours: int = 4
    """Neighbouring bases (nearest centres) in the ``arap`` regulariser (0: no such term)."""
    learn_weights: bool = False
    """Learn each Gaussian's blend weights (Shape of Motion's per-Gaussian weights), starting from the
    distance weights: thin parts beside a body can then follow bases of their own. Otherwise the
    weights are the distance weights throughout."""

    def __post_init__(self) -> None:
        check_positive(self, "num_bases")
        check_non_negative(self, "arap_neighbours")
        if self.pivot not in ("centre", "origin"):
            raise ConfigError("pivot", f"expected 'centre' or 'origin', got {self.pivot!r}", "MotionBasesConfig")
        if self.time_steps < 2:
            raise ConfigError("time_steps", f"expected at least 2 knots, got {self.time_steps}", "MotionBasesConfig")


class MotionBasesField(DeformationField):
    """See the module docstring."""

    kind = "motion_bases"
    # No hidden state: a captured step equals the eager one (tests/test_graphs_cuda.py, checked on an H200).
    capturable = True

    def __init__(self, config: MotionBasesConfig):
        super().__init__()
        self.config = config
        count, knots = config.num_bases, config.time_steps
        self.centres = nn.Parameter(torch.zeros(count, 3), requires_grad=config.learn_centres)
        self.log_radius = nn.Parameter(torch.zeros(count), requires_grad=config.learn_centres)
        # Offsets from the identity: a fresh field does not move anything.
        self.rotations = nn.Parameter(torch.zeros(count, knots, 4))
        self.translations = nn.Parameter(torch.zeros(count, knots, 3))
        # Per-Gaussian blend logits (N, B), made by prepare() when learn_weights is on.
        self.logits = nn.Parameter(torch.zeros(0, count), requires_grad=config.learn_weights)
        self.register_buffer("identity", torch.tensor([1.0, 0.0, 0.0, 0.0]), persistent=False)
        self.register_buffer("arap_index", torch.zeros(count, min(config.arap_neighbours, count - 1), dtype=torch.long))

    @torch.no_grad()
    def prepare(self, canonical: Gaussians) -> None:
        """Place the centres on the canonical Gaussians by farthest point sampling and set each
        radius to the mean distance to its three nearest other centres."""
        means = canonical.means.detach()
        count = min(self.config.num_bases, means.shape[0])
        centres = means[farthest_point_sampling(means, count)]
        if count < self.config.num_bases:  # fewer Gaussians than bases: repeat the last ones
            centres = torch.cat([centres, centres[-1:].expand(self.config.num_bases - count, 3)])
        self.centres.data.copy_(centres)
        k, neighbours = min(3, self.config.num_bases - 1), self.arap_index.shape[1]
        # One sort of the centre distances gives the radii and the ARAP neighbours (itself first).
        nearest = torch.cdist(centres, centres).topk(max(k, neighbours) + 1, largest=False)
        radii = nearest.values[:, 1 : k + 1].mean(-1) if k > 0 else means.std(0).norm().reshape(1)
        self.log_radius.data.copy_(torch.log(radii.clamp_min(1e-4)))
        self.arap_index = nearest.indices[:, 1 : neighbours + 1]
        if self.config.learn_weights:
            self.logits = nn.Parameter(self._distance_logits(means), requires_grad=True)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"motion": [self.rotations, self.translations], "control": [self.centres, self.log_radius]}
        if self.config.learn_weights:
            groups["weights"] = [self.logits]
        return groups

    # -- per-Gaussian parameters (densification) ---------------------------------------------
    def per_gaussian_parameters(self) -> dict[str, nn.Parameter]:
        return {"logits": self.logits} if self.config.learn_weights else {}

    def set_per_gaussian_parameters(self, params: dict[str, nn.Parameter]) -> None:
        unknown = set(params) - set(self.per_gaussian_parameters())
        if unknown:
            raise ValueError(f"MotionBasesField: unknown per-Gaussian parameters {sorted(unknown)}")
        if "logits" in params:
            self.logits = params["logits"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The logits have one row per Gaussian: take the stored size (N varies).
        key = prefix + "logits"
        if key in state_dict:
            self.logits = nn.Parameter(torch.empty_like(state_dict[key], device=self.logits.device),
                                       requires_grad=self.config.learn_weights)  # fmt: skip
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- motion ------------------------------------------------------------------------------------
    def motions(self, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per time and basis: unit quaternions (T, B, 4) and translations (T, B, 3)."""
        check_times(times)
        low, frac = knot_positions(times, self.config.time_steps)
        frac = frac[None, :, None]  # (1, T, 1)
        quats = self.identity + torch.lerp(self.rotations[:, low], self.rotations[:, low + 1], frac)  # (B, T, 4)
        moves = torch.lerp(self.translations[:, low], self.translations[:, low + 1], frac)  # (B, T, 3)
        return F.normalize(quats, dim=-1).transpose(0, 1), moves.transpose(0, 1)

    def _offsets(self, rot: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        """Each basis' motion as ``x -> R x + offset``: (T, B, 3)."""
        if self.config.pivot == "origin":
            return moves
        return self.centres[None] - torch.einsum("tbij,bj->tbi", rot, self.centres) + moves

    def _distance_logits(self, means: torch.Tensor) -> torch.Tensor:
        distance = (means[:, None, :] - self.centres[None]).square().sum(-1)  # (N, B)
        return -distance / (2 * torch.exp(2 * self.log_radius))

    def weights(self, means: torch.Tensor) -> torch.Tensor:
        """(N, B) blend weights of Gaussians at ``means`` (N, 3): the learned ones (one row per Gaussian
        of the set the field was prepared for) with ``learn_weights``, else the distance weights."""
        if not self.config.learn_weights:
            return torch.softmax(self._distance_logits(means), dim=-1)
        if self.logits.shape[0] != means.shape[0]:
            raise ValueError(
                f"MotionBasesField: learned blend weights exist for {self.logits.shape[0]} Gaussians, got a set of "
                f"{means.shape[0]}; deform the whole canonical set the field was prepared for (learn_weights=true "
                "has no weights for other points)"
            )
        return torch.softmax(self.logits, dim=-1)

    def forward(self, canonical: Gaussians, times: torch.Tensor) -> Gaussians:
        if canonical.batched:
            raise ValueError("MotionBasesField: expected an unbatched canonical set (N, ...)")
        means = canonical.means
        quats, moves = self.motions(times)  # (T, B, 4), (T, B, 3)
        rot = quaternion_to_matrix(quats)  # (T, B, 3, 3)
        # R (x - c) + c + T = R x + (c - R c + T): blend the matrices and the offsets once.
        offsets = self._offsets(rot, moves)  # (T, B, 3)
        w = self.weights(means)  # (N, B)
        blended_rot = torch.einsum("nb,tbij->tnij", w, rot)  # (T, N, 3, 3)
        new_means = torch.einsum("tnij,nj->tni", blended_rot, means) + torch.einsum("nb,tbi->tni", w, offsets)
        blended_quat = F.normalize(torch.einsum("nb,tbk->tnk", w, quats), dim=-1)  # (T, N, 4)
        batch = times.shape[0]
        expand = lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape))  # noqa: E731
        return Gaussians(
            means=new_means,
            log_scales=expand(canonical.log_scales),
            quats=quaternion_multiply(blended_quat, F.normalize(canonical.quats, dim=-1)[None]),
            opacity_logits=expand(canonical.opacity_logits),
            sh=expand(canonical.sh),
        )

    def regularization(self, canonical: Gaussians, times: torch.Tensor) -> dict[str, torch.Tensor]:
        # The tables are (B, knots, C): second differences along the knots (their rows).
        if self.config.time_steps >= 3:
            smooth = sum(row_second_difference(t).square().mean() for t in (self.rotations, self.translations))
        else:
            smooth = self.translations.sum() * 0.0
        terms = {"time_smoothness": smooth}
        if self.arap_index.shape[1]:
            terms["arap"] = self.arap(times)
        return terms

    def arap(self, times: torch.Tensor) -> torch.Tensor:
        """As-rigid-as-possible between neighbouring bases: ``mean |(c'_k - c'_j) - R_k (c_k - c_j)|^2``
        over the times, each basis and its ``arap_neighbours`` nearest (canonical centres), with
        ``c'`` the centres moved by their own motion."""
        quats, moves = self.motions(times)
        rot = quaternion_to_matrix(quats)  # (T, B, 3, 3)
        moved = torch.einsum("tbij,bj->tbi", rot, self.centres) + self._offsets(rot, moves)  # (T, B, 3)
        return arap_energy(self.centres, moved, rot, self.arap_index)
