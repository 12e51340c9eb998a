"""gsplat parity: the CUDA backend against gen4d's reference rasteriser.

* On any machine with gsplat importable: gen4d's projection and SH against gsplat's own
  PyTorch reference functions (``gsplat.cuda._torch_impl``, which run on the CPU).
* With CUDA and gsplat: forward outputs and gradients of ``render(backend='gsplat')`` against
  ``render(backend='torch')`` on random 256x256 scenes, unbatched and batched (one set per camera).
  The first gsplat call JIT-compiles its CUDA extension (about a minute).

Tolerances (float32 on both sides):
* images: |rgb / alpha diff| <= 1e-2 everywhere and <= 1e-4 on all but 0.1 % of the values, mean
  <= 1e-5. Both apply the same alpha >= 1/255 cut per pixel, but gsplat's fast ``__expf`` and the
  reference's exponent-as-matmul round differently, so a contribution sitting on the cut (alpha ~
  0.004) can flip on one side only; that is the 1e-2.
* depth (expected depth, divided by alpha): the same on pixels with alpha > 0.05, except a max of
  0.1 (a flipped contribution there moves the normalised depth by up to ~0.004 dz / 0.05).
* gradients w.r.t. means, log-scales, quaternions, opacity logits, SH colours and the 2D means:
  relative L2 error <= 2e-3 and cosine similarity >= 0.9999 per parameter group.
* radii: equal up to 1 pixel where both see the Gaussian; the reference's visible set is a subset
  of gsplat's (gsplat tests the frame with the rounded-up radius).
Scenes use opacity <= 0.35: gsplat 1.5 bounds a Gaussian by min(3.33, sqrt(2 ln(255 o))) sigma,
which equals the reference's exact alpha >= 1/255 box only while sqrt(2 ln(255 o)) <= 3.33
(o <= ~1); keeping far below that also keeps the transmittance stop out of play in these tests.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from gen4d.cameras import orbit
from gen4d.gaussians import Gaussians
from gen4d.gaussians.sh import eval_sh, num_sh_bases
from gen4d.render import RenderOptions, render
from gen4d.render.projection import project

HAVE_GSPLAT = importlib.util.find_spec("gsplat") is not None
needs_gsplat = pytest.mark.skipif(not HAVE_GSPLAT, reason="gsplat is not installed (pip install 'gen4d[cuda]')")
needs_cuda = pytest.mark.skipif(
    not (HAVE_GSPLAT and torch.cuda.is_available()), reason="needs a CUDA GPU and gsplat (pip install 'gen4d[cuda]')"
)

FIELDS = ("means", "log_scales", "quats", "opacity_logits", "sh")


def random_scene(
    n: int,
    seed: int,
    sh_degree: int = 1,
    batch: int | None = None,
    device="cpu",
    dtype=torch.float32,
    max_opacity: float = 0.35,
) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    lead = (batch,) if batch else ()
    u = lambda *s: torch.rand(*lead, *s, generator=gen, dtype=torch.float64)  # noqa: E731
    direction = torch.nn.functional.normalize(torch.randn(*lead, n, 3, generator=gen, dtype=torch.float64), dim=-1)
    means = direction * 0.6 * u(n, 1) ** (1 / 3)
    log_scales = -4.6 + 1.8 * u(n, 3)  # 0.01 .. 0.06 world units: about 1.5 .. 9 px sigma at 256 px
    quats = torch.randn(*lead, n, 4, generator=gen, dtype=torch.float64)
    opacity = 0.03 + (max_opacity - 0.03) * u(n)
    sh = torch.randn(*lead, n, num_sh_bases(sh_degree), 3, generator=gen, dtype=torch.float64) * 0.4
    g = Gaussians(means, log_scales, quats, torch.logit(opacity), sh)
    return g.to(device=device, dtype=dtype)


def cameras_256(count: int = 4, device="cpu", dtype=torch.float32):
    az = [17.0 + 360.0 * i / count for i in range(count)]
    el = [(-1) ** i * 15.0 for i in range(count)]
    return orbit(el, az, 2.0, 49.1, 256, 256, times=0.0).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------
# gsplat's PyTorch reference functions (CPU)
# ---------------------------------------------------------------------------------------
@needs_gsplat
def test_projection_matches_gsplat_torch_reference():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

    g = random_scene(400, seed=0, sh_degree=3, dtype=torch.float64)
    # Also some Gaussians outside the frustum (Jacobian clamp) and behind a camera.
    g = g.with_(means=torch.cat([g.means[:-20], g.means[-20:] * 4.0], 0))
    cams = cameras_256(3, dtype=torch.float64)
    ours = project(g, cams, near=0.01, far=1e10, eps2d=0.3)
    covars, _ = _quat_scale_to_covar_preci(torch.nn.functional.normalize(g.quats, dim=-1), g.scales, True, False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        g.means, covars, cams.world_to_camera, cams.intrinsics, 256, 256, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    front = depths > 0.01
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.means2d[front], means2d[front], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(ours.conics[front], conics[front], rtol=1e-10, atol=1e-12)
    # gsplat's PyTorch reference bounds by 3.33 sigma; ours is the exact opacity-aware box, never larger.
    assert bool((ours.extents <= radii + 1e-9).all())
    assert bool((ours.valid <= (radii > 0).all(-1)).all())
    # Colours: gsplat adds 0.5 and clamps at 0 in rasterization().
    dirs = g.means[None] - cams.centers[:, None]
    want = torch.clamp_min(_spherical_harmonics(3, dirs, g.sh[None].expand(3, -1, -1, -1)) + 0.5, 0.0)
    torch.testing.assert_close(ours.colors, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eval_sh(g.sh, torch.nn.functional.normalize(dirs[0], dim=-1)), want[0])


# ---------------------------------------------------------------------------------------
# CUDA parity
# ---------------------------------------------------------------------------------------
def _render_with_grads(g: Gaussians, cams, backend: str, weights):
    gg = g.map(lambda x: x.detach().clone().requires_grad_(True))
    out = render(gg, cams, torch.tensor([0.3, 0.5, 0.7], device=g.means.device), RenderOptions(backend=backend))
    out.means2d.retain_grad()
    wr, wa, wd = weights
    loss = (out.rgb * wr).sum() + (out.alpha * wa).sum() + 0.1 * (out.depth * wd).sum()
    loss.backward()
    grads = {name: getattr(gg, name).grad for name in FIELDS}
    grads["means2d"] = out.means2d_grad()
    return out, grads


def _assert_images_close(got: torch.Tensor, want: torch.Tensor, name: str, max_diff: float = 1e-2):
    diff = (got - want).detach().abs()
    assert float(diff.max()) <= max_diff, f"{name}: max difference {float(diff.max()):.2e}"
    assert float(diff.mean()) <= 1e-5, f"{name}: mean difference {float(diff.mean()):.2e}"
    frac = float((diff > 1e-4).float().mean())
    assert frac <= 1e-3, f"{name}: {frac:.2%} of the values differ by more than 1e-4"


def _assert_grads_close(got: torch.Tensor, want: torch.Tensor, name: str):
    got, want = got.double().flatten(), want.double().flatten()
    rel = float((got - want).norm() / want.norm())
    cos = float(torch.nn.functional.cosine_similarity(got, want, dim=0))
    assert rel <= 2e-3 and cos >= 0.9999, f"{name}: relative L2 error {rel:.2e}, cosine {cos:.6f}"


def _parity(g: Gaussians, cams):
    gen = torch.Generator().manual_seed(1)
    C = len(cams)
    weights = tuple(torch.randn(C, 256, 256, k, generator=gen).to(g.means.device) for k in (3, 1, 1))
    ref, ref_grads = _render_with_grads(g, cams, "torch", weights)
    gs, gs_grads = _render_with_grads(g, cams, "gsplat", weights)
    assert ref.backend == "torch" and gs.backend == "gsplat"
    assert float(ref.alpha.detach().max()) > 0.5, "the scene should cover the images"
    _assert_images_close(gs.rgb, ref.rgb, "rgb")
    _assert_images_close(gs.alpha, ref.alpha, "alpha")
    covered = (ref.alpha > 0.05) & (gs.alpha > 0.05)
    # A flipped contribution (alpha ~ 1/255) moves the expected depth by up to ~ 0.004 dz / alpha.
    _assert_images_close(gs.depth[covered], ref.depth[covered], "depth", max_diff=0.1)
    both = ref.visible & gs.visible
    assert bool((ref.visible <= gs.visible).all()), "the reference sees a Gaussian gsplat culls"
    assert int((gs.radii[both] - ref.radii[both]).abs().max()) <= 1
    for name in FIELDS:
        _assert_grads_close(gs_grads[name], ref_grads[name], name)
    _assert_grads_close(gs_grads["means2d"][both], ref_grads["means2d"][both], "means2d")


@pytest.mark.cuda
@needs_cuda
def test_gsplat_matches_reference_random_scene():
    g = random_scene(6000, seed=3, sh_degree=1, device="cuda")
    _parity(g, cameras_256(4, device="cuda"))


@pytest.mark.cuda
@needs_cuda
def test_gsplat_matches_reference_sh3():
    g = random_scene(3000, seed=4, sh_degree=3, device="cuda")
    _parity(g, cameras_256(2, device="cuda"))


@pytest.mark.cuda
@needs_cuda
def test_gsplat_matches_reference_batched_sets():
    """One Gaussian set per camera (deformed to each camera's time)."""
    g = random_scene(3000, seed=5, sh_degree=0, batch=3, device="cuda")
    _parity(g, cameras_256(3, device="cuda"))
