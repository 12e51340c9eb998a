"""gsplat backend: one ``gsplat.rasterization`` call (classic mode, RGB+ED) for all cameras."""

from __future__ import annotations

import torch

from gen4d.cameras import Cameras
from gen4d.gaussians.core import Gaussians
from gen4d.gaussians.sh import sh0_to_rgb
from gen4d.render.types import GSPLAT_HINT, RenderOptions, RenderOutput


def render_gsplat(
    gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, options: RenderOptions
) -> RenderOutput:
    """Backend of :func:`gen4d.render.render` (inputs already checked; ``background`` (C, 3))."""
    try:
        from gsplat import rasterization
    except ImportError as err:
        raise RuntimeError(f"gsplat could not be imported ({err}); {GSPLAT_HINT}") from err
    viewmats, Ks = cameras.world_to_camera, cameras.intrinsics
    if gaussians.batched:
        # One Gaussian set per camera: gsplat's leading batch dimension, one camera per batch entry.
        viewmats, Ks = viewmats[:, None], Ks[:, None]
    quats = torch.nn.functional.normalize(gaussians.quats, dim=-1)
    # Degree 0 has no view dependence: pass gsplat the colours (the same clamp(C0 sh0 + 0.5, 0)),
    # which spares it the camera-matrix inverse (a host-device sync), view directions and the SH kernels.
    degree = gaussians.sh_degree
    colors = gaussians.sh if degree > 0 else sh0_to_rgb(gaussians.sh[..., 0, :]).clamp_min(0.0)
    colors, alphas, meta = rasterization(
        means=gaussians.means,
        quats=quats,
        scales=gaussians.scales,
        opacities=gaussians.opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=cameras.width,
        height=cameras.height,
        near_plane=options.near,
        far_plane=options.far,
        eps2d=options.eps2d,
        sh_degree=degree if degree > 0 else None,
        packed=False,
        absgrad=options.absgrad,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )
    means2d, radii = meta["means2d"], meta["radii"]
    if gaussians.batched:
        # means2d stays (C, 1, N, 2): it must be the tensor gsplat used for its .grad to fill.
        colors, alphas, radii = colors[:, 0], alphas[:, 0], radii[:, 0]
    if radii.ndim == 2:  # older gsplat: one radius per Gaussian
        radii = radii[..., None].expand(-1, -1, 2)
    rgb = colors[..., :3] + (1.0 - alphas) * background[:, None, None, :]
    return RenderOutput(
        rgb=rgb,
        alpha=alphas,
        depth=colors[..., 3:4],
        means2d=means2d,
        radii=radii,
        visible=(radii > 0).all(-1),
        backend="gsplat",
    )
