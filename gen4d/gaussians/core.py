"""Canonical 3D Gaussians: a dataclass of tensors, initialisers and small helpers.

Parameters are stored in their unconstrained form (the 3DGS habit): log-scales, unnormalised
quaternions (w, x, y, z), opacity logits and SH coefficients. A set may carry one leading
batch dimension (B, N, ...) - one Gaussian set per camera, as produced by deforming the
canonical set to each camera's time - which the renderers accept directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from gen4d._checks import check_finite, check_shape
from gen4d.gaussians.sh import degree_from_bases, num_sh_bases, rgb_to_sh0, sh0_to_rgb

__all__ = ["Gaussians", "random_in_sphere", "from_points", "quaternion_to_matrix"]


@dataclass(frozen=True)
class Gaussians:
    """N Gaussians (optionally a batch of B sets of N).

    Shapes: means (..., N, 3); log_scales (..., N, 3); quats (..., N, 4) as (w, x, y, z);
    opacity_logits (..., N); sh (..., N, K, 3) with K = (degree + 1)^2, K in {1, 4, 9, 16}.
    """

    means: torch.Tensor
    """(..., N, 3) centres in world space."""
    log_scales: torch.Tensor
    """(..., N, 3) natural log of the standard deviations along the local axes."""
    quats: torch.Tensor
    """(..., N, 4) rotations as quaternions (w, x, y, z); normalised where used."""
    opacity_logits: torch.Tensor
    """(..., N) logits of the peak opacity."""
    sh: torch.Tensor
    """(..., N, K, 3) spherical-harmonic colour coefficients (degree 0 = RGB, see gaussians.sh)."""

    def validate(self, name: str = "gaussians", finite: bool = True) -> Gaussians:
        """Check shapes agree (raises ValueError naming the field) and, if ``finite``, that every
        value is finite (one host-device sync per field: skip it inside a training step)."""
        lead = tuple(self.means.shape[:-1])
        if self.means.ndim not in (2, 3) or self.means.shape[-1] != 3:
            raise ValueError(f"{name}.means: expected shape (N, 3) or (B, N, 3), got {tuple(self.means.shape)}")
        sym = tuple(f"d{i}" for i in range(len(lead)))
        named = dict(zip(sym, lead))
        expect = lambda *tail: tuple(named[s] for s in sym) + tail  # noqa: E731
        check_shape(f"{name}.log_scales", self.log_scales, expect(3))
        check_shape(f"{name}.quats", self.quats, expect(4))
        check_shape(f"{name}.opacity_logits", self.opacity_logits, expect())
        if self.sh.ndim != len(lead) + 2 or tuple(self.sh.shape[: len(lead)]) != lead or self.sh.shape[-1] != 3:
            raise ValueError(f"{name}.sh: expected shape {lead + ('K', 3)}, got {tuple(self.sh.shape)}")
        try:
            degree_from_bases(self.sh.shape[-2])
        except ValueError as err:
            raise ValueError(f"{name}.{err}") from None
        if finite:
            for field in fields(self):
                check_finite(f"{name}.{field.name}", getattr(self, field.name))
        return self

    # -- views -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[-2])

    @property
    def batched(self) -> bool:
        return self.means.ndim == 3

    @property
    def sh_degree(self) -> int:
        return degree_from_bases(self.sh.shape[-2])

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rotations(self) -> torch.Tensor:
        """(..., N, 3, 3) rotation matrices."""
        return quaternion_to_matrix(self.quats)

    @property
    def rgb(self) -> torch.Tensor:
        """(..., N, 3) the view-independent (degree-0) colour."""
        return sh0_to_rgb(self.sh[..., 0, :]).clamp_min(0.0)

    def map(self, fn) -> Gaussians:
        """Apply ``fn`` to every tensor field (e.g. ``lambda x: x.detach()``)."""
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device=None, dtype=None) -> Gaussians:
        return self.map(lambda x: x.to(device=device, dtype=dtype))

    def detach(self) -> Gaussians:
        return self.map(lambda x: x.detach())

    def index(self, selector) -> Gaussians:
        """Select Gaussians (along N) by index or boolean mask."""
        return Gaussians(
            means=self.means[..., selector, :],
            log_scales=self.log_scales[..., selector, :],
            quats=self.quats[..., selector, :],
            opacity_logits=self.opacity_logits[..., selector],
            sh=self.sh[..., selector, :, :],
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_dict(values: dict[str, torch.Tensor]) -> Gaussians:
        expected = {f.name for f in fields(Gaussians)}
        missing, unknown = expected - set(values), set(values) - expected
        if missing or unknown:
            raise ValueError(f"Gaussians.from_dict: missing {sorted(missing)}, unknown {sorted(unknown)}")
        return Gaussians(**values).validate()

    def with_(self, **changes: torch.Tensor) -> Gaussians:
        return replace(self, **changes)


def quaternion_to_matrix(quats: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), not necessarily unit -> (..., 3, 3) rotations."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def from_points(
    points: torch.Tensor,
    colors: torch.Tensor | None = None,
    scale: float | torch.Tensor | None = None,
    opacity: float = 0.1,
    sh_degree: int = 0,
) -> Gaussians:
    """Isotropic Gaussians at ``points`` (N, 3) with ``colors`` (N, 3) in [0, 1] (default grey).

    ``scale`` defaults to the mean distance to the 3 nearest neighbours (the 3DGS
    initialisation), computed in chunks so memory stays O(N * 1024).
    """
    check_shape("points", points, ("N", 3))
    count = points.shape[0]
    if count == 0:
        raise ValueError("from_points: points is empty; expected at least one point")
    check_finite("points", points)
    if colors is None:
        colors = torch.full_like(points, 0.5)
    check_shape("colors", colors, (count, 3))
    if scale is None:
        scale = _nearest_neighbour_scale(points)
    scale_t = torch.as_tensor(scale, dtype=points.dtype, device=points.device).expand(count).clone()
    if bool((scale_t <= 0).any()):
        raise ValueError("from_points: scale must be > 0")
    sh = torch.zeros(count, num_sh_bases(sh_degree), 3, dtype=points.dtype, device=points.device)
    sh[:, 0, :] = rgb_to_sh0(colors.to(points))
    quats = torch.zeros(count, 4, dtype=points.dtype, device=points.device)
    quats[:, 0] = 1.0
    return Gaussians(
        means=points.clone(),
        log_scales=torch.log(scale_t)[:, None].expand(count, 3).clone(),
        quats=quats,
        opacity_logits=torch.full((count,), _logit(opacity), dtype=points.dtype, device=points.device),
        sh=sh,
    )


def _nearest_neighbour_scale(points: torch.Tensor, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    count = points.shape[0]
    if count == 1:
        return torch.full((1,), 0.01, dtype=points.dtype, device=points.device)
    k = min(k, count - 1)
    out = []
    for start in range(0, count, chunk):
        dist = torch.cdist(points[start : start + chunk], points)
        dist[torch.arange(dist.shape[0]), torch.arange(start, start + dist.shape[0])] = float("inf")
        out.append(dist.topk(k, largest=False).values.mean(-1))
    return torch.cat(out).clamp_min(1e-7)


def random_in_sphere(
    count: int,
    radius: float = 0.5,
    opacity: float = 0.1,
    sh_degree: int = 0,
    seed: int | None = 0,
    device: torch.device | str = "cpu",
) -> Gaussians:
    """``count`` Gaussians uniform in a ball of ``radius`` with random colours (STAG4D: 10k,
    radius 0.5, opacity 0.1)."""
    if count <= 0:
        raise ValueError(f"random_in_sphere: count must be > 0, got {count}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=gen), dim=-1)
    r = radius * torch.rand(count, 1, generator=gen) ** (1 / 3)
    colors = torch.rand(count, 3, generator=gen)
    # Drawn on the CPU (same values on every device); the O(N^2) neighbour search runs on `device`.
    return from_points((direction * r).to(device), colors.to(device), opacity=opacity, sh_degree=sh_degree)
