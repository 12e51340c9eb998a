"""Real spherical harmonics up to degree 3 (the 3DGS / gsplat basis and sign convention).

Colour = clamp_min(sum_k sh_k * Y_k(direction) + 0.5, 0); a degree-0 set is plain RGB with
``sh_0 = (rgb - 0.5) / C0``.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def num_sh_bases(degree: int) -> int:
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"sh degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def degree_from_bases(count: int) -> int:
    for degree in range(4):
        if (degree + 1) ** 2 == count:
            return degree
    raise ValueError(
        f"sh: {count} coefficients per channel is not (degree + 1)^2 for a degree in 0..3; expected 1, 4, 9 or 16"
    )


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * C0 + 0.5


def eval_sh(sh: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Colours (..., 3) from coefficients ``sh`` (..., K, 3) seen along unit ``directions`` (..., 3)
    (from the camera centre towards the Gaussian)."""
    degree = degree_from_bases(sh.shape[-2])
    result = C0 * sh[..., 0, :]
    if degree > 0:
        x, y, z = directions[..., 0:1], directions[..., 1:2], directions[..., 2:3]
        result = result - C1 * y * sh[..., 1, :] + C1 * z * sh[..., 2, :] - C1 * x * sh[..., 3, :]
        if degree > 1:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            result = (
                result
                + C2[0] * xy * sh[..., 4, :]
                + C2[1] * yz * sh[..., 5, :]
                + C2[2] * (2.0 * zz - xx - yy) * sh[..., 6, :]
                + C2[3] * xz * sh[..., 7, :]
                + C2[4] * (xx - yy) * sh[..., 8, :]
            )
            if degree > 2:
                result = (
                    result
                    + C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
                    + C3[1] * xy * z * sh[..., 10, :]
                    + C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
                    + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
                    + C3[4] * x * (4 * zz - xx - yy) * sh[..., 13, :]
                    + C3[5] * z * (xx - yy) * sh[..., 14, :]
                    + C3[6] * x * (xx - 3 * yy) * sh[..., 15, :]
                )
    return torch.clamp_min(result + 0.5, 0.0)
