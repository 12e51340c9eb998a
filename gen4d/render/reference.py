"""gen4d's pure-PyTorch reference rasteriser (any device, differentiable).

Maths as gsplat 1.5's classic mode: EWA projection with a 0.3 px low-pass (projection.py), alpha
clamped to 0.999, contributions with alpha < 1/255 skipped, front to back by camera depth,
blending stops before the Gaussian that would take the transmittance to <= 1e-4, pixel centres
at +0.5, expected depth = sum(w z) / alpha. (gsplat also skips a negative exponent, which cannot
happen for the positive definite conics of projection.py; a rounding error below 0 at a
Gaussian's centre is evaluated as is here.)
Culling is conservative around the exact alpha >= 1/255 ellipse of each Gaussian and the
per-pixel test is exact, so the image does not depend on ``tile_size`` or ``max_elements`` (up
to float rounding). gsplat 1.5 bounds Gaussians by an opacity-aware box of
``min(3.33, sqrt(2 ln(255 o)))`` sigma, the same region for any opacity below ~1, so both see
the same Gaussians at every pixel.

How it works
------------
1. Project every Gaussian into every camera (:func:`gen4d.render.projection.project`).
2. Pair every visible (camera, Gaussian) "splat" with the ``tile_size``^2 tiles its alpha >= 1/255
   ellipse touches (exact x extent of the ellipse in each band of tile rows), in depth order:
   one sort of all pairs of all cameras.
3. Sort the non-empty tiles by list length and cut them into chunks of tiles.
4. Each chunk walks its lists in slabs of 32 splats: all (tile, pixel, splat) alphas of a slab at
   once - the exponent is one matmul, as it is a quadratic in the pixel offset - blended with a
   running product that continues from slab to slab. Tiles leave the chunk once all their pixels
   stopped (transmittance <= 1e-4) or their lists ended, so hidden splats behind opaque surfaces
   cost little. The backward pass is written by hand (:class:`_RasterizeTiles`, gsplat's
   derivatives), walks the slabs back to front and recomputes each slab instead of storing it.

Memory bound
------------
A slab holds at most ``max_elements`` pixel x splat pairs (one tile of ``tile_size^2`` pixels x 32
splats at least) and about 14 tensors of that size are alive while it is evaluated (forward or
backward), so peak memory is about ``14 * itemsize * max(max_elements, 32 * tile_size^2)`` -
235 MB for the default 2^22 pairs in float32 (on the CPU slabs are kept to 2^18 pairs, 15 MB) -
plus O(C * (N + H * W)) for the projected Gaussians and the images, one float per pixel and slab
for the transmittances carried between slabs, and about 40 bytes per tile-splat pair for the
sorted lists. With ``checkpoint=False``
every slab's intermediates (2 tensors of the slab's size) are kept for backward instead, which
saves the recomputation at the cost of memory proportional to all pairs evaluated.
"""

from __future__ import annotations

import math

import torch

from gen4d.cameras import Cameras
from gen4d.gaussians.core import Gaussians
from gen4d.render.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_STOP, project, radii_from_extents
from gen4d.render.types import RenderOptions, RenderOutput

_CULL_MARGIN = 1e-3
"""Pixels of slack in the conservative tile culling (the per-pixel test stays exact)."""
_SLAB = 32
"""Splats of each tile's list evaluated per step; tiles leave once all their pixels stopped."""
_CPU_CHUNK_ELEMENTS = 1 << 18
"""On the CPU chunks stay below this many pairs (cache-sized; faster than bigger chunks)."""
_FEATURES = 5
"""Per-splat blended features: r, g, b, depth and 1 (whose blend is the accumulated alpha)."""


# ---------------------------------------------------------------------------------------
# Tile lists
# ---------------------------------------------------------------------------------------
def _tile_pairs(
    means2d: torch.Tensor,  # (S, 2)
    conics: torch.Tensor,  # (S, 3)
    opacities: torch.Tensor,  # (S,)
    cam: torch.Tensor,  # (S,) camera of each splat
    width: int,
    height: int,
    tile_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(splat, tile) pairs: the tiles whose pixel-centre rectangle the splat's alpha >= 1/255
    ellipse touches (conservatively: a little slack, never less).

    The ellipse ``0.5 d^T [[a, b], [b, c]] d <= ln(255 o)`` is cut into the bands of tile rows;
    in each band its x extent is exact (the boundary's right / left halves are concave /
    convex in y), so only touched tiles are listed. Tile ids are global:
    ``cam * tiles_per_camera + row * tiles_x + col``; pairs come out in splat order (the
    caller sorts splats by depth).
    """
    ts = tile_size
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    device = means2d.device
    f64 = lambda x: x.to(torch.float64)  # noqa: E731  (the culling geometry in float64)
    mx, my = f64(means2d[:, 0]), f64(means2d[:, 1])
    qa, qb, qc = f64(conics[:, 0]), f64(conics[:, 1]), f64(conics[:, 2])
    limit = torch.log(f64(opacities) / ALPHA_THRESHOLD).clamp_min(0.0)
    limit = limit * (1 + 1e-6) + 1e-9
    det = (qa * qc - qb * qb).clamp_min(1e-300)
    ext_x = torch.sqrt(2 * limit * qc / det) + _CULL_MARGIN
    ext_y = torch.sqrt(2 * limit * qa / det) + _CULL_MARGIN
    # Pixel rows whose centre (v + 0.5) is within the ellipse's y extent -> tile rows.
    v0 = torch.ceil(my - ext_y - 0.5).clamp_min(0)
    v1 = torch.minimum(torch.floor(my + ext_y - 0.5), torch.full_like(my, height - 1))
    ty0 = torch.div(v0.long(), ts, rounding_mode="floor")
    rows = torch.where(v0 <= v1, torch.div(v1.long(), ts, rounding_mode="floor") - ty0 + 1, 0)
    band_splat = torch.repeat_interleave(torch.arange(mx.shape[0], device=device), rows)
    if band_splat.numel() == 0:
        return band_splat, band_splat.clone()
    first = torch.cumsum(rows, 0) - rows
    ty = ty0[band_splat] + torch.arange(band_splat.numel(), device=device) - first[band_splat]

    # The band's pixel-centre rows, relative to the mean and clipped to the ellipse.
    mx, my, qa, qb, qc, limit, ext_x, ext_y = (x[band_splat] for x in (mx, my, qa, qb, qc, limit, ext_x, ext_y))
    det = (qa * qc - qb * qb).clamp_min(1e-300)
    lo = torch.maximum(ty * ts + 0.5 - my, -ext_y)
    hi = torch.minimum(torch.clamp_max(ty * ts + ts - 0.5, height - 0.5) - my, ext_y)

    def boundary(dy, sign):  # x offset of the ellipse boundary at height dy (sign +1 right, -1 left)
        root = torch.sqrt(torch.clamp_min(2 * qa * limit - det * dy * dy, 0.0))
        return (-qb * dy + sign * root) / qa

    turn = qb * (ext_x - _CULL_MARGIN) / qc  # height of the leftmost point; the rightmost is at -turn
    x_hi = mx + boundary(torch.minimum(torch.maximum(-turn, lo), hi), 1.0) + _CULL_MARGIN
    x_lo = mx + boundary(torch.minimum(torch.maximum(turn, lo), hi), -1.0) - _CULL_MARGIN
    u0 = torch.ceil(x_lo - 0.5).clamp_min(0)
    u1 = torch.minimum(torch.floor(x_hi - 0.5), torch.full_like(x_hi, width - 1))
    tx0 = torch.div(u0.long(), ts, rounding_mode="floor")
    cols = torch.where((u0 <= u1) & (lo <= hi), torch.div(u1.long(), ts, rounding_mode="floor") - tx0 + 1, 0)
    pair_band = torch.repeat_interleave(torch.arange(cols.shape[0], device=device), cols)
    first = torch.cumsum(cols, 0) - cols
    tx = tx0[pair_band] + torch.arange(pair_band.numel(), device=device) - first[pair_band]
    splat = band_splat[pair_band]
    tile = cam[splat] * (tiles_x * tiles_y) + ty[pair_band] * tiles_x + tx
    return splat, tile


def _plan_chunks(counts: list[int], pixels: int, max_elements: int, slab: int) -> list[tuple[int, int]]:
    """Cut tiles sorted by decreasing list length into [start, stop) chunks whose slabs
    (tiles x pixels x at most ``slab`` splats) stay within the pair budget (one tile at least)."""
    chunks, start = [], 0
    while start < len(counts):
        stop = min(len(counts), start + max(1, max_elements // (pixels * min(slab, counts[start]))))
        chunks.append((start, stop))
        start = stop
    return chunks


# ---------------------------------------------------------------------------------------
# Per-chunk maths
# ---------------------------------------------------------------------------------------
# Columns of the per-splat table gathered for every chunk.
_MX, _MY, _QA, _QB, _QC, _OPACITY = range(6)
_COLUMNS = 6 + _FEATURES


def _limits(dtype: torch.dtype) -> dict[str, float]:
    """Thresholds as exact values of ``dtype`` for F.threshold's strict ``x > threshold`` test."""
    tensor = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    return {
        # alpha >= 1/255  <=>  alpha > the largest value below 1/255
        "alpha_below": float(torch.nextafter(tensor(ALPHA_THRESHOLD), tensor(-math.inf))),
        # alpha < 0.999 (not clamped)  <=>  -alpha > -0.999
        "neg_max": float(tensor(-MAX_ALPHA)),
    }


def _coefficients(p: torch.Tensor, centre_x: torch.Tensor, centre_y: torch.Tensor):
    """The exponent sigma at a pixel is a quadratic in the pixel's offset (lx, ly) from its
    tile's centre: sigma = basis(lx, ly) . coeffs with basis = [1, lx, ly, lx^2, ly^2, lx ly].
    ``p`` (T, L, columns) gathered splats, centres (T,). Returns (ax, ay) = tile centre - mean
    (T, L) and the coefficients (T, 6, L) of log(o) - sigma, whose exp is o exp(-sigma)."""
    qa, qb, qc = p[..., _QA], p[..., _QB], p[..., _QC]
    ax = centre_x[:, None] - p[..., _MX]
    ay = centre_y[:, None] - p[..., _MY]
    c1 = qa * ax + qb * ay
    c2 = qb * ax + qc * ay
    # The dummy splat (o = 0) gets log(o) = -1e4: its alpha is cut to an exact 0.
    c0 = 0.5 * (c1 * ax + c2 * ay) - torch.log(p[..., _OPACITY]).clamp_min(-1e4)
    coeffs = torch.stack([c0, c1, c2, 0.5 * qa, 0.5 * qc, qb], 1).neg_()
    return ax, ay, coeffs


def _slab_forward(p, centre_x, centre_y, basis, limits, start):
    """Alphas of one slab: T tiles x P pixels x K consecutive splats of the tiles' lists.

    ``start`` (T, P) is each pixel's transmittance before the slab (0 once the pixel stopped).
    Returns alpha (T, P, K) (o exp(-sigma) clamped to 0.999, 0 below 1/255 and from where the
    transmittance stop hits) and the transmittance buffer (T, P, K + 1): ``[..., :-1]`` before
    each splat, ``[..., 1:]`` after it. The running product continues the previous slab's, so
    the result does not depend on how lists are cut into slabs. In-place ops throughout: on the
    CPU every fresh large tensor costs page faults and every pass costs memory bandwidth.
    """
    _, _, coeffs = _coefficients(p, centre_x, centre_y)
    # sigma >= 0 for the positive definite conics project() makes (gsplat's sigma < 0 skip
    # never fires for them); rounding a hair below 0 at a Gaussian's centre is harmless here.
    # Clamping the exponent at -80 keeps exp's results normal floats (subnormals are ~20x
    # slower on CPUs); exp(-80) is far below the 1/255 cut either way.
    alpha = torch.matmul(basis, coeffs).clamp_min_(-80.0).exp_()  # o exp(-sigma)
    torch.nn.functional.threshold_(alpha, limits["alpha_below"], 0.0).clamp_max_(MAX_ALPHA)
    T, P, K = alpha.shape
    trans = torch.empty(T, P, K + 1, dtype=alpha.dtype, device=alpha.device)
    trans[..., 0] = start
    torch.sub(torch.ones((), dtype=alpha.dtype, device=alpha.device), alpha, out=trans[..., 1:])
    trans.cumprod_(-1)
    after = trans[..., 1:]
    if bool(((after[..., -1] <= TRANSMITTANCE_STOP) & (start > 0)).any()):
        # A pixel stops before the splat that would take its transmittance to <= 1e-4.
        alpha.mul_(torch.gt(after, TRANSMITTANCE_STOP, out=torch.empty_like(alpha)))
    return alpha, trans


def _slab_end(trans: torch.Tensor) -> torch.Tensor:
    """(T, P) transmittance carried to the next slab: 0 for pixels that stopped."""
    last = trans[..., -1]
    return last * (last > TRANSMITTANCE_STOP)


class _RasterizeTiles(torch.autograd.Function):
    """Blend sorted splats into tiles: returns (tiles, pixels, 5) = rgb sum, depth sum, alpha.

    Each chunk of tiles walks its depth-sorted lists in slabs of ``plan["slab"]`` splats and
    drops the tiles whose pixels all stopped (transmittance <= 1e-4) or whose lists ended, so
    opaque scenes skip the splats hidden behind saturated pixels. Gradients flow to the
    per-splat table (means2d, conics, opacity, rgb, depth); the tile plan is constant. The
    backward pass walks the slabs back to front, recomputing each one (or using the kept
    intermediates), with the same derivatives as gsplat's CUDA backward.
    """

    @staticmethod
    def forward(ctx, table, plan, keep_intermediates):
        out = torch.zeros(plan["num_tiles"], plan["pixels"], _FEATURES, dtype=table.dtype, device=table.device)
        padded = torch.cat([table, torch.zeros_like(table[:1])], 0)  # a transparent dummy splat pads the lists
        limits, K = _limits(table.dtype), plan["slab"]
        for chunk in plan["chunks"]:
            count = chunk["tiles"].shape[0]
            acc = torch.zeros(count, plan["pixels"], _FEATURES, dtype=table.dtype, device=table.device)
            carry = torch.ones(count, plan["pixels"], dtype=table.dtype, device=table.device)
            active = torch.arange(count, device=table.device)
            chunk["slabs"] = []
            for first in range(0, chunk["lists"].shape[1], K):
                p = padded[chunk["lists"][active, first : first + K]]  # (T, K, columns)
                start = carry[active]
                alpha, trans = _slab_forward(p, chunk["cx"][active], chunk["cy"][active], plan["basis"], limits, start)
                if keep_intermediates:
                    weights = alpha * trans[..., :-1]
                    chunk["slabs"].append((first, active, start, (alpha, trans)))
                else:
                    weights = alpha.mul_(trans[..., :-1])
                    chunk["slabs"].append((first, active, start, None))
                acc.index_add_(0, active, torch.bmm(weights, p[..., 6:].contiguous()))
                end = _slab_end(trans)
                carry[active] = end
                del p, alpha, trans, weights
                alive = (chunk["counts"][active] > first + K) & (end > 0).any(-1)
                active = active[alive]
                if active.numel() == 0:
                    break
            out[chunk["tiles"]] = acc
        ctx.plan = plan
        ctx.save_for_backward(table)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (table,) = ctx.saved_tensors
        plan, basis, K = ctx.plan, ctx.plan["basis"], ctx.plan["slab"]
        padded = torch.cat([table, torch.zeros_like(table[:1])], 0)
        limits = _limits(table.dtype)
        one = torch.ones((), dtype=table.dtype, device=table.device)
        grad = torch.zeros_like(padded)
        for chunk in plan["chunks"]:
            grad_tiles = grad_out[chunk["tiles"]]  # (T, P, 5)
            # sum over later slabs of w_j g_j, per pixel
            later = torch.zeros(grad_tiles.shape[:2], dtype=table.dtype, device=table.device)
            for index in reversed(range(len(chunk["slabs"]))):
                first, active, start, kept = chunk["slabs"][index]
                chunk["slabs"][index] = (first, active, start, None)  # kept intermediates serve one backward
                lists = chunk["lists"][active, first : first + K]
                p = padded[lists]
                if kept is not None:
                    alpha, trans = kept
                else:
                    alpha, trans = _slab_forward(p, chunk["cx"][active], chunk["cy"][active], basis, limits, start)
                before = trans[..., :-1]
                g = grad_tiles[active]  # (T, P, 5)
                features = p[..., 6:].contiguous()
                grad_w = torch.bmm(g, features.transpose(1, 2))  # (T, P, K) dLoss/dweight
                weights = alpha * before
                grad_table = torch.empty(p.shape, dtype=p.dtype, device=p.device)
                grad_table[..., 6:] = torch.bmm(weights.transpose(1, 2), g)
                # dLoss/dalpha_i = T_i g_i - S_i / (1 - alpha_i) with S_i = sum_{j > i} w_j g_j.
                suffix = weights.mul_(grad_w).cumsum_(-1)
                total = suffix[..., -1].clone()
                torch.sub((total + later[active])[..., None], suffix, out=suffix)
                later.index_add_(0, active, total)
                # dalpha/dsigma = -alpha where the splat contributes unclamped, else 0 (clamp_max's
                # and gsplat's rule; an alpha of exactly 0.999 counts as clamped).
                dalpha_dsigma = torch.nn.functional.threshold_(alpha.neg(), limits["neg_max"], 0.0)
                suffix.div_(torch.sub(one, alpha, out=alpha))
                del alpha
                grad_sigma = grad_w.mul_(before).sub_(suffix).mul_(dalpha_dsigma)
                del suffix, dalpha_dsigma, weights, trans, before
                moments = torch.matmul(basis.transpose(0, 1), grad_sigma)  # (T, 6, K)
                del grad_sigma
                s0, sx, sy, sxx, syy, sxy = moments.unbind(1)
                ax, ay, _ = _coefficients(p, chunk["cx"][active], chunk["cy"][active])
                qa, qb, qc, o = p[..., _QA], p[..., _QB], p[..., _QC], p[..., _OPACITY]
                # Sums over the pixels of dLoss/dsigma times dx, dy, ... with dx = ax + lx, dy = ay + ly.
                sum_dx, sum_dy = ax * s0 + sx, ay * s0 + sy
                grad_table[..., _MX] = -(qa * sum_dx + qb * sum_dy)
                grad_table[..., _MY] = -(qb * sum_dx + qc * sum_dy)
                grad_table[..., _QA] = 0.5 * (ax * (ax * s0 + 2 * sx) + sxx)
                grad_table[..., _QB] = ax * (ay * s0 + sy) + ay * sx + sxy
                grad_table[..., _QC] = 0.5 * (ay * (ay * s0 + 2 * sy) + syy)
                # alpha = o exp(-sigma): dalpha/do = alpha / o = -(dalpha/dsigma) / o.
                grad_table[..., _OPACITY] = -s0 / torch.where(o > 0, o, torch.ones_like(o))
                grad.index_add_(0, lists.reshape(-1), grad_table.reshape(-1, _COLUMNS))
        return grad[:-1], None, None


# ---------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------
def render_reference(
    gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, options: RenderOptions
) -> RenderOutput:
    """Backend of :func:`gen4d.render.render` (inputs already checked; ``background`` (C, 3))."""
    for name in ("tile_size", "max_elements"):
        if int(getattr(options, name)) <= 0:
            raise ValueError(f"RenderOptions.{name} must be > 0, got {getattr(options, name)}")
    proj = project(gaussians, cameras, options.near, options.far, options.eps2d)
    C, N = proj.valid.shape
    W, H, ts = cameras.width, cameras.height, int(options.tile_size)
    tiles_x, tiles_y = -(-W // ts), -(-H // ts)
    device, dtype = proj.means2d.device, proj.means2d.dtype

    with torch.no_grad():
        splats = torch.nonzero(proj.valid.reshape(-1)).squeeze(-1)
        splats = splats[torch.argsort(proj.depths.detach().reshape(-1)[splats], stable=True)]
        pair_splat, pair_tile = _tile_pairs(
            proj.means2d.detach().reshape(-1, 2)[splats],
            proj.conics.detach().reshape(-1, 3)[splats],
            proj.opacities.detach().reshape(-1)[splats],
            torch.div(splats, N, rounding_mode="floor"),
            W, H, ts,
        )  # fmt: skip
        num_tiles = C * tiles_x * tiles_y
        # Stable sort by tile keeps each tile's list in depth order.
        pair_tile, order = torch.sort(pair_tile, stable=True)
        pair_splat = pair_splat[order]
        counts = torch.bincount(pair_tile, minlength=num_tiles)
        starts = torch.cumsum(counts, 0) - counts
        busy = torch.nonzero(counts).squeeze(-1)
        busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]
        busy_counts = counts[busy].tolist()
        # Pixel offsets from the tile centre, row-major within the tile.
        offsets = torch.arange(ts, device=device, dtype=dtype) - 0.5 * (ts - 1)
        ly, lx = (x.reshape(-1) for x in torch.meshgrid(offsets, offsets, indexing="ij"))
        plan = {
            "num_tiles": num_tiles,
            "pixels": ts * ts,
            "basis": torch.stack([torch.ones_like(lx), lx, ly, lx * lx, ly * ly, lx * ly], -1),  # (P, 6)
            "chunks": [],
        }
        budget = int(options.max_elements)
        if device.type == "cpu":
            budget = min(budget, _CPU_CHUNK_ELEMENTS)
        slab = _SLAB
        plan["slab"] = slab
        dummy = splats.numel()
        last = max(pair_splat.numel() - 1, 0)
        for start, stop in _plan_chunks(busy_counts, ts * ts, budget, slab):
            tiles = busy[start:stop]
            slots = torch.arange(busy_counts[start], device=device)
            index = starts[tiles, None] + slots
            lists = torch.where(slots < counts[tiles, None], pair_splat[index.clamp_max(last)], dummy)
            local = tiles % (tiles_x * tiles_y)
            plan["chunks"].append({
                "tiles": tiles,
                "lists": lists,
                "counts": counts[tiles],
                # Tile centres in pixel coordinates (pixel centres sit at +0.5).
                "cx": (local % tiles_x * ts).to(dtype) + 0.5 * ts,
                "cy": (torch.div(local, tiles_x, rounding_mode="floor") * ts).to(dtype) + 0.5 * ts,
            })  # fmt: skip

    # One row per splat: mean (2), conic (3), opacity, then the blended features r, g, b, depth, 1.
    ones = torch.ones_like(proj.depths[..., None])
    table = torch.cat(
        [proj.means2d, proj.conics, proj.opacities[..., None], proj.colors, proj.depths[..., None], ones], -1
    ).reshape(C * N, _COLUMNS)[splats]
    keep = not options.checkpoint and torch.is_grad_enabled() and table.requires_grad
    tiles_out = _RasterizeTiles.apply(table, plan, keep)
    image = tiles_out.reshape(C, tiles_y, tiles_x, ts, ts, _FEATURES).permute(0, 1, 3, 2, 4, 5)
    image = image.reshape(C, tiles_y * ts, tiles_x * ts, _FEATURES)[:, :H, :W]
    rgb_sum, depth_sum, alpha = image[..., :3], image[..., 3:4], image[..., 4:5]
    rgb = rgb_sum + (1.0 - alpha) * background[:, None, None, :].to(dtype)
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
