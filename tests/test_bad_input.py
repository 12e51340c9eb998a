"""Bad input fails early with an error that names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch

import gen4d.render.core as render_core
from gen4d.cameras import Cameras, diffusion4d_orbit, look_at, orbit, zero123pp_poses
from gen4d.gaussians import Gaussians, from_points, random_in_sphere
from gen4d.render import RenderOptions, render


def _gaussians(n: int = 5, k: int = 1) -> Gaussians:
    return Gaussians(
        torch.zeros(n, 3),
        torch.full((n, 3), -2.0),
        torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(),
        torch.zeros(n),
        torch.zeros(n, k, 3),
    )


def _cameras(count: int = 2) -> Cameras:
    return orbit(0.0, [float(30 * i) for i in range(count)], 2.0, 40.0, 16, 16)


def _render(g, cams=None, background=None, **options):
    return render(g, _cameras() if cams is None else cams, background, RenderOptions(backend="torch", **options))


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("means", torch.zeros(5, 2), r"gaussians\.means: expected shape \(N, 3\) or \(B, N, 3\), got \(5, 2\)"),
        ("means", torch.zeros(2, 2, 5, 3), r"gaussians\.means: expected shape .*got \(2, 2, 5, 3\)"),
        ("log_scales", torch.zeros(6, 3), r"gaussians\.log_scales: expected shape \(5, 3\), got \(6, 3\)"),
        ("quats", torch.zeros(5, 3), r"gaussians\.quats: expected shape \(5, 4\), got \(5, 3\)"),
        ("opacity_logits", torch.zeros(5, 1), r"gaussians\.opacity_logits: expected shape \(5,\), got \(5, 1\)"),
        ("sh", torch.zeros(5, 5, 3), r"gaussians\.sh: .*5 coefficients.*expected 1, 4, 9 or 16"),
        ("sh", torch.zeros(5, 4), r"gaussians\.sh: expected shape \(5, 'K', 3\), got \(5, 4\)"),
    ],
)
def test_wrong_gaussian_shapes(field, value, pattern):
    g = _gaussians().with_(**{field: value})
    with pytest.raises(ValueError, match=pattern):
        _render(g)


def test_mismatched_batch_sizes():
    g = _gaussians().map(lambda x: x[None].expand(3, *x.shape))
    with pytest.raises(ValueError, match=r"batched gaussians hold 3 sets but there are 2 cameras"):
        _render(g)
    mixed = g.with_(log_scales=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"gaussians\.log_scales: expected shape \(3, 5, 3\), got \(2, 5, 3\)"):
        _render(mixed, _cameras(3))
    with pytest.raises(ValueError, match=r"background: expected shape \(3,\) or \(C, 3\) = \(2, 3\), got \(3, 3\)"):
        _render(_gaussians(), background=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"background: expected shape \(3,\) or \(C, 3\) = \(2, 3\), got \(4,\)"):
        _render(_gaussians(), background=torch.zeros(4))


@pytest.mark.parametrize("field", ["means", "log_scales", "quats", "opacity_logits", "sh"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters(field, bad):
    g = _gaussians()
    value = getattr(g, field).clone()
    value.view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"gaussians\.{field}: 1 non-finite value\(s\) \(NaN or Inf\)"):
        _render(g.with_(**{field: value}))


def test_zero_gaussians_and_zero_cameras():
    with pytest.raises(ValueError, match=r"gaussians is empty \(N = 0\)"):
        _render(_gaussians(0))
    with pytest.raises(ValueError, match=r"cameras is empty"):
        _render(_gaussians(), _cameras()[torch.zeros(0, dtype=torch.long)])
    with pytest.raises(ValueError, match="count must be > 0"):
        random_in_sphere(0)
    with pytest.raises(ValueError, match="points is empty"):
        from_points(torch.zeros(0, 3))


def test_wrong_types_and_dtypes():
    with pytest.raises(TypeError, match="gaussians must be a gen4d Gaussians"):
        render({"means": torch.zeros(1, 3)}, _cameras())
    with pytest.raises(TypeError, match="cameras must be gen4d Cameras"):
        render(_gaussians(), torch.eye(4)[None])
    g = _gaussians()
    with pytest.raises(
        ValueError,
        match=r"gaussians\.log_scales: dtype torch\.float64 differs from gaussians\.means \(torch\.float32\)",
    ):
        _render(g.with_(log_scales=g.log_scales.double()))
    with pytest.raises(ValueError, match=r"gaussians\.means: expected a floating-point tensor, got torch\.int64"):
        _render(g.map(lambda x: x.long()))
    with pytest.raises(TypeError, match=r"gaussians\.means: expected a torch\.Tensor, got ndarray"):
        _render(g.with_(means=g.means.numpy()))


@pytest.mark.parametrize("field,value,pattern", [
    ("fx", torch.tensor([0.0, 20.0]), r"cameras\.fx: focal lengths must be > 0, got \[0\.0, 20\.0\]"),
    ("fy", torch.tensor([20.0, -1.0]), r"cameras\.fy: focal lengths must be > 0"),
    ("fx", torch.tensor([20.0]), r"cameras\.fx: expected shape \(2,\), got \(1,\)"),
    ("cy", torch.ones(2, 1), r"cameras\.cy: expected shape \(2,\), got \(2, 1\)"),
    ("world_to_camera", torch.eye(4)[:3][None].expand(2, 3, 4), r"cameras\.world_to_camera: expected shape \(C, 4, 4\), got \(2, 3, 4\)"),
    ("times", torch.tensor([0.0, 1.5]), r"cameras\.times: expected values in \[0, 1\]"),
    ("width", 0, r"cameras\.width/height: expected positive ints, got 0x16"),
])  # fmt: skip
def test_bad_cameras(field, value, pattern):
    cams = _cameras()
    parts = dict(
        world_to_camera=cams.world_to_camera,
        fx=cams.fx,
        fy=cams.fy,
        cx=cams.cx,
        cy=cams.cy,
        width=cams.width,
        height=cams.height,
        times=cams.times,
    )
    parts[field] = value
    with pytest.raises(ValueError, match=pattern):
        Cameras(**parts)


def test_non_finite_camera_matrix():
    cams = _cameras()
    w2c = cams.world_to_camera.clone()
    w2c[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"cameras\.world_to_camera: 1 non-finite"):
        Cameras(w2c, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height, cams.times)


def test_bad_pose_builders():
    with pytest.raises(ValueError, match=r"orbit: radius must be > 0"):
        orbit(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"orbit: fov_deg must be in \(0, 180\)"):
        orbit(0.0, 0.0, 2.0, 180.0)
    with pytest.raises(ValueError, match=r"orbit: azimuths_deg has 2 values; expected 1 or 3"):
        orbit([0.0, 1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"zero123pp_poses: version must be 'v1.1' or 'v1.2'"):
        zero123pp_poses("v2")
    with pytest.raises(ValueError, match=r"num_views must be >= 2"):
        diffusion4d_orbit(1)
    with pytest.raises(ValueError, match=r"eyes: expected shape \(C, 3\), got \(3,\)"):
        look_at(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"points: expected shape \(\*, 3\), got \(3,\)"):
        _cameras().project(torch.zeros(3))


@pytest.mark.parametrize("backend", ["cuda", "", "Torch"])
def test_unknown_backend(backend):
    with pytest.raises(
        ValueError, match=rf"RenderOptions\.backend: unknown backend {backend!r}; expected 'auto', 'gsplat' or 'torch'"
    ):
        render(_gaussians(), _cameras(), None, RenderOptions(backend=backend))


def test_bad_tiling_options():
    with pytest.raises(ValueError, match=r"RenderOptions\.tile_size must be > 0, got 0"):
        _render(_gaussians(), tile_size=0)
    with pytest.raises(ValueError, match=r"RenderOptions\.max_elements must be > 0, got -1"):
        _render(_gaussians(), max_elements=-1)


def test_explicit_gsplat_without_cuda(monkeypatch):
    """On a machine without gsplat or without a CUDA device, backend='gsplat' says how to get it."""
    options = RenderOptions(backend="gsplat")
    hint = r"pip install 'gen4d\[cuda\]'"
    monkeypatch.setattr(render_core, "_gsplat_importable", lambda: False)
    with pytest.raises(RuntimeError, match=rf"RenderOptions\.backend='gsplat': gsplat is not installed.*{hint}"):
        render(_gaussians(), _cameras(), None, options)
    # gsplat importable but the tensors live on the CPU.
    monkeypatch.setattr(render_core, "_gsplat_importable", lambda: True)
    with pytest.raises(
        RuntimeError, match=rf"RenderOptions\.backend='gsplat' needs tensors on a CUDA device \(got cpu\).*{hint}"
    ):
        render(_gaussians(), _cameras(), None, options)
    # 'auto' falls back to the torch reference on the CPU.
    out = render(_gaussians(), _cameras(), None, RenderOptions(backend="auto"))
    assert out.backend == "torch"
