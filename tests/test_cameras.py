"""Camera conventions, pose sets and conversions (FACTS.md section 1, the Diffusion4D sample README)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch

from gen4d.cameras import (
    ZERO123PP_AZIMUTHS,
    Cameras,
    diffusion4d_orbit,
    focal_from_fov,
    from_blender_camera_to_world,
    look_at,
    orbit,
    to_blender_camera_to_world,
    zero123_pose_embedding,
    zero123pp_poses,
)
from gen4d.gaussians import Gaussians
from gen4d.render import RenderOptions, render


def _angles(cameras: Cameras, target=(0.0, 0.0, 0.0)):
    """(elevation deg, azimuth deg in [0, 360), radius) of camera centres in gen4d's convention."""
    rel = cameras.centers.double() - torch.tensor(target, dtype=torch.float64)
    r = rel.norm(dim=-1)
    el = torch.rad2deg(torch.asin(rel[:, 2] / r))
    az = torch.rad2deg(torch.atan2(rel[:, 0], -rel[:, 1])) % 360.0
    return el, az, r


def _assert_rigid(world_to_camera: torch.Tensor):
    R = world_to_camera[:, :3, :3].double()
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        world_to_camera[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(R.shape[0], 4).to(world_to_camera)
    )


# ---------------------------------------------------------------------------------------
# The convention, by hand
# ---------------------------------------------------------------------------------------
def test_orbit_positions_follow_the_documented_convention():
    cams = orbit([0.0, 0.0, 0.0, 30.0], [0.0, 90.0, 180.0, 45.0], 2.0, 40.0, 64, 48)
    s = math.sqrt(0.5)
    expected = torch.tensor(
        [[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0],
         [2 * math.cos(math.radians(30)) * s, -2 * math.cos(math.radians(30)) * s, 1.0]]
    )  # fmt: skip
    torch.testing.assert_close(cams.centers, expected, atol=1e-5, rtol=0)
    _assert_rigid(cams.world_to_camera)
    # Optical axis (camera +z, third row of R) points at the target; image "down" (+y) has a negative world Z.
    forward = cams.world_to_camera[:, 2, :3]
    torch.testing.assert_close(forward, torch.nn.functional.normalize(-cams.centers, dim=-1), atol=1e-6, rtol=0)
    assert bool((cams.world_to_camera[:, 1, 2] < 0).all())
    el, az, r = _angles(cams)
    torch.testing.assert_close(el, torch.tensor([0.0, 0, 0, 30], dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(az, torch.tensor([0.0, 90, 180, 45], dtype=torch.float64), atol=1e-4, rtol=0)
    # fov spans the larger side (Blender's AUTO sensor fit); square pixels.
    torch.testing.assert_close(cams.fov_x_deg, torch.full((4,), 40.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(cams.fx, cams.fy)
    torch.testing.assert_close(cams.cx, torch.full((4,), 32.0))
    torch.testing.assert_close(cams.cy, torch.full((4,), 24.0))


def test_projection_directions_by_hand():
    """Front camera (on -Y): +X is to the right, +Z is up. Camera at azimuth 90 (on +X): the
    front of the object (-Y) is on its left. Camera above (elevation 60): -Y is at the bottom."""
    cams = orbit([0.0, 0.0, 60.0], [0.0, 90.0, 0.0], 2.0, 40.0, 64, 64)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.0, 0.3], [0.0, -0.3, 0.0]])
    pix, depth = cams.project(pts)
    torch.testing.assert_close(pix[:, 0], torch.full((3, 2), 32.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(depth[:, 0], torch.full((3,), 2.0), atol=1e-5, rtol=0)
    front, side, above = pix
    assert front[1, 0] > 32 + 5 and abs(front[1, 1] - 32) < 1e-3  # +X right
    assert front[2, 1] < 32 - 5 and abs(front[2, 0] - 32) < 1e-3  # +Z up
    assert side[3, 0] < 32 - 5  # front (-Y) on the left seen from +X
    assert side[1, 0] == pytest.approx(32.0, abs=1e-3)  # +X is on the optical axis
    assert above[3, 1] > 32 + 5  # seen from above-front, the front point is lower in the image
    # Exact pinhole value for the front camera: u = cx + f * x / z.
    f = float(focal_from_fov(40.0, 64))
    assert float(front[1, 0]) == pytest.approx(32 + f * 0.3 / 2.0, abs=1e-3)


def test_look_at_straight_down_is_finite_and_rigid():
    eyes = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, -2.0]])
    w2c = look_at(eyes, torch.zeros(2, 3))
    assert bool(torch.isfinite(w2c).all())
    _assert_rigid(w2c)
    torch.testing.assert_close(w2c[:, 2, :3], torch.tensor([[0.0, 0, -1], [0.0, 0, 1]]))


# ---------------------------------------------------------------------------------------
# Renders land where the cameras project
# ---------------------------------------------------------------------------------------
def _blender_front_and_side_c2w() -> torch.Tensor:
    """Blender camera-to-world matrices by hand: camera looks down its -Z with +Y up.
    Front camera at (0, -2, 0) looking at +Y; camera at (2.5, 0, 0.5) looking at -X."""
    front = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -2], [0, 1, 0, 0], [0, 0, 0, 1]])
    side = torch.tensor([[0.0, 0, 1, 2.5], [1, 0, 0, 0], [0, 1, 0, 0.5], [0, 0, 0, 1]])
    return torch.stack([front, side])


CAMERA_SETS = {
    "orbit": lambda: orbit([0.0, 25.0, -30.0, 70.0], [0.0, 100.0, 215.0, 300.0], [2.0, 2.5, 1.8, 3.0], 45.0, 64, 64),
    "zero123pp_v1.1": lambda: zero123pp_poses("v1.1", input_azimuth_deg=20.0, radius=2.0, input_fov_deg=49.1, size=64),
    "zero123pp_v1.2": lambda: zero123pp_poses("v1.2", input_azimuth_deg=-35.0, radius=2.0, input_fov_deg=49.1, size=64),
    "blender": lambda: from_blender_camera_to_world(_blender_front_and_side_c2w(), 39.6, 64, 64),
    "diffusion4d": lambda: diffusion4d_orbit(24, 64)[::5],
}


@pytest.mark.parametrize("kind", sorted(CAMERA_SETS))
def test_small_gaussian_renders_at_the_projected_pixel(kind):
    cams = CAMERA_SETS[kind]()
    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(3, 3, generator=gen) * 2 - 1) * 0.25
    for p in points:
        g = Gaussians(
            p[None],
            torch.full((1, 3), math.log(0.035)),
            torch.tensor([[1.0, 0, 0, 0]]),
            torch.tensor([5.0]),
            torch.zeros(1, 1, 3),
        )
        out = render(g, cams, None, RenderOptions(backend="torch"))
        alpha = out.alpha[..., 0]  # (C, H, W)
        vv, uu = torch.meshgrid(torch.arange(cams.height) + 0.5, torch.arange(cams.width) + 0.5, indexing="ij")
        mass = alpha.sum((1, 2))
        assert bool((mass > 1.0).all()), "the Gaussian must be in view of every camera"
        centroid = torch.stack([(alpha * uu).sum((1, 2)) / mass, (alpha * vv).sum((1, 2)) / mass], -1)
        expected, depth = cams.project(p[None])
        assert bool((depth > 0).all())
        torch.testing.assert_close(centroid, expected[:, 0], atol=0.05, rtol=0)
        # The brightest pixel is the one containing the projected point.
        flat = alpha.reshape(len(cams), -1).argmax(-1)
        torch.testing.assert_close(
            torch.stack([flat % cams.width, flat // cams.width], -1), expected[:, 0].floor().long(), atol=0, rtol=0
        )


# ---------------------------------------------------------------------------------------
# Pose sets
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,elevations,fov", [("v1.1", (30.0, -20.0), 49.1), ("v1.2", (20.0, -10.0), 30.0)])
@pytest.mark.parametrize("input_azimuth,direction", [(0.0, 1), (40.0, 1), (40.0, -1)])
def test_zero123pp_pose_angles(version, elevations, fov, input_azimuth, direction):
    cams = zero123pp_poses(
        version, input_azimuth_deg=input_azimuth, radius=2.0, input_fov_deg=49.1, size=320, azimuth_direction=direction
    )
    assert len(cams) == 6 and cams.width == cams.height == 320
    el, az, r = _angles(cams)
    assert ZERO123PP_AZIMUTHS == (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
    want_az = torch.tensor(
        [(input_azimuth + direction * a) % 360 for a in (30, 90, 150, 210, 270, 330)], dtype=torch.float64
    )
    diff = (az - want_az + 180) % 360 - 180
    assert float(diff.abs().max()) < 1e-3
    torch.testing.assert_close(el, torch.tensor(elevations * 3, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(cams.fov_x_deg, torch.full((6,), fov), atol=1e-3, rtol=0)
    if version == "v1.1":
        torch.testing.assert_close(r, torch.full((6,), 2.0, dtype=torch.float64), atol=1e-5, rtol=0)
    else:
        # Object-size normalisation: focal / distance (the pixel size of a unit at the target) is kept.
        kept = float(focal_from_fov(49.1, 320)) / 2.0
        torch.testing.assert_close(cams.fx.double() / r, torch.full((6,), kept, dtype=torch.float64), rtol=1e-5, atol=0)


def _readme_blender_c2w(i: int) -> torch.Tensor:
    """Camera-to-world of Diffusion4D orbit pose i exactly as the sample README states it."""
    angle = 2 * math.pi * (1 - i / 23)
    d = torch.tensor([math.sin(angle), math.cos(angle), 0.0], dtype=torch.float64)
    position = -2.0 * d
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    z_cam = -d  # Blender cameras look down their -Z
    x_cam = torch.cross(up, z_cam, dim=0)
    x_cam = x_cam / x_cam.norm()
    y_cam = torch.cross(z_cam, x_cam, dim=0)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x_cam, y_cam, z_cam, position
    return c2w


@pytest.mark.parametrize("static", [False, True])
def test_diffusion4d_orbit_matches_the_sample_readme(static):
    cams = diffusion4d_orbit(24, 256, static=static)
    assert len(cams) == 24 and cams.width == cams.height == 256
    readme = torch.stack([_readme_blender_c2w(i) for i in range(24)])
    expected = from_blender_camera_to_world(readme, math.degrees(2 * math.atan(18 / 50)), 256, 256)
    torch.testing.assert_close(cams.world_to_camera, expected.world_to_camera, atol=2e-6, rtol=0)
    torch.testing.assert_close(to_blender_camera_to_world(cams).double(), readme, atol=2e-6, rtol=0)
    # Camera position -2 (sin a, cos a, 0), looking at the origin with +Z up (image y has -Z).
    for i in (0, 5, 17, 23):
        a = 2 * math.pi * (1 - i / 23)
        torch.testing.assert_close(
            cams.centers[i].double(),
            torch.tensor([-2 * math.sin(a), -2 * math.cos(a), 0.0], dtype=torch.float64),
            atol=2e-6,
            rtol=0,
        )
    assert bool((cams.world_to_camera[:, 1, 2] < -0.999).all())
    focal = 128 / (18 / 50)  # FOV 2 atan(18 / 50) over 256 pixels
    torch.testing.assert_close(cams.fx, torch.full((24,), focal), rtol=1e-6, atol=0)
    torch.testing.assert_close(cams.fy, torch.full((24,), focal), rtol=1e-6, atol=0)
    torch.testing.assert_close(cams.cx, torch.full((24,), 128.0))
    want_t = torch.zeros(24) if static else torch.arange(24) / 23
    torch.testing.assert_close(cams.times, want_t)
    # Pose 0 is the front pose and pose 23 closes the orbit.
    torch.testing.assert_close(
        cams.world_to_camera[0], orbit(0.0, 0.0, 2.0, 39.6, 256, 256).world_to_camera[0], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(cams.world_to_camera[23], cams.world_to_camera[0], atol=2e-6, rtol=0)


_BPY_SCRIPT = textwrap.dedent(
    """
    import json, math, bpy
    scene = bpy.context.scene
    target = bpy.data.objects.new("target", None)
    scene.collection.objects.link(target)
    data = bpy.data.cameras.new("cam")
    cam = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(cam)
    constraint = cam.constraints.new(type="TRACK_TO")
    constraint.target = target
    constraint.track_axis = "TRACK_NEGATIVE_Z"
    constraint.up_axis = "UP_Y"
    out = {"angle": data.angle, "sensor_fit": data.sensor_fit, "c2w": []}
    for i in range(24):
        a = 2 * math.pi * (1 - i / 23)
        cam.location = (-2 * math.sin(a), -2 * math.cos(a), 0.0)
        bpy.context.view_layer.update()
        out["c2w"].append([list(row) for row in cam.matrix_world])
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.blender
def test_diffusion4d_orbit_matches_blender():
    """The README's camera rig built in Blender (bpy) gives our cameras' Blender matrices."""
    try:
        import importlib.util

        if importlib.util.find_spec("bpy") is None:
            pytest.skip("bpy is not installed (pip install 'gen4d[render]', Python 3.11)")
    except ValueError:
        pytest.skip("bpy is not importable")
    proc = subprocess.run([sys.executable, "-c", _BPY_SCRIPT], capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        pytest.skip(f"bpy could not run here: {proc.stderr.strip()[-300:]}")
    result = json.loads(lines[-1][len("RESULT") :])
    assert result["sensor_fit"] == "AUTO"
    assert result["angle"] == pytest.approx(2 * math.atan(18 / 50), abs=1e-6)
    blender = torch.tensor(result["c2w"], dtype=torch.float64)
    cams = from_blender_camera_to_world(blender, math.degrees(result["angle"]), 256, 256, times=torch.arange(24) / 23)
    ours = diffusion4d_orbit(24, 256)
    torch.testing.assert_close(cams.world_to_camera, ours.world_to_camera, atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.fx, ours.fx, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------
def test_blender_front_camera_is_the_orbit_front_camera():
    cams = from_blender_camera_to_world(_blender_front_and_side_c2w(), 39.6, 64, 64)
    front = orbit(0.0, 0.0, 2.0, 39.6, 64, 64)
    torch.testing.assert_close(cams.world_to_camera[0], front.world_to_camera[0], atol=1e-6, rtol=0)
    # The side camera looks along -X from (2.5, 0, 0.5): an orbit camera at azimuth 90 around (0, 0, 0.5).
    side = orbit(0.0, 90.0, 2.5, 39.6, 64, 64, target=(0.0, 0.0, 0.5))
    torch.testing.assert_close(cams.world_to_camera[1], side.world_to_camera[0], atol=1e-6, rtol=0)


def _random_rigid(count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(count, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    m = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    m[:, :3, :3] = q
    m[:, :3, 3] = torch.randn(count, 3, generator=gen, dtype=torch.float64) * 3
    return m


def test_blender_round_trips():
    c2w = _random_rigid(8, seed=1).float()
    cams = from_blender_camera_to_world(c2w, 50.0, 80, 60, times=torch.linspace(0, 1, 8))
    _assert_rigid(cams.world_to_camera)
    torch.testing.assert_close(to_blender_camera_to_world(cams), c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.fov_x_deg, torch.full((8,), 50.0), atol=1e-4, rtol=0)  # larger side = width
    portrait = from_blender_camera_to_world(c2w, 50.0, 60, 80)
    torch.testing.assert_close(portrait.fov_y_deg, torch.full((8,), 50.0), atol=1e-4, rtol=0)
    # gen4d -> Blender -> gen4d.
    cams2 = orbit([10.0, -40.0], [33.0, 290.0], 2.5, 30.0, 32, 32)
    back = from_blender_camera_to_world(to_blender_camera_to_world(cams2), 30.0, 32, 32)
    torch.testing.assert_close(back.world_to_camera, cams2.world_to_camera, atol=1e-6, rtol=0)
    # Camera centres agree between conventions.
    torch.testing.assert_close(cams.centers, c2w[:, :3, 3], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------
# Zero-1-to-3 pose embedding
# ---------------------------------------------------------------------------------------
def test_zero123_pose_embedding_hand_worked():
    # Up 30 degrees and a quarter turn counter-clockwise: polar angle drops by 30 degrees.
    emb = zero123_pose_embedding(30.0, 90.0, 2.0)
    torch.testing.assert_close(emb, torch.tensor([[-math.pi / 6, 1.0, 0.0, 0.0]]), atol=1e-6, rtol=0)
    # Down 30 degrees relative to a condition 10 degrees up, half a turn, 0.5 further away.
    emb = zero123_pose_embedding(-20.0, 210.0, 2.5, cond_elevation_deg=10.0, cond_azimuth_deg=30.0, cond_radius=2.0)
    torch.testing.assert_close(emb, torch.tensor([[math.pi / 6, 0.0, -1.0, 0.5]]), atol=1e-6, rtol=0)
    # Batched targets against one condition; -90 azimuth = sin -1.
    emb = zero123_pose_embedding(
        torch.tensor([0.0, 0.0, 15.0]), torch.tensor([0.0, -90.0, 45.0]), torch.tensor([2.0, 2.0, 1.5])
    )
    want = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0],
                         [-math.pi / 12, math.sqrt(0.5), math.sqrt(0.5), -0.5]])  # fmt: skip
    torch.testing.assert_close(emb, want, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------
# The Cameras dataclass
# ---------------------------------------------------------------------------------------
def test_cameras_batch_helpers():
    cams = orbit([0.0, 10.0, 20.0], [0.0, 120.0, 240.0], 2.0, 40.0, 64, 32, times=[0.0, 0.5, 1.0])
    assert len(cams) == 3 and len(cams[1]) == 1 and len(cams[[0, 2]]) == 2 and len(cams[1:]) == 2
    torch.testing.assert_close(cams[2].world_to_camera[0], cams.world_to_camera[2])
    both = Cameras.cat([cams[0], cams[1:]])
    torch.testing.assert_close(both.world_to_camera, cams.world_to_camera)
    torch.testing.assert_close(cams.with_times(0.25).times, torch.full((3,), 0.25))
    torch.testing.assert_close(
        cams.camera_to_world @ cams.world_to_camera, torch.eye(4).expand(3, 4, 4), atol=1e-5, rtol=0
    )
    K = cams.intrinsics
    assert K.shape == (3, 3, 3) and float(K[0, 2, 2]) == 1.0 and float(K[0, 0, 2]) == 32.0
    pts = torch.tensor([[0.1, 0.2, -0.1], [0.0, 0.0, 0.3]])
    pix, _ = cams.project(pts)
    half, _ = cams.resized(32, 16).project(pts)
    torch.testing.assert_close(half, pix / 2, atol=1e-4, rtol=0)
    double = cams.to(dtype=torch.float64)
    assert double.fx.dtype == torch.float64 and double.width == 64
    with pytest.raises(ValueError, match="image sizes differ"):
        Cameras.cat([cams, cams.resized(32, 16)])
