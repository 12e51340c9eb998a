"""HexPlane + MLP deformation field (the 4D Gaussian Splatting / STAG4D design).

Six feature planes per scale over (x, y, z, t): three spatial planes (xy, xz, yz) and three
space-time planes (xt, yt, zt). A point's feature at one scale is the product of its six
bilinear plane lookups; scales are concatenated. A small MLP maps the feature to offsets of
the position, log-scale and quaternion (optionally opacity logit and base colour), which are
added to the canonical values.

Speed notes: spatial planes do not depend on time, so they are looked up once per Gaussian
and shared by all B times; the three planes of one kind and scale have the same shape and are
sampled in one ``grid_sample`` call (2 calls per scale); the three output heads run as one
batched matmul. The last layer of every head starts at zero, so a new field is the identity.

Regularisers (weights live in the caller's loss config), in one of two forms
(``HexPlaneConfig.regularizer``):

* ``"kplanes"`` (4D construction): ``plane_tv`` is the total variation of the spatial planes,
  mean squared first differences along both plane axes (K-Planes' plane TV); ``time_smoothness``
  the mean squared second difference along t of the space-time planes; ``time_l1`` the mean
  |1 - value| of the space-time planes (they start at 1, i.e. "no motion"); each averaged over
  the scales and the three planes.
* ``"stag4d"`` (the functionals of STAG4D's / 4DGaussians' code): ``plane_tv`` is the mean squared
  *second* difference along the rows (the second axis of the pair) of each spatial plane;
  ``time_smoothness`` the same along t of each space-time plane; ``time_l1`` the mean
  |1 - value| of each space-time plane; each *summed* over the scales and the three planes (so
  with 4 scales a term is 12 times its per-plane average).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gen4d._checks import check_shape
from gen4d.config import ConfigError, check_non_negative, check_positive
from gen4d.deform.base import DeformationField, check_times
from gen4d.gaussians.core import Gaussians

__all__ = ["HexPlaneConfig", "HexPlaneField", "HexPlaneGrid"]


@dataclass(frozen=True)
class HexPlaneConfig:
    """Sizes of the HexPlane grid and its MLP (defaults: 4DGaussians / STAG4D)."""

    type_name: ClassVar[str] = "hexplane"
    features: int = 32
    """Feature channels per plane."""
    resolution: tuple[int, int, int, int] = (64, 64, 64, 25)
    """Base resolution along x, y, z, t."""
    multires: tuple[int, ...] = (1, 2, 4, 8)
    """Multipliers of the spatial resolution, one scale each (time resolution is not multiplied)."""
    bounds: float = 1.6
    """Half side of the cube [-bounds, bounds]^3 the spatial planes cover (points outside are clamped)."""
    width: int = 64
    """Hidden width of the MLP."""
    depth: int = 1
    """Linear layers of the shared trunk before the heads."""
    deform_scale: bool = True
    """Predict log-scale offsets."""
    deform_rotation: bool = True
    """Predict quaternion offsets."""
    deform_opacity: bool = False
    """Predict opacity-logit offsets (off in STAG4D / 4DGS)."""
    deform_color: bool = False
    """Predict offsets of the degree-0 SH colour."""
    anchor_start: bool = False
    """Subtract the offsets at time 0 from those at every time, so the field is exactly the identity at
    t = 0 (the canonical set is the object at time 0) and the images of time 0 train only the canonical
    Gaussians, leaving the first time knot free to fit the times after it."""
    time_modes: int = 0
    """K > 0: low-rank motion. The offsets are ``sum_k phi_k(t) U_k(x)``: K shared curves over time
    (``phi``, a table of ``resolution[3]`` knots, linear in between) weighting K time-free offset fields
    decoded from the spatial planes alone (no space-time planes). Every Gaussian moves with the same K
    curves, so a time seen from one view is explained by K numbers and the fields ``U_k`` are fitted
    from the views of all times (the low-rank prior of non-rigid structure from motion). 0: the plain
    HexPlane."""
    regularizer: Literal["kplanes", "stag4d"] = "kplanes"
    """Form of the grid regularisers: 'kplanes' (first-difference plane TV, terms averaged over scales and
    planes) or 'stag4d' (second differences along plane rows, terms summed over scales and planes, as
    STAG4D's code)."""

    def __post_init__(self) -> None:
        check_positive(self, "features", "bounds", "width")
        check_non_negative(self, "depth", "time_modes")
        for name in ("resolution", "multires"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
                raise ConfigError(name, f"expected integers > 0, got {values!r}", "HexPlaneConfig")
        if len(self.resolution) != 4:
            raise ConfigError(
                "resolution", f"expected 4 values (x, y, z, t), got {self.resolution!r}", "HexPlaneConfig"
            )


# Plane index pairs over the axes (x, y, z, t) = (0, 1, 2, 3).
SPATIAL_PAIRS = ((0, 1), (0, 2), (1, 2))
TIME_PAIRS = ((0, 3), (1, 3), (2, 3))


def _product(planes: torch.Tensor) -> torch.Tensor:
    """Product of the three plane lookups (3, ...) -> (...). Written as two multiplications: the
    backward of ``prod`` counts zero factors on the host (a device sync every step on CUDA)."""
    return planes[0] * planes[1] * planes[2]


class HexPlaneGrid(nn.Module):
    """The multi-scale six-plane feature grid: ``(points (N, 3), times (B,)) -> features (B, N, F * S)``.

    Spatial planes of scale s: (3, F, R_s, R_s) indexed (plane, feature, second axis, first axis);
    space-time planes: (3, F, R_t, R_s) with time along the rows.
    """

    def __init__(self, config: HexPlaneConfig):
        super().__init__()
        if config.features <= 0 or config.width <= 0 or config.depth <= 0:
            raise ValueError("HexPlaneConfig: features, width and depth must be > 0")
        if len(config.resolution) != 4 or min(config.resolution) < 2:
            raise ValueError(f"HexPlaneConfig.resolution: expected 4 values >= 2 (x, y, z, t), got {config.resolution}")
        if len(set(config.resolution[:3])) != 1:
            raise ValueError(
                f"HexPlaneConfig.resolution: the spatial resolutions must be equal (got {config.resolution[:3]}); "
                "planes of one scale are sampled together"
            )
        if not config.multires or min(config.multires) < 1:
            raise ValueError(f"HexPlaneConfig.multires: expected positive multipliers, got {config.multires}")
        if config.bounds <= 0:
            raise ValueError(f"HexPlaneConfig.bounds: expected > 0, got {config.bounds}")
        if config.regularizer not in ("kplanes", "stag4d"):
            raise ValueError(f"HexPlaneConfig.regularizer: expected 'kplanes' or 'stag4d', got {config.regularizer!r}")
        self.config = config
        spatial, temporal = [], []
        base, time_res = config.resolution[0], config.resolution[3]
        for mult in config.multires:
            res = base * mult
            spatial.append(nn.Parameter(torch.empty(3, config.features, res, res).uniform_(0.1, 0.5)))
            if not config.time_modes:
                temporal.append(nn.Parameter(torch.ones(3, config.features, time_res, res)))
        self.spatial = nn.ParameterList(spatial)
        self.temporal = nn.ParameterList(temporal)
        if config.time_modes:
            # The K motion curves start as cosines of increasing frequency over [0, 1] (smooth, distinct).
            knots = torch.linspace(0.0, 1.0, time_res)
            frequency = torch.arange(1, config.time_modes + 1, dtype=torch.float32)
            self.modes = nn.Parameter(torch.cos(torch.pi * frequency[:, None] * knots[None]))  # (K, T)
        else:
            self.modes = None

    @property
    def output_dim(self) -> int:
        return self.config.features * len(self.config.multires)

    def spatial_features(self, points: torch.Tensor) -> list[torch.Tensor]:
        """Per scale (N, F): product of the three spatial plane lookups."""
        coords = (points / self.config.bounds).clamp(-1.0, 1.0)
        # grid_sample's grid is (x, y) = (column, row) = (first axis of the pair, second axis).
        # (3, 1, N, 2); integer indexing: a list index would be copied to the GPU on every call (a host sync).
        grid = torch.stack([torch.stack([coords[:, a], coords[:, b]], -1) for a, b in SPATIAL_PAIRS])[:, None]
        out = []
        for plane in self.spatial:
            grid_c = grid.to(plane.dtype)
            values = F.grid_sample(plane, grid_c, mode="bilinear", padding_mode="border", align_corners=True)
            out.append(_product(values[:, :, 0]).transpose(0, 1))  # (3, F, 1, N) -> (N, F)
        return out

    def temporal_features(self, points: torch.Tensor, times: torch.Tensor) -> list[torch.Tensor]:
        """Per scale (B, N, F): product of the three space-time plane lookups."""
        count, batch = points.shape[0], times.shape[0]
        coords = (points / self.config.bounds).clamp(-1.0, 1.0)
        t = (times * 2.0 - 1.0).clamp(-1.0, 1.0)
        t_grid = t[:, None].expand(batch, count).reshape(-1)  # (B*N,)
        grids = []
        for axis, _ in TIME_PAIRS:
            space = coords[:, axis][None].expand(batch, count).reshape(-1)
            grids.append(torch.stack([space, t_grid], -1))
        grid = torch.stack(grids)[:, None]  # (3, 1, B*N, 2)
        out = []
        for plane in self.temporal:
            values = F.grid_sample(
                plane, grid.to(plane.dtype), mode="bilinear", padding_mode="border", align_corners=True
            )
            out.append(_product(values[:, :, 0]).transpose(0, 1).reshape(batch, count, -1))
        return out

    def mode_weights(self, times: torch.Tensor) -> torch.Tensor:
        """The K motion curves at ``times`` (B,): (B, K), linear between the knots."""
        low, frac = knot_positions(times, self.modes.shape[1])
        return torch.lerp(self.modes[:, low], self.modes[:, low + 1], frac[None]).transpose(0, 1)

    def forward(self, points: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        if self.modes is not None:
            raise ValueError("HexPlaneGrid with time_modes: use spatial_features() and mode_weights()")
        spatial = self.spatial_features(points)
        temporal = self.temporal_features(points, times)
        return torch.cat([s[None] * t for s, t in zip(spatial, temporal)], -1)

    # -- regularisers ------------------------------------------------------------------------
    def plane_tv(self) -> torch.Tensor:
        if self.config.regularizer == "stag4d":
            # sum over scales and the 3 planes of mean squared second differences along the rows
            terms = [
                3.0 * row_second_difference(plane).square().mean() for plane in self.spatial if plane.shape[-2] >= 3
            ]
            return sum(terms, torch.zeros((), device=self.spatial[0].device))
        total = 0.0
        for plane in self.spatial:
            total = total + (plane[..., 1:, :] - plane[..., :-1, :]).square().mean()
            total = total + (plane[..., :, 1:] - plane[..., :, :-1]).square().mean()
        return total / len(self.spatial)

    def time_smoothness(self) -> torch.Tensor:
        if self.modes is not None:  # the motion curves' mean squared second difference
            if self.modes.shape[1] < 3:
                return self.modes.new_zeros(())
            return row_second_difference(self.modes.T).square().mean()
        total = 0.0
        for plane in self.temporal:
            if plane.shape[-2] < 3:
                continue
            total = total + row_second_difference(plane).square().mean()
        # planes of one scale share a shape, so 3 x the stacked mean is the sum over the 3 planes
        scale = 3.0 if self.config.regularizer == "stag4d" else 1.0 / len(self.temporal)
        return torch.as_tensor(total, device=self.temporal[0].device) * scale

    def time_l1(self) -> torch.Tensor:
        if self.modes is not None:  # no space-time planes
            return self.modes.new_zeros(())
        total = sum((1.0 - plane).abs().mean() for plane in self.temporal)
        return total * 3.0 if self.config.regularizer == "stag4d" else total / len(self.temporal)


def knot_positions(times: torch.Tensor, knots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``times`` (B,) in [0, 1] fall among ``knots`` evenly spaced knots: the index of the knot
    before each (B,) (long, at most ``knots - 2``) and the fraction of the way to the next (B,)."""
    position = times.clamp(0.0, 1.0) * (knots - 1)
    low = position.floor().clamp(max=knots - 2)
    return low.long(), position - low


def row_second_difference(plane: torch.Tensor) -> torch.Tensor:
    """Second difference along the rows (dimension -2) of a (..., rows, columns) plane."""
    return plane[..., 2:, :] - 2.0 * plane[..., 1:-1, :] + plane[..., :-2, :]


class HexPlaneField(DeformationField):
    """HexPlane grid + MLP heads; ``forward(canonical (N), times (B,)) -> Gaussians (B, N)``."""

    kind = "hexplane"
    capturable = True

    def __init__(self, config: HexPlaneConfig = HexPlaneConfig()):
        super().__init__()
        self.config = config
        self.grid = HexPlaneGrid(config)
        layers: list[nn.Module] = [nn.Linear(self.grid.output_dim, config.width)]
        for _ in range(config.depth - 1):
            layers += [nn.ReLU(), nn.Linear(config.width, config.width)]
        self.trunk = nn.Sequential(*layers)
        self.heads = self._head_sizes()
        count, width, widest = len(self.heads), config.width, max(self.heads.values())
        # Heads: ReLU -> Linear(W, W) -> ReLU -> Linear(W, out), all heads in one batched matmul.
        self.head_hidden = nn.Linear(width, width * count)
        # With K time modes each head gives K offsets per Gaussian (one per motion curve).
        modes = max(config.time_modes, 1)
        self.head_out_weight = nn.Parameter(torch.zeros(count, width, widest * modes))
        self.head_out_bias = nn.Parameter(torch.zeros(count, widest * modes))

    def _head_sizes(self) -> dict[str, int]:
        c = self.config
        heads = {"means": 3}
        if c.deform_scale:
            heads["log_scales"] = 3
        if c.deform_rotation:
            heads["quats"] = 4
        if c.deform_opacity:
            heads["opacity_logits"] = 1
        if c.deform_color:
            heads["sh0"] = 3
        return heads

    def deltas(self, points: torch.Tensor, times: torch.Tensor) -> dict[str, torch.Tensor]:
        """Offsets per head, each (B, N, size) (opacity: (B, N))."""
        check_shape("points", points, ("N", 3))
        check_times(times)
        if self.config.anchor_start:  # one extra time, 0, whose offsets are subtracted below
            times = torch.cat([times, times.new_zeros(1)])
        # grid_sample's backward crashes on NaN coordinates: a step after a NaN loss must not take the
        # process down before the loop sees the loss (steps do not check values: no host syncs).
        points = points.nan_to_num(0.0)
        modes = self.config.time_modes
        if modes:  # time-free features, once per Gaussian
            features = torch.cat(self.grid.spatial_features(points), -1)[None]  # (1, N, F*S)
        else:
            features = self.grid(points, times)  # (B, N, F*S)
        batch, count = features.shape[:2]
        hidden = self.trunk(features.reshape(batch * count, -1))
        hidden = F.relu(self.head_hidden(F.relu(hidden)))  # (BN, H*W)
        hidden = hidden.reshape(batch * count, len(self.heads), -1).transpose(0, 1)  # (H, BN, W)
        out = torch.baddbmm(self.head_out_bias[:, None, :], hidden, self.head_out_weight)  # (H, BN, widest [* K])
        if modes:  # sum_k phi_k(t) U_k(x): (H, N, K, widest) against (B, K) -> (H, B * N, widest)
            weights = self.grid.mode_weights(times).to(out.dtype)
            out = torch.einsum("hnkw,bk->hbnw", out.reshape(len(self.heads), count, modes, -1), weights)
            batch = times.shape[0]
            out = out.reshape(len(self.heads), batch * count, -1)
        result = {}
        for index, (name, size) in enumerate(self.heads.items()):
            value = out[index, :, :size].reshape(batch, count, size)
            if self.config.anchor_start:
                value = value[:-1] - value[-1:]
            result[name] = value[..., 0] if name == "opacity_logits" else value
        return result

    def forward(self, canonical: Gaussians, times: torch.Tensor) -> Gaussians:
        if canonical.batched:
            raise ValueError("HexPlaneField: expected an unbatched canonical set (N, ...)")
        deltas = self.deltas(canonical.means, times)
        batch = times.shape[0]
        expand = lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape))  # noqa: E731
        means = canonical.means + deltas["means"]
        log_scales = (
            canonical.log_scales + deltas["log_scales"] if "log_scales" in deltas else expand(canonical.log_scales)
        )
        quats = canonical.quats + deltas["quats"] if "quats" in deltas else expand(canonical.quats)
        opacity = (
            canonical.opacity_logits + deltas["opacity_logits"]
            if "opacity_logits" in deltas
            else expand(canonical.opacity_logits)
        )
        sh = expand(canonical.sh)
        if "sh0" in deltas:
            sh = torch.cat([sh[..., :1, :] + deltas["sh0"][..., None, :], sh[..., 1:, :]], -2)
        return Gaussians(means=means, log_scales=log_scales, quats=quats, opacity_logits=opacity, sh=sh)

    def regularization(self, canonical: Gaussians, times: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "plane_tv": self.grid.plane_tv(),
            "time_smoothness": self.grid.time_smoothness(),
            "time_l1": self.grid.time_l1(),
        }

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        grid = list(self.grid.parameters())
        grid_ids = {id(p) for p in grid}
        return {"grid": grid, "mlp": [p for p in self.parameters() if id(p) not in grid_ids]}
