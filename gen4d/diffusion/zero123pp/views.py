"""Zero123++'s image conventions: the 3 x 2 view grid, the grey condition background, and the
gen4d cameras of the six views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from gen4d._checks import check_shape
from gen4d.cameras import Cameras, zero123pp_poses

__all__ = ["GREY", "composite", "split_grid", "join_grid", "view_cameras"]

GREY = 127.0 / 255.0


def composite(rgba: torch.Tensor, background: float | Sequence[float] = GREY) -> torch.Tensor:
    """(F, H, W, 4) RGBA in [0, 1] -> (F, 3, H, W) RGB over a constant background."""
    check_shape("rgba", rgba, (None, None, None, 4))
    bg = torch.as_tensor(background, dtype=rgba.dtype).reshape(-1)
    rgb = rgba[..., :3] * rgba[..., 3:] + bg * (1 - rgba[..., 3:])
    return rgb.permute(0, 3, 1, 2).contiguous()


def split_grid(grid: torch.Tensor, rows: int = 3, cols: int = 2) -> torch.Tensor:
    """(..., C, rows*v, cols*v) grid -> (..., rows*cols, C, v, v) views in row-major order."""
    *lead, c, h, w = grid.shape
    if h % rows or w % cols or h // rows != w // cols:
        raise ValueError(f"split_grid: a {h}x{w} image is not a {rows}x{cols} grid of square views")
    v, k = h // rows, len(lead)
    views = grid.reshape(*lead, c, rows, v, cols, v).permute(*range(k), k + 1, k + 3, k, k + 2, k + 4)
    return views.reshape(*lead, rows * cols, c, v, v)


def join_grid(views: torch.Tensor, rows: int = 3, cols: int = 2) -> torch.Tensor:
    """Inverse of :func:`split_grid`: (..., rows*cols, C, v, v) -> (..., C, rows*v, cols*v)."""
    *lead, n, c, v, v2 = views.shape
    if n != rows * cols or v != v2:
        raise ValueError(f"join_grid: expected {rows * cols} square views, got {n} of {v}x{v2}")
    grid = views.reshape(*lead, rows, cols, c, v, v)
    k = len(lead)
    grid = grid.permute(*range(k), k + 2, k, k + 3, k + 1, k + 4)
    return grid.reshape(*lead, c, rows * v, cols * v)


def view_cameras(
    version: Literal["v1.1", "v1.2"],
    times: torch.Tensor | Sequence[float],
    radius: float = 2.0,
    input_fov_deg: float = 49.1,
    size: int = 320,
    input_azimuth_deg: float = 0.0,
) -> Cameras:
    """(F * 6) cameras of Zero123++'s views for an input camera on the front (azimuth 0,
    elevation 0) at ``radius`` with ``input_fov_deg``; frame-major, views row-major."""
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    return Cameras.cat(
        [zero123pp_poses(version, input_azimuth_deg, radius, input_fov_deg, size, float(t)) for t in times.tolist()]
    )
