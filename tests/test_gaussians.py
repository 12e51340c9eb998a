"""Gaussians dataclass, initialisers, spherical harmonics and the standard 3DGS PLY layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gen4d.gaussians import Gaussians, from_points, load_ply, quaternion_to_matrix, random_in_sphere, save_ply
from gen4d.gaussians.sh import C0, eval_sh, num_sh_bases, rgb_to_sh0, sh0_to_rgb


def _random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return Gaussians(r(n, 3), r(n, 3), r(n, 4), r(n), r(n, num_sh_bases(degree), 3))


def _standard_names(degree: int) -> list[str]:
    rest = 3 * (num_sh_bases(degree) - 1)
    return (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


# ---------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    g = _random_gaussians(257, degree, seed=degree)
    # Include awkward float32 values: subnormals, huge, negative zero.
    g.means[0] = torch.tensor([1e-40, -0.0, 3.4e38])
    path = save_ply(g, tmp_path / "sub" / "g.ply")
    back = load_ply(path)
    assert back.sh_degree == degree and len(back) == 257
    for name, value in g.as_dict().items():
        got = getattr(back, name)
        assert got.dtype == torch.float32 and got.shape == value.shape, name
        assert torch.equal(got.view(torch.int32), value.view(torch.int32)), f"{name} differs bitwise"


@pytest.mark.parametrize("degree", [0, 3])
def test_ply_header_is_the_standard_3dgs_layout(tmp_path, degree):
    g = _random_gaussians(5, degree)
    path = save_ply(g, tmp_path / "g.ply")
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1] == "format binary_little_endian 1.0"
    assert "element vertex 5" in header
    props = [line.split() for line in header if line.startswith("property")]
    assert all(p[1] == "float" for p in props), "every property must be float32"
    assert [p[2] for p in props] == _standard_names(degree)
    # Body: exactly N records of float32, no other elements.
    assert len(raw) - end == 5 * 4 * len(props)
    assert sum(line.startswith("element") for line in header) == 1


def test_ply_values_sit_in_the_documented_columns(tmp_path):
    """f_rest is channel-major (all red coefficients of degree >= 1, then green, then blue);
    scales are log-scales, opacity a logit, rot (w, x, y, z)."""
    g = _random_gaussians(3, 2)
    path = save_ply(g, tmp_path / "g.ply")
    raw = path.read_bytes()
    body = raw[raw.index(b"end_header\n") + len(b"end_header\n") :]
    names = _standard_names(2)
    table = np.frombuffer(body, dtype="<f4").reshape(3, len(names))
    col = {n: torch.from_numpy(table[:, i].copy()) for i, n in enumerate(names)}
    torch.testing.assert_close(torch.stack([col["x"], col["y"], col["z"]], -1), g.means, atol=0, rtol=0)
    for k in range(1, 9):
        for ch in range(3):
            torch.testing.assert_close(col[f"f_rest_{ch * 8 + (k - 1)}"], g.sh[:, k, ch], atol=0, rtol=0)
    for ch in range(3):
        torch.testing.assert_close(col[f"f_dc_{ch}"], g.sh[:, 0, ch], atol=0, rtol=0)
    torch.testing.assert_close(col["opacity"], g.opacity_logits, atol=0, rtol=0)
    torch.testing.assert_close(torch.stack([col[f"scale_{i}"] for i in range(3)], -1), g.log_scales, atol=0, rtol=0)
    torch.testing.assert_close(torch.stack([col[f"rot_{i}"] for i in range(4)], -1), g.quats, atol=0, rtol=0)
    assert float(torch.stack([col["nx"], col["ny"], col["nz"]]).abs().max()) == 0.0


def test_load_ply_written_by_another_tool(tmp_path):
    """A file written by hand (numpy + header text, extra property, different order) loads."""
    names = ["x", "y", "z", "opacity"] + [f"rot_{i}" for i in range(4)] + [f"scale_{i}" for i in range(3)]
    names += ["f_dc_0", "f_dc_1", "f_dc_2", "red"] + [f"f_rest_{i}" for i in range(9)]
    n = 4
    data = np.arange(n * len(names), dtype="<f4").reshape(n, len(names))
    header = "ply\nformat binary_little_endian 1.0\ncomment written by hand\nelement vertex 4\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = tmp_path / "other.ply"
    path.write_bytes(header.encode() + data.tobytes())
    g = load_ply(path)
    at = {name: torch.from_numpy(data[:, i].copy()) for i, name in enumerate(names)}
    assert g.sh_degree == 1
    torch.testing.assert_close(g.means[:, 1], at["y"])
    torch.testing.assert_close(g.quats[:, 0], at["rot_0"])
    torch.testing.assert_close(g.sh[:, 2, 1], at["f_rest_4"])  # green channel, second degree-1 coefficient
    torch.testing.assert_close(g.opacity_logits, at["opacity"])


def test_ply_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_ply(tmp_path / "missing.ply")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    with pytest.raises(ValueError, match="not a readable PLY"):
        load_ply(bad)
    points = tmp_path / "points.ply"
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    points.write_bytes(header.encode() + np.zeros(3, dtype="<f4").tobytes())
    with pytest.raises(ValueError, match="lacks 3DGS properties"):
        load_ply(points)
    batched = _random_gaussians(3, 0).map(lambda x: x[None].expand(2, *x.shape))
    with pytest.raises(ValueError, match="unbatched"):
        save_ply(batched, tmp_path / "batched.ply")


# ---------------------------------------------------------------------------------------
# Gaussians
# ---------------------------------------------------------------------------------------
def test_gaussians_views_and_helpers():
    g = _random_gaussians(10, 1)
    assert len(g) == 10 and not g.batched and g.sh_degree == 1
    torch.testing.assert_close(g.scales, torch.exp(g.log_scales))
    torch.testing.assert_close(g.opacities, torch.sigmoid(g.opacity_logits))
    assert g.rotations.shape == (10, 3, 3)
    sub = g.index(torch.tensor([1, 3]))
    torch.testing.assert_close(sub.means, g.means[[1, 3]])
    masked = g.index(g.opacity_logits > 0)
    assert len(masked) == int((g.opacity_logits > 0).sum())
    again = Gaussians.from_dict(g.as_dict())
    torch.testing.assert_close(again.sh, g.sh)
    with pytest.raises(ValueError, match="missing"):
        Gaussians.from_dict({"means": g.means})
    moved = g.with_(means=g.means + 1)
    torch.testing.assert_close(moved.means - 1, g.means)
    batched = g.map(lambda x: x[None].expand(4, *x.shape))
    assert batched.batched and len(batched) == 10 and batched.validate() is batched
    torch.testing.assert_close(batched.index(torch.tensor([2])).means, g.means[None, [2]].expand(4, 1, 3))
    torch.testing.assert_close(g.rgb, sh0_to_rgb(g.sh[:, 0]).clamp_min(0))


def test_quaternion_to_matrix():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(100, 4, generator=gen, dtype=torch.float64) * 3
    R = quaternion_to_matrix(q)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(100, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(100, dtype=torch.float64))
    # 90 degrees about +Z, (w, x, y, z) = (cos 45, 0, 0, sin 45): x -> y.
    Rz = quaternion_to_matrix(torch.tensor([math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]))
    torch.testing.assert_close(Rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(-q), R)  # q and -q are the same rotation


def test_from_points_and_random_in_sphere():
    pts = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 4.0]])
    g = from_points(pts, torch.tensor([[1.0, 0, 0]]).expand(4, 3), opacity=0.2)
    # 3-nearest-neighbour mean distance of the origin point: (1 + 2 + 4) / 3.
    assert float(g.scales[0, 0]) == pytest.approx(7 / 3, rel=1e-5)
    torch.testing.assert_close(g.opacities, torch.full((4,), 0.2))
    torch.testing.assert_close(g.rgb, torch.tensor([[1.0, 0, 0]]).expand(4, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(g.quats[:, 0], torch.ones(4))
    s = random_in_sphere(4000, radius=0.5, opacity=0.1, seed=3)
    assert len(s) == 4000 and s.sh_degree == 0
    radii = s.means.norm(dim=-1)
    assert float(radii.max()) <= 0.5 + 1e-6
    # Uniform in the ball: P(r < R/2) = 1/8.
    assert abs(float((radii < 0.25).float().mean()) - 0.125) < 0.02
    torch.testing.assert_close(s.opacities, torch.full((4000,), 0.1))
    torch.testing.assert_close(random_in_sphere(50, seed=1).means, random_in_sphere(50, seed=1).means)
    assert random_in_sphere(3, sh_degree=2).sh.shape == (3, 9, 3)


# ---------------------------------------------------------------------------------------
# Spherical harmonics
# ---------------------------------------------------------------------------------------
def _fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = torch.sqrt(1 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def test_sh_basis_is_orthonormal():
    """The 16 real SH basis functions of eval_sh are orthonormal on the sphere (checks every constant)."""
    dirs = _fibonacci_sphere(20000)
    k = 16
    # One-hot coefficients of 0.1 keep the result positive, so the +0.5 / clamp is undone exactly.
    sh = torch.zeros(k, 1, k, 3, dtype=torch.float64)
    sh[torch.arange(k), 0, torch.arange(k), :] = 0.1
    values = (eval_sh(sh, dirs[None])[..., 0] - 0.5) / 0.1  # (k, D)
    gram = values @ values.T * (4 * math.pi / dirs.shape[0])
    torch.testing.assert_close(gram, torch.eye(k, dtype=torch.float64), atol=2e-3, rtol=0)


def test_sh_sign_convention_and_degree0():
    # Degree 1 basis: -C1 y, C1 z, -C1 x (the 3DGS / gsplat convention).
    sh = torch.zeros(3, 4, 3)
    sh[0, 1], sh[1, 2], sh[2, 3] = 0.2, 0.2, 0.2
    out = eval_sh(sh, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    c1 = 0.4886025119029199
    torch.testing.assert_close(out[:, 0], torch.tensor([0.5 - 0.2 * c1, 0.5 + 0.2 * c1, 0.5 - 0.2 * c1]))
    rgb = torch.tensor([[0.0, 0.25, 1.0]])
    torch.testing.assert_close(sh0_to_rgb(rgb_to_sh0(rgb)), rgb)
    torch.testing.assert_close(eval_sh(rgb_to_sh0(rgb)[:, None, :], torch.tensor([[0.0, 0, 1]])), rgb)
    assert C0 == pytest.approx(1 / (2 * math.sqrt(math.pi)))
    # Negative colours are clamped at 0.
    assert float(eval_sh(torch.full((1, 1, 3), -10.0), torch.tensor([[0.0, 0, 1]])).max()) == 0.0
    with pytest.raises(ValueError, match="degree"):
        num_sh_bases(4)
