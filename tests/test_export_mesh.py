"""Animated mesh exports (glb, mesh-seq): density grid vs brute force, surface, motion, glTF round trip,
the Khronos validator (node), the CLI and its bad inputs."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gen4d.export.gltf import accessor_array, read_glb, to_gltf_axes, write_glb
from gen4d.export.mesh import BakeError, MeshConfig, bake_mesh, density_grid, extract_mesh, write_mesh_sequence
from gen4d.export.ply_sequence import frame_times
from gen4d.gaussians import from_points, random_in_sphere
from gen4d.gaussians.core import Gaussians

pytest.importorskip("skimage", reason="the mesh export needs scikit-image (pip install 'gen4d[export]')")

REPO = Path(__file__).resolve().parents[1]
VALIDATOR_SCRIPT = REPO / "tests" / "js" / "validate_gltf.js"
VALIDATOR_VERSION = "2.0.0-dev.3.10"


def ball(radius: float = 0.3, opacity: float = 0.999, colour=(0.8, 0.2, 0.1), centre=(0.0, 0.0, 0.0)) -> Gaussians:
    """One isotropic Gaussian of standard deviation ``radius``."""
    return from_points(torch.tensor([centre]), colors=torch.tensor([colour]), scale=radius, opacity=opacity).with_(
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    )


def cat(*sets: Gaussians) -> Gaussians:
    return Gaussians(**{k: torch.cat([getattr(s, k) for s in sets]) for k in sets[0].as_dict()})


def test_density_grid_matches_brute_force():
    gaussians = random_in_sphere(12, seed=0).with_(log_scales=torch.log(torch.rand(12, 3) * 0.1 + 0.03))
    config = MeshConfig(resolution=20, cutoff=3.0, chunk=1000)  # many chunks
    grid, origin, voxel = density_grid(gaussians, config)
    axes = [origin[i] + torch.arange(grid.shape[1 + i]) * voxel for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    delta = points[:, None, :] - gaussians.means[None]  # (P, N, 3)
    local = torch.einsum("nji,pnj->pni", gaussians.rotations, delta) / gaussians.scales[None]
    squared = local.square().sum(-1)
    weight = gaussians.opacities * torch.exp(-0.5 * squared) * (squared <= 9.0)  # (P, N)
    torch.testing.assert_close(grid[0].reshape(-1), weight.sum(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grid[1:].reshape(3, -1).T, weight @ gaussians.rgb, atol=1e-5, rtol=1e-4)
    assert float(grid[0][[0, -1]].abs().max()) == 0 and float(grid[0][:, [0, -1]].abs().max()) == 0  # empty margin


def test_surface_of_one_gaussian_is_its_alpha_level_sphere():
    sigma, opacity, level = 0.3, 0.95, 0.5
    far_speck = ball(0.02, 0.999, centre=(1.2, 0.0, 0.0))  # a tiny island, far from the ball
    mesh = extract_mesh(cat(ball(sigma, opacity), far_speck), MeshConfig(resolution=64, level=level))
    expected = sigma * math.sqrt(2 * math.log(opacity / level))  # o exp(-r^2 / 2 sigma^2) = level
    radii = np.linalg.norm(mesh.vertices, axis=1)
    voxel = (2 * 3 * sigma + 1.2 + 0.06) / 64
    assert abs(radii.mean() - expected) < 0.1 * voxel and radii.max() - radii.min() < voxel  # the speck was dropped
    corners = mesh.vertices[mesh.faces]
    volume = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6
    assert volume == pytest.approx(4 / 3 * math.pi * expected**3, rel=0.02)  # > 0: counter-clockwise from outside
    np.testing.assert_allclose(mesh.colors, np.broadcast_to([0.8, 0.2, 0.1], mesh.colors.shape), atol=2e-3)
    kept = extract_mesh(cat(ball(sigma, opacity), far_speck), MeshConfig(resolution=64, level=level, min_island=0))
    assert np.linalg.norm(kept.vertices, axis=1).max() > 1.0  # the speck is kept without the island filter
    with pytest.raises(BakeError, match="never reaches level"):
        extract_mesh(ball(sigma, 0.3), MeshConfig(resolution=16, level=0.5))


def _rigid(canonical: Gaussians, angle_per_time: float, shift: tuple[float, float, float]):
    """gaussians_at(times) of a field that turns the set about z and moves it (rigid motion)."""

    def at(times: torch.Tensor) -> Gaussians:
        frames = []
        for t in times.tolist():
            half = 0.5 * angle_per_time * t
            turn = torch.tensor([math.cos(half), 0.0, 0.0, math.sin(half)])
            w1, v1 = turn[0], turn[1:]
            w2, v2 = canonical.quats[:, 0], canonical.quats[:, 1:]
            quats = torch.cat(
                [(w1 * w2 - v2 @ v1)[:, None], w1 * v2 + w2[:, None] * v1 + torch.linalg.cross(v1.expand_as(v2), v2)], 1
            )
            rotation = canonical.map(lambda x: x[:1]).with_(quats=turn[None]).rotations[0]
            frames.append(canonical.with_(means=canonical.means @ rotation.T + t * torch.tensor(shift), quats=quats))
        return Gaussians(**{k: torch.stack([getattr(f, k) for f in frames]) for k in canonical.as_dict()})

    return at


def test_vertices_follow_a_rigid_field_exactly():
    canonical = random_in_sphere(300, seed=2).with_(opacity_logits=torch.full((300,), 4.0))
    canonical = canonical.with_(quats=torch.nn.functional.normalize(torch.randn(300, 4), dim=-1))
    times = frame_times(4)
    baked = bake_mesh(canonical, _rigid(canonical, 1.2, (0.1, 0.0, 0.3)), times, 12.0, MeshConfig(resolution=24))
    assert baked.positions.shape[0] == 4 and baked.fps == 12.0
    for index, t in enumerate(times.tolist()):
        angle = 1.2 * t
        rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
        expected = baked.positions[0] @ rotation.T + t * np.array([0.1, 0.0, 0.3])
        np.testing.assert_allclose(baked.positions[index], expected, atol=2e-5)
    normals = baked.normals()
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)


def test_a_field_with_non_finite_output_cannot_be_baked():
    canonical = random_in_sphere(100, seed=2).with_(opacity_logits=torch.full((100,), 4.0))
    moving = _rigid(canonical, 0.5, (0.0, 0.0, 0.0))

    def broken(times):
        frames = moving(times)
        return frames.with_(means=torch.where(times[:, None, None] > 0.5, float("nan"), frames.means))

    with pytest.raises(BakeError, match="non-finite Gaussians at t = 0.6667"):
        bake_mesh(canonical, broken, frame_times(4), 24.0, MeshConfig(resolution=16))


@pytest.fixture(scope="module")
def baked():
    canonical = random_in_sphere(200, seed=5).with_(opacity_logits=torch.full((200,), 4.0))
    return bake_mesh(
        canonical, _rigid(canonical, 0.8, (0.0, 0.2, 0.0)), frame_times(5), 10.0, MeshConfig(resolution=20)
    )


def test_glb_round_trip(baked, tmp_path):
    path = write_glb(baked, tmp_path / "a.glb", normal_targets=True)
    document, blob = read_glb(path)
    primitive = document["meshes"][0]["primitives"][0]
    base = accessor_array(document, blob, primitive["attributes"]["POSITION"])
    np.testing.assert_allclose(base, to_gltf_axes(baked.positions[0]), atol=0)
    assert np.array_equal(accessor_array(document, blob, primitive["indices"]).reshape(-1, 3), baked.faces)
    assert len(primitive["targets"]) == 4 and all("NORMAL" in t for t in primitive["targets"])
    for frame, target in enumerate(primitive["targets"], start=1):
        delta = accessor_array(document, blob, target["POSITION"])
        np.testing.assert_allclose(base + delta, to_gltf_axes(baked.positions[frame]), atol=1e-6)
        accessor = document["accessors"][target["POSITION"]]
        np.testing.assert_allclose(accessor["min"], delta.min(0))
        np.testing.assert_allclose(accessor["max"], delta.max(0))
    assert document["accessors"][primitive["attributes"]["POSITION"]]["max"] == base.max(0).tolist()
    sampler = document["animations"][0]["samplers"][0]
    keys = accessor_array(document, blob, sampler["input"])[:, 0]
    np.testing.assert_allclose(keys, np.arange(5) / 10.0)  # one key per frame: 0 .. (F - 1) / fps
    weights = accessor_array(document, blob, sampler["output"]).reshape(5, 4)
    assert np.array_equal(weights, np.eye(5)[:, 1:]) and sampler["interpolation"] == "LINEAR"
    assert document["animations"][0]["channels"][0]["target"] == {"node": 0, "path": "weights"}
    colours = accessor_array(document, blob, primitive["attributes"]["COLOR_0"])
    assert colours.shape == (baked.positions.shape[1], 3) and colours.min() >= 0 and colours.max() <= 1
    small = write_glb(baked, tmp_path / "b.glb")  # default: no NORMAL targets (the material is unlit)
    assert small.stat().st_size < path.stat().st_size * 0.7


def test_gltf_axes_put_gen4d_up_on_gltf_up():
    up, front = to_gltf_axes(np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]))
    assert up.tolist() == [0.0, 1.0, 0.0] and front.tolist() == [0.0, 0.0, 1.0]


@pytest.fixture(scope="session")
def gltf_validator() -> Path:
    """NODE_PATH of the npm package gltf-validator, installed once into the ignored REPO/.cache/node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node / npm not found: the Khronos glTF-Validator runs on node (apt-get install nodejs npm)")
    prefix = REPO / ".cache" / "node"
    package = prefix / "node_modules" / "gltf-validator" / "package.json"
    if not package.is_file() or json.loads(package.read_text()).get("version") != VALIDATOR_VERSION:
        prefix.mkdir(parents=True, exist_ok=True)
        command = [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(prefix),
            f"gltf-validator@{VALIDATOR_VERSION}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            pytest.skip(f"npm could not install gltf-validator (offline?): {result.stderr.strip()[-300:]}")
    return prefix / "node_modules"


def validate(path: Path, node_path: Path) -> tuple[int, dict]:
    result = subprocess.run(
        ["node", str(VALIDATOR_SCRIPT), str(path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": str(node_path)},
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_khronos_validator_reports_no_issue(baked, tmp_path, gltf_validator):
    for name, normals in (("plain.glb", False), ("normals.glb", True)):
        code, report = validate(write_glb(baked, tmp_path / name, normal_targets=normals), gltf_validator)
        assert code == 0 and report["issues"]["numErrors"] == 0, report["issues"]["messages"]
        assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
        assert report["info"]["animationCount"] == 1 and report["info"]["hasMorphTargets"]
    # The check can fail: a POSITION accessor without its required bounds is an error.
    document, blob = read_glb(tmp_path / "plain.glb")
    del document["accessors"][document["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["min"]
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    broken = tmp_path / "broken.glb"
    header = np.array([0x46546C67, 2, 12 + 8 + len(text) + 8 + len(blob)], "<u4").tobytes()
    chunks = (
        np.array([len(text), 0x4E4F534A], "<u4").tobytes() + text + np.array([len(blob), 0x004E4942], "<u4").tobytes()
    )
    broken.write_bytes(header + chunks + blob)
    code, report = validate(broken, gltf_validator)
    assert code == 1 and report["issues"]["numErrors"] >= 1


def test_mesh_sequence(baked, tmp_path):
    from plyfile import PlyData

    paths = write_mesh_sequence(baked, tmp_path / "seq")
    assert [p.name for p in paths] == [f"frame_{i:04d}.ply" for i in range(5)]
    last = PlyData.read(str(paths[-1]))
    points = np.stack([last["vertex"][a] for a in "xyz"], -1)
    np.testing.assert_allclose(points, baked.positions[-1], atol=0)
    faces = np.stack(last["face"]["vertex_indices"])
    assert np.array_equal(faces, baked.faces)
    assert np.array_equal(last["vertex"]["red"], np.rint(baked.colors[:, 0] * 255).astype(np.uint8))


# -- the command ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from gen4d.deform import DeformConfig, HexPlaneConfig
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.recon.checkpoint import save_checkpoint

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    torch.manual_seed(0)
    canonical = random_in_sphere(150, seed=1).with_(opacity_logits=torch.full((150,), 4.0))
    run = tmp_path_factory.mktemp("export") / "run"
    save_checkpoint(run, DynamicGaussians(canonical, DeformConfig(field=hexplane)))
    return run


def test_export_command_glb_and_mesh_seq(run_dir, tmp_path):
    from gen4d.cli import main

    out = tmp_path / "a.glb"
    args = ["export", str(run_dir), "--format", "glb", "--frames", "3", "--fps", "12", "--resolution", "16"]
    assert main([*args, "--out", str(out)]) == 0
    document, _ = read_glb(out)
    assert len(document["meshes"][0]["primitives"][0]["targets"]) == 2 and document["extras"]["fps"] == 12.0
    assert main([*args, "--out", str(out)]) == 0  # its own file may be replaced
    seq = ["export", str(run_dir), "--format", "mesh-seq", "--frames", "2", "--resolution", "16"]
    assert main([*seq, "--out", str(tmp_path / "seq")]) == 0
    assert len(list((tmp_path / "seq").glob("frame_*.ply"))) == 2
    assert main([*seq, "--out", str(tmp_path / "seq")]) == 2  # not empty any more


def test_export_command_bad_input(run_dir, tmp_path, capsys):
    from gen4d.cli import main

    glb = ["--format", "glb", "--resolution", "16", "--frames", "2"]
    assert main(["export", str(tmp_path / "nothing"), *glb, "--out", str(tmp_path / "x.glb")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    notes = tmp_path / "notes.glb"
    notes.write_text("mine")
    assert main(["export", str(run_dir), *glb, "--out", str(notes)]) == 2 and notes.read_text() == "mine"
    assert "will not overwrite" in capsys.readouterr().err
    assert main(["export", str(run_dir), *glb, "--out", str(notes / "x.glb")]) == 2  # under a file
    assert "is a file" in capsys.readouterr().err
    assert main(["export", str(run_dir), *glb, "--level", "99", "--out", str(tmp_path / "y.glb")]) == 2
    assert "never reaches level" in capsys.readouterr().err and not (tmp_path / "y.glb").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_command_unwritable_out(run_dir, tmp_path, capsys):
    from gen4d.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["export", str(run_dir), "--format", "glb", "--out", str(locked / "a.glb")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_export_command_field_that_cannot_be_baked(run_dir, tmp_path, capsys):
    from gen4d.cli import main
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.recon.checkpoint import load_run, save_checkpoint

    model = load_run(run_dir)
    with torch.no_grad():
        next(p for n, p in model.field.named_parameters() if "head" in n).fill_(float("inf"))
    broken = tmp_path / "broken_run"
    save_checkpoint(broken, model)
    assert not torch.isfinite(DynamicGaussians.load(broken / "checkpoint").at(torch.tensor([0.5])).means).all()
    out = tmp_path / "b.glb"
    assert (
        main(["export", str(broken), "--format", "glb", "--resolution", "16", "--frames", "2", "--out", str(out)]) == 2
    )
    assert "non-finite" in capsys.readouterr().err and not out.exists()
