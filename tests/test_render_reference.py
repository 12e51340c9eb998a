"""The pure-PyTorch reference rasteriser against a brute-force per-pixel evaluation.

The brute force below is written independently of gen4d.render: it projects every Gaussian
with plain 3x3 / 2x2 matrix algebra, evaluates every Gaussian at every pixel (no tiles, no
bounding boxes, no culling other than the near / far planes) and blends front to back with
gsplat's per-pixel loop (skip alpha < 1/255 or a negative exponent, clamp alpha to 0.999,
stop before the Gaussian that would take the transmittance to <= 1e-4). Autograd through it
gives the reference gradients for the rasteriser's own backward pass.
"""

from __future__ import annotations

import math

import pytest
import torch

from gen4d.cameras import Cameras, orbit
from gen4d.gaussians import Gaussians
from gen4d.gaussians.sh import eval_sh, num_sh_bases
from gen4d.render import RenderOptions, render

NEAR, FAR, EPS2D = 0.01, 1e10, 0.3


# ---------------------------------------------------------------------------------------
# Brute force
# ---------------------------------------------------------------------------------------
def _rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate vectors v (N, 3) by unit quaternions q (N, 4) (w, x, y, z): v' = q v q*."""
    w, u = q[:, :1], q[:, 1:]
    return v + 2.0 * torch.cross(u, torch.cross(u, v, dim=-1) + w * v, dim=-1)


def _brute_force_camera(g: Gaussians, cam: Cameras, background: torch.Tensor, stats: dict):
    """One camera, unbatched set. Returns rgb (H, W, 3), alpha (H, W, 1), depth (H, W, 1), means2d (N, 2);
    counts the pixel contributions clamped to 0.999 and the pixels that stopped early in ``stats``."""
    q = g.quats / g.quats.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=g.means.dtype).expand(len(g), 3, 3)
    # Columns of the rotation matrix = rotated basis vectors.
    rot = torch.stack([_rotate(q, eye[:, :, k]) for k in range(3)], dim=-1)
    s2 = torch.exp(2 * g.log_scales)
    cov3d = rot @ torch.diag_embed(s2) @ rot.transpose(-1, -2)
    R, t = cam.world_to_camera[0, :3, :3], cam.world_to_camera[0, :3, 3]
    p = g.means @ R.T + t
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    fx, fy, cx, cy = (float(v[0]) for v in (cam.fx, cam.fy, cam.cx, cam.cy))
    W, H = cam.width, cam.height
    lim_xp, lim_xn = (W - cx) / fx + 0.3 * 0.5 * W / fx, cx / fx + 0.3 * 0.5 * W / fx
    lim_yp, lim_yn = (H - cy) / fy + 0.3 * 0.5 * H / fy, cy / fy + 0.3 * 0.5 * H / fy
    in_range = (z > NEAR) & (z < FAR)
    zs = torch.where(in_range, z, torch.ones_like(z))
    tx = zs * torch.clamp(x / zs, -lim_xn, lim_xp)
    ty = zs * torch.clamp(y / zs, -lim_yn, lim_yp)
    J = torch.zeros(len(g), 2, 3, dtype=g.means.dtype)
    J[:, 0, 0], J[:, 0, 2] = fx / zs, -fx * tx / zs**2
    J[:, 1, 1], J[:, 1, 2] = fy / zs, -fy * ty / zs**2
    cov2d = J @ R @ cov3d @ R.T @ J.transpose(-1, -2) + EPS2D * torch.eye(2, dtype=g.means.dtype)
    conic = torch.linalg.inv(cov2d)
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    centre = -R.T @ t
    colours = eval_sh(g.sh, torch.nn.functional.normalize(g.means - centre, dim=-1))
    opacity = torch.sigmoid(g.opacity_logits)

    vv, uu = torch.meshgrid(torch.arange(H, dtype=g.means.dtype), torch.arange(W, dtype=g.means.dtype), indexing="ij")
    pix = torch.stack([uu + 0.5, vv + 0.5], -1).reshape(-1, 2)  # (HW, 2)
    T = torch.ones(pix.shape[0], dtype=g.means.dtype)
    done = torch.zeros(pix.shape[0], dtype=torch.bool)
    rgb = torch.zeros(pix.shape[0], 3, dtype=g.means.dtype)
    dep = torch.zeros(pix.shape[0], dtype=g.means.dtype)
    listed = torch.zeros(pix.shape[0], dtype=torch.long)  # Gaussians with alpha >= 1/255 per pixel
    for i in torch.argsort(z.detach()).tolist():
        if not bool(in_range[i]):
            continue
        d = pix - mean2d[i]
        sigma = (
            0.5 * (conic[i, 0, 0] * d[:, 0] ** 2 + conic[i, 1, 1] * d[:, 1] ** 2) + conic[i, 0, 1] * d[:, 0] * d[:, 1]
        )
        raw = opacity[i] * torch.exp(-sigma)
        alpha = torch.clamp(raw, max=0.999)
        take = (sigma >= 0) & (alpha >= 1.0 / 255.0) & ~done
        next_T = T * (1 - alpha)
        stop = take & (next_T <= 1e-4)
        stats["clamped"] = stats.get("clamped", 0) + int((take & ~stop & (raw > 0.999)).sum())
        stats["stopped"] = stats.get("stopped", 0) + int(stop.sum())
        listed = listed + ((sigma >= 0) & (alpha >= 1.0 / 255.0)).long()
        done = done | stop
        take = take & ~stop
        a = torch.where(take, alpha, torch.zeros_like(alpha))
        rgb = rgb + (a * T)[:, None] * colours[i]
        dep = dep + a * T * z[i]
        T = T * (1 - a)
    stats["longest"] = max(stats.get("longest", 0), int(listed.max()))
    alpha_img = (1 - T).reshape(H, W, 1)
    rgb = (rgb + T[:, None] * background).reshape(H, W, 3)
    depth = dep.reshape(H, W, 1) / alpha_img.clamp_min(1e-10)
    return rgb, alpha_img, depth, mean2d


def brute_force(g: Gaussians, cams: Cameras, background: torch.Tensor, stats: dict | None = None):
    """All cameras; ``g`` unbatched or batched (one set per camera). Also returns the list of
    per-camera means2d tensors (retain_grad() called on them)."""
    stats = {} if stats is None else stats
    outs, means2d = [], []
    for c in range(len(cams)):
        gc = g.map(lambda x, c=c: x[c]) if g.batched else g
        rgb, alpha, depth, m2d = _brute_force_camera(gc, cams[c], background[c], stats)
        m2d.retain_grad()
        outs.append((rgb, alpha, depth))
        means2d.append(m2d)
    rgb, alpha, depth = (torch.stack(v) for v in zip(*outs))
    return rgb, alpha, depth, means2d


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------
def make_scene(
    n: int,
    seed: int,
    sh_degree: int = 1,
    batch: int | None = None,
    dtype=torch.float64,
    opacity=(0.05, 0.95),
    scale=(-3.2, -1.8),
) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if batch else ()
    u = lambda *s: torch.rand(*lead, *s, generator=gen, dtype=dtype)  # noqa: E731
    means = (u(n, 3) * 2 - 1) * 0.6
    log_scales = scale[0] + (scale[1] - scale[0]) * u(n, 3)
    quats = torch.randn(*lead, n, 4, generator=gen, dtype=dtype)
    op = opacity[0] + (opacity[1] - opacity[0]) * u(n)
    sh = torch.randn(*lead, n, num_sh_bases(sh_degree), 3, generator=gen, dtype=dtype) * 0.3
    return Gaussians(means, log_scales, quats, torch.logit(op), sh)


def add_special_gaussians(g: Gaussians) -> Gaussians:
    """Append a large Gaussian straddling the image border from outside the frustum (exercises
    the Jacobian clamp), one behind the second camera, a nearly opaque one at the origin (the
    cameras look at it and odd image sizes put it on a pixel centre: exercises the 0.999 clamp)
    and an almost opaque stack (exercises the transmittance stop)."""
    dt = g.means.dtype
    extra_means = torch.tensor(
        [
            [1.6, 0.2, 0.1],
            [0.0, -2.6, 0.0],
            [0.0, 0.0, 0.0],
            [0.05, 0.1, 0.02],
            [0.05, 0.2, 0.02],
            [0.05, 0.3, 0.03],
            [0.06, 0.35, 0.01],
        ],
        dtype=dt,
    )
    extra_scales = torch.log(
        torch.tensor(
            [
                [0.5, 0.3, 0.4],
                [0.2, 0.2, 0.2],
                [0.15, 0.15, 0.15],
                [0.12, 0.1, 0.1],
                [0.1, 0.12, 0.1],
                [0.1, 0.1, 0.12],
                [0.11, 0.1, 0.1],
            ],
            dtype=dt,
        )
    )
    extra_quats = torch.tensor([[0.9, 0.1, -0.3, 0.2]] + [[1.0, 0.0, 0.0, 0.0]] * 6, dtype=dt)
    extra_opacity = torch.logit(torch.tensor([0.7, 0.9, 0.99999, 0.9999, 0.9999, 0.9999, 0.995], dtype=dt))
    k = g.sh.shape[-2]
    extra_sh = torch.linspace(-1, 1, 7 * k * 3, dtype=dt).reshape(7, k, 3)
    if g.batched:
        B = g.means.shape[0]
        grow = lambda a, b: torch.cat([a, b.unsqueeze(0).expand(B, *b.shape)], 1)  # noqa: E731
    else:
        grow = lambda a, b: torch.cat([a, b], 0)  # noqa: E731
    return Gaussians(
        grow(g.means, extra_means),
        grow(g.log_scales, extra_scales),
        grow(g.quats, extra_quats),
        grow(g.opacity_logits, extra_opacity),
        grow(g.sh, extra_sh),
    )


def make_cameras(width=29, height=23, dtype=torch.float64) -> Cameras:
    # The second camera sits on -Y looking at +Y: the Gaussian at y = -2.6 is behind it.
    return orbit(
        [10.0, 0.0, -25.0],
        [30.0, 180.0, 250.0],
        [2.2, 2.3, 2.0],
        [50.0, 45.0, 60.0],
        width,
        height,
        times=[0.0, 0.5, 1.0],
    ).to(dtype=dtype)


def requires_grad(g: Gaussians) -> Gaussians:
    return g.map(lambda x: x.detach().clone().requires_grad_(True))


def _loss_weights(shape_rgb, seed=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    C, H, W, _ = shape_rgb
    return (
        torch.randn(C, H, W, 3, generator=gen, dtype=dtype),
        torch.randn(C, H, W, 1, generator=gen, dtype=dtype),
        torch.randn(C, H, W, 1, generator=gen, dtype=dtype),
    )


def _loss(rgb, alpha, depth, weights):
    wr, wa, wd = weights
    return (rgb * wr).sum() + (alpha * wa).sum() + 0.1 * (depth * wd).sum()


FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh")


def _compare_with_brute_force(g: Gaussians, cams: Cameras, options: RenderOptions, atol_fwd: float, rtol_grad: float):
    background = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0], [0.0, 0.5, 0.0]], dtype=g.means.dtype)
    background = background[: len(cams)]
    g_ref, g_bf = requires_grad(g), requires_grad(g)
    out = render(g_ref, cams, background, options)
    out.means2d.retain_grad()
    stats = {}
    rgb, alpha, depth, means2d_bf = brute_force(g_bf, cams, background, stats)

    # Make sure the scene exercises what it should: empty pixels, the alpha clamp, the early stop.
    assert float(alpha.detach().min()) < 0.01
    assert stats["clamped"] > 0 and stats["stopped"] > 0, stats
    torch.testing.assert_close(out.rgb, rgb, atol=atol_fwd, rtol=0)
    torch.testing.assert_close(out.alpha, alpha, atol=atol_fwd, rtol=0)
    torch.testing.assert_close(out.depth, depth, atol=atol_fwd * 10, rtol=atol_fwd)

    weights = _loss_weights(rgb.shape, dtype=g.means.dtype)
    _loss(out.rgb, out.alpha, out.depth, weights).backward()
    _loss(rgb, alpha, depth, weights).backward()
    for name in FIELDS:
        got, want = getattr(g_ref, name).grad, getattr(g_bf, name).grad
        assert got is not None, name
        assert float(want.abs().max()) > 0, name
        err = float((got - want).norm() / want.norm())
        assert err < rtol_grad, f"{name}: relative gradient error {err:.2e}"
    got_m2d = out.means2d_grad()
    want_m2d = torch.stack([m.grad for m in means2d_bf])
    visible = out.visible
    err = float((got_m2d[visible] - want_m2d[visible]).norm() / want_m2d[visible].norm())
    assert err < rtol_grad, f"means2d: relative gradient error {err:.2e}"
    # Gaussians the reference culls must not matter to the brute force either.
    assert float(want_m2d[~visible].abs().sum()) == 0.0


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sh_degree", [0, 3])
def test_matches_brute_force_float64(sh_degree):
    g = add_special_gaussians(make_scene(60, seed=sh_degree, sh_degree=sh_degree))
    _compare_with_brute_force(g, make_cameras(), RenderOptions(backend="torch", tile_size=8), 1e-10, 1e-8)


def test_matches_brute_force_float32():
    g = add_special_gaussians(make_scene(60, seed=7, sh_degree=1)).to(dtype=torch.float32)
    _compare_with_brute_force(g, make_cameras(dtype=torch.float32), RenderOptions(backend="torch"), 2e-5, 2e-4)


def dense_opaque_scene(seed: int = 0, dtype=torch.float64) -> Gaussians:
    """150 fairly opaque Gaussians packed in a small ball: pixel lists run to 100+ splats (several
    of the reference's 32-splat slabs) and most pixels stop early."""
    return make_scene(150, seed=seed, sh_degree=1, dtype=dtype, opacity=(0.3, 0.95), scale=(-2.6, -1.6)).with_(
        means=make_scene(150, seed=seed + 1, dtype=dtype).means * 0.5
    )


def test_dense_opaque_scene_matches_brute_force():
    g = dense_opaque_scene()
    cams = orbit([10.0, -30.0], [0.0, 135.0], 2.0, 30.0, 21, 17).to(dtype=torch.float64)
    background = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64).expand(2, 3)
    stats = {}
    g_bf = requires_grad(g)
    rgb, alpha, depth, _ = brute_force(g_bf, cams, background, stats)
    assert stats["stopped"] > 200, stats  # most covered pixels saturate...
    assert stats["longest"] > 100, stats  # ...and lists need several of the reference's slabs
    weights = _loss_weights(rgb.shape)
    _loss(rgb, alpha, depth, weights).backward()
    for tile_size in (4, 16):
        g_ref = requires_grad(g)
        out = render(g_ref, cams, background, RenderOptions(backend="torch", tile_size=tile_size))
        for got, want in ((out.rgb, rgb), (out.alpha, alpha), (out.depth, depth)):
            torch.testing.assert_close(got, want.detach(), atol=1e-10, rtol=1e-10)
        _loss(out.rgb, out.alpha, out.depth, weights).backward()
        for name in FIELDS:
            got, want = getattr(g_ref, name).grad, getattr(g_bf, name).grad
            err = float((got - want).norm() / want.norm())
            assert err < 1e-8, f"{name}: relative gradient error {err:.2e}"


def test_batched_matches_brute_force():
    g = add_special_gaussians(make_scene(40, seed=11, sh_degree=1, batch=3))
    _compare_with_brute_force(g, make_cameras(), RenderOptions(backend="torch", tile_size=4), 1e-10, 1e-8)


def test_checkpoint_off_same_gradients():
    g = add_special_gaussians(make_scene(50, seed=5))
    cams = make_cameras()
    grads = []
    for ckpt in (True, False):
        gg = requires_grad(g)
        out = render(gg, cams, None, RenderOptions(backend="torch", checkpoint=ckpt))
        _loss(out.rgb, out.alpha, out.depth, _loss_weights(out.rgb.shape)).backward()
        grads.append([getattr(gg, f).grad for f in FIELDS])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "tile_size,max_elements,dtype,tol",
    [(16, 1 << 22, torch.float64, 1e-12), (8, 1 << 22, torch.float64, 1e-12), (5, 1 << 22, torch.float64, 1e-12),
     (3, 1, torch.float64, 1e-12), (32, 700, torch.float64, 1e-12), (8, 64 * 3, torch.float64, 1e-12),
     (16, 1 << 22, torch.float32, 1e-5), (7, 300, torch.float32, 1e-5)],
)  # fmt: skip
def test_tiling_and_chunking_do_not_change_the_image(tile_size, max_elements, dtype, tol):
    """Only float rounding may change with the tiling (float32: the exponent is evaluated
    relative to the tile centre, so its rounding grows with the tile size)."""
    g = add_special_gaussians(make_scene(80, seed=2, sh_degree=2)).to(dtype=dtype)
    cams = make_cameras(dtype=dtype)
    outs, grads = [], []
    for options in (
        RenderOptions(backend="torch", tile_size=4),
        RenderOptions(backend="torch", tile_size=tile_size, max_elements=max_elements),
    ):
        gg = requires_grad(g)
        out = render(gg, cams, None, options)
        _loss(out.rgb, out.alpha, out.depth, _loss_weights(out.rgb.shape, dtype=dtype)).backward()
        outs.append(out)
        grads.append([getattr(gg, f).grad for f in FIELDS])
    base, out = outs
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(out, name), getattr(base, name), atol=tol, rtol=tol)
    torch.testing.assert_close(out.radii, base.radii, atol=0, rtol=0)
    torch.testing.assert_close(out.visible, base.visible, atol=0, rtol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=tol * 100, rtol=tol * 10)


def test_batched_equals_per_camera():
    g = add_special_gaussians(make_scene(50, seed=4, sh_degree=1, batch=3)).to(dtype=torch.float32)
    cams = make_cameras(dtype=torch.float32)
    gb = requires_grad(g)
    out = render(gb, cams, torch.tensor([0.2, 0.4, 0.6]), RenderOptions(backend="torch"))
    weights = _loss_weights(out.rgb.shape, dtype=torch.float32)
    _loss(out.rgb, out.alpha, out.depth, weights).backward()
    for c in range(len(cams)):
        gc = requires_grad(g.map(lambda x, c=c: x[c]))
        single = render(gc, cams[c], torch.tensor([0.2, 0.4, 0.6]), RenderOptions(backend="torch"))
        for name in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(single, name)[0], getattr(out, name)[c], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(single.radii[0], out.radii[c])
        wc = tuple(w[c : c + 1] for w in weights)
        _loss(single.rgb, single.alpha, single.depth, wc).backward()
        for name in FIELDS:
            torch.testing.assert_close(getattr(gc, name).grad, getattr(gb, name).grad[c], atol=1e-5, rtol=1e-4)


def test_gradcheck_float64_tiny_scene():
    g = make_scene(4, seed=1, sh_degree=1, opacity=(0.3, 0.8), scale=(-2.0, -1.4))
    cam = orbit(15.0, 20.0, 2.0, 40.0, 9, 8).to(dtype=torch.float64)
    options = RenderOptions(backend="torch", tile_size=4)

    def fn(*tensors):
        out = render(Gaussians(*tensors), cam, torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64), options)
        return out.rgb, out.alpha, out.depth

    inputs = tuple(getattr(g, f).clone().requires_grad_(True) for f in FIELDS)
    # fast_mode checks a random projection u^T J v of the whole Jacobian; the full check (one
    # backward per output value) runs on a 5x4 image.
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)
    cam = orbit(15.0, 20.0, 2.0, 20.0, 5, 4).to(dtype=torch.float64)
    assert float(fn(*inputs)[1].detach().min()) > 0.05  # every pixel covered
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_empty_view_and_background():
    """Gaussians all outside the view: the image is the background, alpha 0, depth 0."""
    g = make_scene(10, seed=0, dtype=torch.float32)
    g = g.with_(means=g.means + torch.tensor([0.0, 0.0, 30.0]))
    cams = make_cameras(dtype=torch.float32)
    out = render(g, cams, torch.tensor([0.25, 0.5, 0.75]), RenderOptions(backend="torch"))
    assert not bool(out.visible.any())
    torch.testing.assert_close(out.rgb, torch.tensor([0.25, 0.5, 0.75]).expand_as(out.rgb))
    assert float(out.alpha.abs().max()) == 0.0 and float(out.depth.abs().max()) == 0.0
    assert int(out.radii.abs().max()) == 0


def test_radii_cover_the_footprint():
    """Every pixel a Gaussian touches (alpha >= 1/255) lies within its radii box."""
    g = add_special_gaussians(make_scene(30, seed=9)).to(dtype=torch.float32)
    cams = make_cameras(dtype=torch.float32)
    out = render(g, cams, None, RenderOptions(backend="torch"))
    for c in range(len(cams)):
        single = out.radii[c]
        m2d = out.means2d.detach()[c]
        for i in torch.nonzero(out.visible[c]).squeeze(-1).tolist():
            only = g.index(torch.tensor([i]))
            img = render(only, cams[c], None, RenderOptions(backend="torch")).alpha[0, ..., 0]
            ys, xs = torch.nonzero(img > 0, as_tuple=True)
            if xs.numel() == 0:
                continue
            assert float((xs + 0.5 - m2d[i, 0]).abs().max()) <= float(single[i, 0]) + 1e-4
            assert float((ys + 0.5 - m2d[i, 1]).abs().max()) <= float(single[i, 1]) + 1e-4


def test_depth_of_a_flat_wall_is_its_distance():
    """An opaque wall of Gaussians at z = 1.5 in front of the camera renders depth 1.5."""
    xs = torch.linspace(-1.0, 1.0, 21)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    means = torch.cat([grid, torch.full((grid.shape[0], 1), 1.5)], -1)
    n = means.shape[0]
    g = Gaussians(
        means,
        torch.full((n, 3), math.log(0.08)),
        torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4),
        torch.full((n,), 4.0),
        torch.zeros(n, 1, 3),
    )
    cam = Cameras(
        torch.eye(4)[None],
        torch.tensor([20.0]),
        torch.tensor([20.0]),
        torch.tensor([8.0]),
        torch.tensor([8.0]),
        16,
        16,
        torch.tensor([0.0]),
    )
    out = render(g, cam, None, RenderOptions(backend="torch"))
    assert float(out.alpha.min()) > 0.999
    torch.testing.assert_close(out.depth, torch.full_like(out.depth, 1.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.5), atol=1e-3, rtol=0)
