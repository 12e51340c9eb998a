"""EWA projection of 3D Gaussians to the image plane (gsplat's classic conventions).

Used by the reference rasteriser; the gsplat backend does the same in CUDA. ``gaussian_alpha``,
``blend`` and ``pixel_centres`` spell out the per-pixel rules in their plainest form (the
rasteriser evaluates the same rules in a faster layout).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gen4d.cameras import Cameras
from gen4d.gaussians.core import Gaussians
from gen4d.gaussians.sh import eval_sh

ALPHA_THRESHOLD = 1.0 / 255.0
"""Contributions with alpha below this are skipped."""
MAX_ALPHA = 0.999
"""Alpha is clamped to this (gsplat 1.5's value; the original 3DGS code used 0.99)."""
TRANSMITTANCE_STOP = 1e-4
"""A pixel stops blending before the Gaussian that would take its transmittance to <= this."""


@dataclass
class Projected:
    """Per camera and Gaussian (C, N, ...) screen-space quantities."""

    means2d: torch.Tensor  # (C, N, 2) pixels
    conics: torch.Tensor  # (C, N, 3) inverse 2D covariance (a, b, c) = [[a, b], [b, c]]
    depths: torch.Tensor  # (C, N) camera-space z
    opacities: torch.Tensor  # (C, N) in (0, 1); 0 for culled Gaussians
    colors: torch.Tensor  # (C, N, 3) view-dependent colour
    extents: torch.Tensor  # (C, N, 2) float half extents of the alpha >= 1/255 region
    valid: torch.Tensor  # (C, N) bool


def project(gaussians: Gaussians, cameras: Cameras, near: float, far: float, eps2d: float) -> Projected:
    """Project (batched or shared) Gaussians into every camera.

    Perspective Jacobian at the (clamped) camera-space mean: x/z and y/z are clamped to 1.3x
    the half field of view as gsplat does, so Gaussians far outside the frustum stay bounded.
    """
    R = cameras.world_to_camera[:, :3, :3]  # (C, 3, 3)
    t = cameras.world_to_camera[:, :3, 3]  # (C, 3)
    means = gaussians.means if gaussians.batched else gaussians.means.unsqueeze(0)  # (C|1, N, 3)
    cam = torch.einsum("cij,cnj->cni", R, means.expand(R.shape[0], -1, -1)) + t[:, None, :]
    x, y, z = cam.unbind(-1)

    rotations = gaussians.rotations  # (..., N, 3, 3)
    scales = gaussians.scales
    M = rotations * scales.unsqueeze(-2)  # R S
    cov3d = M @ M.transpose(-1, -2)
    if not gaussians.batched:
        cov3d = cov3d.unsqueeze(0)
    cov_cam = R[:, None] @ cov3d @ R[:, None].transpose(-1, -2)  # (C, N, 3, 3)

    fx, fy = cameras.fx[:, None], cameras.fy[:, None]
    cx, cy = cameras.cx[:, None], cameras.cy[:, None]
    W, H = cameras.width, cameras.height
    tan_x, tan_y = 0.5 * W / fx, 0.5 * H / fy
    lim_x_pos, lim_x_neg = (W - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (H - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    safe_z = torch.where(z > near, z, torch.ones_like(z))
    tx = safe_z * torch.minimum(torch.maximum(x / safe_z, -lim_x_neg), lim_x_pos)
    ty = safe_z * torch.minimum(torch.maximum(y / safe_z, -lim_y_neg), lim_y_pos)
    zeros = torch.zeros_like(safe_z)
    J = torch.stack(
        [
            torch.stack([fx / safe_z, zeros, -fx * tx / safe_z**2], -1),
            torch.stack([zeros, fy / safe_z, -fy * ty / safe_z**2], -1),
        ],
        -2,
    )  # (C, N, 2, 3)
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], -1)

    means2d = torch.stack([fx * x / safe_z + cx, fy * y / safe_z + cy], -1)
    opacities = gaussians.opacities
    if not gaussians.batched:
        opacities = opacities.unsqueeze(0).expand(R.shape[0], -1)

    # The region where alpha = o * exp(-d^2 / 2) >= 1/255 is d^2 <= 2 ln(255 o); its bounding
    # box has half extents k * sqrt(cov_xx), k * sqrt(cov_yy). Culling with it is exact.
    with torch.no_grad():
        k2 = 2.0 * torch.log(torch.clamp_min(opacities * 255.0, 1e-12))
        k = torch.sqrt(torch.clamp_min(k2, 0.0))
        extents = torch.stack([k * torch.sqrt(a.clamp_min(0)), k * torch.sqrt(c.clamp_min(0))], -1)
        valid = (z > near) & (z < far) & (det > 0) & (k2 > 0)
        mx, my = means2d[..., 0], means2d[..., 1]
        ex, ey = extents[..., 0], extents[..., 1]
        inside = (mx + ex > 0) & (mx - ex < W) & (my + ey > 0) & (my - ey < H)
        valid = valid & inside
        extents = torch.where(valid[..., None], extents, torch.zeros_like(extents))

    centres = cameras.centers  # (C, 3)
    directions = torch.nn.functional.normalize(means - centres[:, None, :], dim=-1)  # (C, N, 3)
    sh = gaussians.sh if gaussians.batched else gaussians.sh.unsqueeze(0)
    colors = eval_sh(sh, directions).expand(R.shape[0], -1, -1)
    return Projected(
        means2d=means2d,
        conics=conics,
        depths=z,
        opacities=torch.where(valid, opacities, torch.zeros_like(opacities)),
        colors=colors,
        extents=extents,
        valid=valid,
    )


def radii_from_extents(extents: torch.Tensor) -> torch.Tensor:
    """Integer pixel half extents (C, N, 2), 0 for culled Gaussians."""
    return torch.ceil(extents).to(torch.int32)


def gaussian_alpha(opacity: torch.Tensor, conic: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Alpha of Gaussians at pixel offsets ``delta`` = pixel centre - mean (..., 2), with the
    clamp to 0.999, the skip below 1/255 and the skip of negative exponents (gsplat's rules)."""
    dx, dy = delta[..., 0], delta[..., 1]
    sigma = 0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) + conic[..., 1] * dx * dy
    alpha = torch.clamp_max(opacity * torch.exp(-sigma), MAX_ALPHA)
    keep = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    return torch.where(keep, alpha, torch.zeros_like(alpha))


def blend(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back blending weights for alphas (..., G) sorted by depth.

    Returns (weights (..., G), final transmittance (...)). A Gaussian is used only while the
    transmittance after it stays above 1e-4; since transmittance never increases, the used
    Gaussians are a prefix.
    """
    with torch.no_grad():
        used = torch.cumprod(1.0 - alpha, dim=-1) > TRANSMITTANCE_STOP
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    transmittance = torch.cumprod(1.0 - alpha, dim=-1)
    before = torch.cat([torch.ones_like(transmittance[..., :1]), transmittance[..., :-1]], dim=-1)
    if not alpha.shape[-1]:
        return alpha * before, torch.ones(alpha.shape[:-1], dtype=alpha.dtype, device=alpha.device)
    return alpha * before, transmittance[..., -1]


def pixel_centres(width: int, height: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, W, 2) pixel centre coordinates (u + 0.5, v + 0.5)."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device), torch.arange(width, dtype=dtype, device=device), indexing="ij"
    )
    return torch.stack([u + 0.5, v + 0.5], -1)
