"""The rendering interface: ``render(gaussians, cameras, background, options) -> RenderOutput``.

Backends (same maths, same outputs):

* ``"gsplat"`` - gsplat's CUDA ``rasterization`` (classic mode), every camera of a call in one
  launch. Needs CUDA and the ``cuda`` extra.
* ``"torch"`` - gen4d's own pure-PyTorch tile rasteriser (:mod:`gen4d.render.reference`), on
  any device, differentiable by autograd.
* ``"auto"`` - gsplat when CUDA and gsplat are usable, else torch.

The rasteriser knows nothing about time: deform the Gaussians to each camera's time first and
pass a batched set (C, N, ...) - one set per camera - or one shared set (N, ...).
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from gen4d._checks import check_finite
from gen4d.cameras import Cameras
from gen4d.gaussians.core import Gaussians
from gen4d.render.gsplat_backend import render_gsplat
from gen4d.render.reference import render_reference
from gen4d.render.types import GSPLAT_HINT, Backend, RenderOptions, RenderOutput

__all__ = ["RenderOptions", "RenderOutput", "render", "available_backends", "resolve_backend", "GSPLAT_HINT"]


@functools.cache
def _gsplat_importable() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def available_backends() -> dict[str, bool]:
    """Which backends can render here: torch always, gsplat with gsplat installed and a CUDA GPU."""
    return {"torch": True, "gsplat": _gsplat_importable() and torch.cuda.is_available()}


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """The backend that renders tensors on ``device`` for ``RenderOptions.backend``."""
    if backend == "torch":
        return "torch"
    if backend == "gsplat":
        if not _gsplat_importable():
            raise RuntimeError(f"RenderOptions.backend='gsplat': gsplat is not installed; {GSPLAT_HINT}")
        if device.type != "cuda":
            raise RuntimeError(
                f"RenderOptions.backend='gsplat' needs tensors on a CUDA device (got {device}); move the Gaussians "
                f"to the GPU or use backend='torch' / 'auto'; {GSPLAT_HINT}"
            )
        return "gsplat"
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and _gsplat_importable() else "torch"
    raise ValueError(f"RenderOptions.backend: unknown backend {backend!r}; expected 'auto', 'gsplat' or 'torch'")


def _check_inputs(
    gaussians: Gaussians, cameras: Cameras, background: torch.Tensor | None, check_values: bool
) -> torch.Tensor:
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"render: gaussians must be a gen4d Gaussians, got {type(gaussians).__name__}")
    if not isinstance(cameras, Cameras):
        raise TypeError(f"render: cameras must be gen4d Cameras, got {type(cameras).__name__}")
    for name, value in gaussians.as_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"gaussians.{name}: expected a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"gaussians.{name}: expected a floating-point tensor, got {value.dtype}")
        if value.dtype != gaussians.means.dtype or value.device != gaussians.means.device:
            raise ValueError(
                f"gaussians.{name}: dtype {value.dtype} differs from gaussians.means ({gaussians.means.dtype})"
                if value.dtype != gaussians.means.dtype
                else f"gaussians.{name}: device {value.device} differs from gaussians.means ({gaussians.means.device})"
            )
    gaussians.validate("gaussians", finite=check_values)
    if len(gaussians) == 0:
        raise ValueError("render: gaussians is empty (N = 0); expected at least one Gaussian")
    count = len(cameras)
    if count == 0:
        raise ValueError("render: cameras is empty; expected at least one camera")
    if gaussians.batched and gaussians.means.shape[0] != count:
        raise ValueError(
            f"render: batched gaussians hold {gaussians.means.shape[0]} sets but there are {count} cameras; "
            "expected one set per camera (or an unbatched set shared by all)"
        )
    device, dtype = gaussians.means.device, gaussians.means.dtype
    if background is None:
        background = torch.zeros(count, 3, device=device, dtype=dtype)
    else:
        background = torch.as_tensor(background, device=device, dtype=dtype)
        if background.shape == (3,):
            background = background.expand(count, 3)
        if background.shape != (count, 3):
            raise ValueError(f"background: expected shape (3,) or (C, 3) = ({count}, 3), got {tuple(background.shape)}")
        if check_values:
            check_finite("background", background)
    return background


def render(
    gaussians: Gaussians,
    cameras: Cameras,
    background: torch.Tensor | None = None,
    options: RenderOptions = RenderOptions(),
) -> RenderOutput:
    """Render ``gaussians`` (N, ...) or (C, N, ...) from ``cameras`` (C) over ``background``
    ((3,) or (C, 3), default black).

    Inputs are checked first (errors name the argument); ``options.check_values=False`` skips the
    checks that read values back to the host (the hot path of training, whose inputs were
    checked once at its entry point).
    """
    background = _check_inputs(gaussians, cameras, background, options.check_values)
    cameras = cameras.to(gaussians.means.device, gaussians.means.dtype)
    backend = resolve_backend(options.backend, gaussians.means.device)
    if backend == "gsplat":
        return render_gsplat(gaussians, cameras, background, options)
    return render_reference(gaussians, cameras, background, options)
