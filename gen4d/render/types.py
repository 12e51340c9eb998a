"""Types shared by the rendering interface and its backends (no rendering code here, so the
backends can import them without importing :mod:`gen4d.render.core`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Backend", "RenderOptions", "RenderOutput", "GSPLAT_HINT"]

Backend = Literal["auto", "gsplat", "torch"]

GSPLAT_HINT = (
    "the gsplat backend needs a CUDA GPU and gsplat: pip install 'gen4d[cuda]' "
    "(gsplat JIT-compiles its CUDA extension on first use: about a minute; needs nvcc and ninja)"
)


@dataclass(frozen=True)
class RenderOptions:
    """How to rasterise (shared by both backends)."""

    backend: Backend = "auto"
    """'auto' (gsplat if usable, else torch), 'gsplat' or 'torch'."""
    near: float = 0.01
    """Gaussians with camera depth <= near are culled."""
    far: float = 1e10
    """Gaussians with camera depth >= far are culled."""
    eps2d: float = 0.3
    """Low-pass filter added to the 2D covariance diagonal (pixels^2)."""
    tile_size: int = 8
    """torch backend: tile edge in pixels (8 was fastest on the CPU for 64-256 px images)."""
    max_elements: int = 1 << 22
    """torch backend: most pixel x Gaussian pairs evaluated at once (bounds memory, see reference.py;
    on the CPU chunks are kept to 2^18 pairs, which is faster)."""
    checkpoint: bool = True
    """torch backend: recompute tile chunks in backward instead of storing them (bounded memory)."""
    absgrad: bool = False
    """gsplat backend: also accumulate absolute 2D-mean gradients (means2d.absgrad)."""
    check_values: bool = True
    """Check the values of the inputs too (finite Gaussians and background): one host-device sync
    per tensor. Shapes, dtypes and devices are always checked. A training step turns this off:
    its inputs were checked once where they entered (dataset load, model construction)."""


@dataclass
class RenderOutput:
    """Renders of C cameras. Call ``means2d.retain_grad()`` before backward to read 2D-mean
    gradients (densification)."""

    rgb: torch.Tensor
    """(C, H, W, 3) colour composited over the background."""
    alpha: torch.Tensor
    """(C, H, W, 1) accumulated opacity."""
    depth: torch.Tensor
    """(C, H, W, 1) expected depth (sum w_i z_i / alpha), 0 where alpha is 0."""
    means2d: torch.Tensor
    """(C, N, 2) projected centres in pixels, the tensor the rasteriser used (gsplat with
    per-camera sets: (C, 1, N, 2)); read gradients through :meth:`means2d_grad`."""
    radii: torch.Tensor
    """(C, N, 2) int screen-space half extents; 0 for culled Gaussians."""
    visible: torch.Tensor
    """(C, N) bool: the Gaussian touches the image of that camera."""
    backend: str
    """Which backend produced this output."""

    def means2d_grad(self) -> torch.Tensor | None:
        """(C, N, 2) gradient of the loss w.r.t. the 2D means (after retain_grad + backward)."""
        grad = self.means2d.grad
        return None if grad is None else grad.reshape(self.visible.shape + (2,))
