"""gen4d's pure-PyTorch reference rasteriser (any device, differentiable by autograd).

Maths as gsplat's classic mode: EWA projection with a 0.3 px low-pass (projection.py), alpha
clamped to 0.999, contributions with alpha < 1/255 skipped, front-to-back by camera depth,
blending stops before the transmittance would drop to <= 1e-4, pixel centres at +0.5.
One difference: gsplat assigns Gaussians to tiles by a 3-sigma box, so it drops the faint
fringe (alpha between 1/255 and ~0.011) of opaque Gaussians beyond 3 sigma; this renderer
culls with the exact alpha >= 1/255 region, so its images do not depend on the tile size.

Memory bound
------------
Each camera's image is cut into ``tile_size``^2 tiles; each tile is paired with the Gaussians
whose alpha >= 1/255 box overlaps it, sorted by depth and padded to the longest list in a chunk
of tiles. Chunks hold at most ``max_elements`` pixel-Gaussian pairs (one tile at least), and
about 12 float tensors of that size are alive while a chunk is evaluated. With
``checkpoint=True`` (the default) a chunk's intermediates are recomputed in backward instead of
being kept, so peak memory is about ``12 * 4 bytes * max(max_elements, tile_size^2 * G_tile)``
(``G_tile`` = Gaussians overlapping the busiest tile) plus O(C * (N + H * W)) for the projected
Gaussians, the per-tile lists and the images - 200 MB for the default 2^22 pairs in float32.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from gen4d.cameras import Cameras
from gen4d.gaussians.core import Gaussians
from gen4d.render.core import RenderOptions, RenderOutput
from gen4d.render.projection import blend, gaussian_alpha, pixel_centres, project, radii_from_extents


def _shade_tiles(
    means2d: torch.Tensor,  # (G, 2)
    conics: torch.Tensor,  # (G, 3)
    opacities: torch.Tensor,  # (G,)
    features: torch.Tensor,  # (G, 4) rgb + depth
    lists: torch.Tensor,  # (T, L) indices into G, padded with G (a dummy transparent Gaussian)
    pixels: torch.Tensor,  # (T, P, 2) pixel centres
) -> torch.Tensor:  # (T, P, 5): rgb, depth sum, transmittance
    pad = lambda x: torch.cat([x, torch.zeros_like(x[:1])], 0)  # noqa: E731
    m, q, o, f = pad(means2d)[lists], pad(conics)[lists], pad(opacities)[lists], pad(features)[lists]
    delta = pixels[:, :, None, :] - m[:, None, :, :]  # (T, P, L, 2)
    alpha = gaussian_alpha(o[:, None, :], q[:, None, :, :], delta)  # (T, P, L)
    weights, transmittance = blend(alpha)
    accumulated = torch.einsum("tpl,tlf->tpf", weights, f)
    return torch.cat([accumulated, transmittance[..., None]], -1)


def _rasterize_camera(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    depths: torch.Tensor,
    extents: torch.Tensor,
    valid: torch.Tensor,
    width: int,
    height: int,
    options: RenderOptions,
) -> torch.Tensor:  # (H, W, 5)
    ts = options.tile_size
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    dtype, device = means2d.dtype, means2d.device
    index = torch.nonzero(valid).squeeze(-1)
    index = index[torch.argsort(depths[index].detach(), stable=True)]
    m, q, o = means2d[index], conics[index], opacities[index]
    feats = torch.cat([colors[index], depths[index, None]], -1)
    count = index.numel()

    # Tile x Gaussian overlap of the exact alpha >= 1/255 boxes with the tiles' pixel centres.
    with torch.no_grad():
        ext = extents[index]
        tx0 = torch.arange(tiles_x, device=device, dtype=dtype) * ts + 0.5
        ty0 = torch.arange(tiles_y, device=device, dtype=dtype) * ts + 0.5
        tx1, ty1 = tx0 + ts - 1, ty0 + ts - 1
        hit_x = (m[:, 0] + ext[:, 0] >= tx0[:, None]) & (m[:, 0] - ext[:, 0] <= tx1[:, None])  # (TX, G)
        hit_y = (m[:, 1] + ext[:, 1] >= ty0[:, None]) & (m[:, 1] - ext[:, 1] <= ty1[:, None])  # (TY, G)
        overlap = (hit_y[:, None, :] & hit_x[None, :, :]).reshape(tiles_y * tiles_x, count)
        per_tile = overlap.sum(-1)

    centres = pixel_centres(tiles_x * ts, tiles_y * ts, dtype=dtype, device=device)
    centres = centres.reshape(tiles_y, ts, tiles_x, ts, 2).permute(0, 2, 1, 3, 4).reshape(tiles_y * tiles_x, ts * ts, 2)

    outputs = []
    start, num_tiles = 0, tiles_x * tiles_y
    while start < num_tiles:
        # Grow the chunk while the padded pair count stays within the budget.
        stop, longest = start + 1, int(per_tile[start])
        while stop < num_tiles:
            longest_next = max(longest, int(per_tile[stop]))
            if (stop + 1 - start) * ts * ts * max(longest_next, 1) > options.max_elements:
                break
            stop, longest = stop + 1, longest_next
        chunk = slice(start, stop)
        if longest == 0:
            empty = torch.zeros(stop - start, ts * ts, 5, dtype=dtype, device=device)
            empty[..., 4] = 1.0
            outputs.append(empty)
        else:
            # Each tile's overlapping Gaussians in depth order, padded with the dummy index.
            flags = overlap[chunk]
            order = torch.argsort((~flags).to(torch.int8), dim=-1, stable=True)[:, :longest]
            lists = torch.where(torch.arange(longest, device=device) < per_tile[chunk, None], order, count)
            args = (m, q, o, feats, lists, centres[chunk])
            if options.checkpoint and torch.is_grad_enabled() and any(a.requires_grad for a in args):
                outputs.append(checkpoint(_shade_tiles, *args, use_reentrant=False))
            else:
                outputs.append(_shade_tiles(*args))
        start = stop
    image = torch.cat(outputs, 0).reshape(tiles_y, tiles_x, ts, ts, 5).permute(0, 2, 1, 3, 4)
    return image.reshape(tiles_y * ts, tiles_x * ts, 5)[:height, :width]


def render_reference(
    gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, options: RenderOptions
) -> RenderOutput:
    for name in ("tile_size", "max_elements"):
        if int(getattr(options, name)) <= 0:
            raise ValueError(f"RenderOptions.{name} must be > 0, got {getattr(options, name)}")
    proj = project(gaussians, cameras, options.near, options.far, options.eps2d)
    images = []
    for cam in range(len(cameras)):
        images.append(
            _rasterize_camera(
                proj.means2d[cam],
                proj.conics[cam],
                proj.opacities[cam],
                proj.colors[cam],
                proj.depths[cam],
                proj.extents[cam],
                proj.valid[cam],
                cameras.width,
                cameras.height,
                options,
            )
        )
    stacked = torch.stack(images)  # (C, H, W, 5)
    rgb_sum, depth_sum, transmittance = stacked[..., :3], stacked[..., 3:4], stacked[..., 4:5]
    alpha = 1.0 - transmittance
    rgb = rgb_sum + transmittance * background[:, None, None, :]
    depth = depth_sum / alpha.clamp_min(1e-10)
    return RenderOutput(
        rgb=rgb,
        alpha=alpha,
        depth=depth,
        means2d=proj.means2d,
        radii=radii_from_extents(proj.extents),
        visible=proj.valid,
        backend="torch",
    )
