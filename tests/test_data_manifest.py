"""The manifest format (writer + loader) and the Diffusion4D loader against the real sample."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gen4d.cameras import diffusion4d_orbit, orbit
from gen4d.data.dataset import MultiViewVideo, load_dataset, load_diffusion4d
from gen4d.data.manifest import camera_records, load_manifest, read_manifest, save_dataset, write_manifest

SHARED = Path(os.environ.get("GEN4D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
D4D_SAMPLE = SHARED / "data" / "diffusion4d_sample"
needs_sample = pytest.mark.skipif(
    not (D4D_SAMPLE / "README.md").is_file(),
    reason=f"the Diffusion4D sample is not at {D4D_SAMPLE} (set GEN4D_SHARED to the shared folder)",
)


def _toy_video(frames: int = 4, size: int = 16) -> MultiViewVideo:
    generator = torch.Generator().manual_seed(0)
    times = torch.arange(frames) / (frames - 1)
    orbit_cams = orbit(0.0, 360.0 * times, 2.0, 39.6, size, size, times)
    front = orbit(0.0, 0.0, 2.0, 39.6, size, size, times)
    eval_cams = orbit(15.0, [45.0, 135.0], 2.0, 39.6, size, size, 0.5)
    from gen4d.cameras import Cameras

    cameras = Cameras.cat([orbit_cams, front, eval_cams])
    count = len(cameras)
    images = torch.rand(count, size, size, 3, generator=generator)
    alphas = (torch.rand(count, size, size, 1, generator=generator) > 0.5).float()
    splits = {
        "orbit": torch.arange(0, frames),
        "front": torch.arange(frames, 2 * frames),
        "eval": torch.arange(2 * frames, count),
        "first": torch.tensor([0, frames]),  # overlaps orbit and front
    }
    return MultiViewVideo(images=images, alphas=alphas, cameras=cameras, splits=splits, num_frames=frames, name="toy")


def test_manifest_round_trip(tmp_path):
    video = _toy_video()
    path = save_dataset(video, tmp_path / "toy", meta={"asset": {"name": "toy"}})
    assert path.name == "manifest.json"
    loaded = load_manifest(tmp_path / "toy")
    assert loaded.name == "toy" and len(loaded) == len(video) and loaded.num_frames == video.num_frames
    # 8-bit PNG quantisation only.
    assert torch.allclose(loaded.images, video.images, atol=0.5 / 255 + 1e-6)
    assert torch.equal(loaded.alphas, video.alphas)
    assert torch.allclose(loaded.cameras.world_to_camera, video.cameras.world_to_camera, atol=1e-6)
    for key in ("fx", "fy", "cx", "cy", "times"):
        assert torch.allclose(getattr(loaded.cameras, key), getattr(video.cameras, key))
    assert set(loaded.splits) == set(video.splits)
    for name, index in video.splits.items():
        assert loaded.splits[name].tolist() == index.tolist()
    assert torch.equal(loaded.frames, video.frames)
    # load_dataset dispatches on manifest.json, and size resamples.
    small = load_dataset(tmp_path / "toy", size=8)
    assert small.images.shape == (len(video), 8, 8, 3) and small.cameras.width == 8
    assert read_manifest(path)["asset"] == {"name": "toy"}


def test_manifest_records_fields_and_blender_matrix(tmp_path):
    cams = orbit(10.0, [0.0, 90.0], 2.0, 39.6, 32, 24, [0.0, 1.0])
    records = camera_records(cams, "orbit", ["a.png", "b.png"], [0, 1], spherical=[(10, 0, 2), (10, 90, 2)])
    assert records[1]["azimuth_deg"] == 90 and records[0]["fov_axis"] == "x"
    assert math.isclose(records[0]["fov_deg"], 39.6, rel_tol=1e-5)
    # Blender camera-to-world: the camera sits at its centre and looks down its -Z at the origin.
    c2w = np.array(records[1]["blender_camera_to_world"])
    centre = c2w[:3, 3]
    assert np.allclose(centre, [2 * math.cos(math.radians(10)), 0, 2 * math.sin(math.radians(10))], atol=1e-5)
    forward = -c2w[:3, 2]
    assert np.allclose(forward, -centre / np.linalg.norm(centre), atol=1e-5)
    assert c2w[2, 1] > 0  # camera +Y (up) has a positive world Z component


def test_manifest_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_manifest(tmp_path / "nothing")
    video = _toy_video(frames=2, size=8)
    path = save_dataset(video, tmp_path / "v")
    data = json.loads(path.read_text())

    data["complete"] = False
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rerun the same"):
        load_manifest(path)

    data["complete"] = True
    data["images"][0]["blender_camera_to_world"][0][3] += 0.5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="disagree"):
        load_manifest(path)

    data["images"][0]["blender_camera_to_world"][0][3] -= 0.5
    data["images"][1]["frame_index"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="frame_index 7"):
        load_manifest(path)

    data["images"][1]["frame_index"] = 1
    data["format"] = "something"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a gen4d manifest"):
        load_manifest(path)

    data["format"] = "gen4d.manifest"
    (tmp_path / "v" / data["images"][2]["file"]).unlink()
    path.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match="no such image"):
        load_manifest(path)

    with pytest.raises(ValueError, match="has 1 entries"):
        camera_records(video.cameras[:2], "x", ["a"], [0, 1])
    with pytest.raises(ValueError, match="no images"):
        write_manifest(tmp_path / "w", [], width=8, height=8, num_frames=1, name="w")


# -- the Diffusion4D loader against the real sample --------------------------------------------
@pytest.fixture(scope="module")
def d4d() -> MultiViewVideo:
    return load_diffusion4d(D4D_SAMPLE)


@needs_sample
def test_diffusion4d_sample_splits_and_documented_angles(d4d):
    assert set(d4d.splits) == {"orbit", "static_orbit", "front"}
    assert d4d.num_frames == 24 and d4d.width == d4d.height == 256
    orbit_v, static_v, front_v = d4d.split("orbit"), d4d.split("static_orbit"), d4d.split("front")
    assert len(orbit_v) == len(static_v) == len(front_v) == 24
    # The README's convention: pose i at angle = 2 pi (1 - i/23), camera at -2 (sin angle, cos angle, 0).
    angle = 2 * math.pi * (1 - torch.arange(24, dtype=torch.float64) / 23)
    expected = -2 * torch.stack([torch.sin(angle), torch.cos(angle), torch.zeros(24, dtype=torch.float64)], -1)
    assert torch.allclose(orbit_v.cameras.centers.double(), expected, atol=1e-4)
    assert torch.allclose(static_v.cameras.centers.double(), expected, atol=1e-4)
    # Every camera looks at the origin, FOV = 2 atan(18/50), times as documented.
    assert torch.allclose(orbit_v.cameras.fov_x_deg, torch.tensor(math.degrees(2 * math.atan(18 / 50))), atol=1e-3)
    pix, depth = orbit_v.cameras.project(torch.zeros(1, 3))
    assert torch.allclose(pix, torch.full_like(pix, 128.0), atol=1e-3) and torch.allclose(
        depth, torch.full_like(depth, 2.0)
    )
    assert torch.allclose(orbit_v.cameras.times, torch.arange(24) / 23)
    assert torch.all(static_v.cameras.times == 0)
    assert torch.allclose(front_v.cameras.times, torch.arange(24) / 23)
    # gen4d's builder gives the same cameras.
    assert torch.allclose(orbit_v.cameras.world_to_camera, diffusion4d_orbit(24).world_to_camera, atol=1e-5)


@needs_sample
def test_diffusion4d_sample_orbit_pose0_is_front_pose(d4d):
    orbit_v, static_v, front_v = d4d.split("orbit"), d4d.split("static_orbit"), d4d.split("front")
    # Cameras: orbit pose 0 = every front pose; the orbit ends where it starts.
    for i in range(24):
        assert torch.allclose(front_v.cameras.world_to_camera[i], orbit_v.cameras.world_to_camera[0], atol=1e-5)
    assert torch.allclose(orbit_v.cameras.world_to_camera[23], orbit_v.cameras.world_to_camera[0], atol=1e-4)
    # Pixels agree where pose and time agree: orbit[0] = front[0] = static[0]; static[23] = static[0].
    for a, b in ((orbit_v, front_v), (orbit_v, static_v)):
        assert (a.alphas[0] - b.alphas[0]).abs().mean() < 0.01
        assert (a.composited()[0] - b.composited()[0]).abs().mean() < 0.01
    assert (static_v.alphas[23] - static_v.alphas[0]).abs().mean() < 0.01
    # ... and differ where they should: the object really is seen from other sides / moves.
    assert (static_v.alphas[6] - static_v.alphas[0]).abs().mean() > 0.01
    assert (front_v.composited()[12] - front_v.composited()[0]).abs().mean() > 0.002


@needs_sample
def test_diffusion4d_sample_round_trips_through_manifest(d4d, tmp_path):
    small = d4d.resized(32)
    save_dataset(small, tmp_path / "d4d")
    loaded = load_dataset(tmp_path / "d4d")
    assert set(loaded.splits) == set(small.splits)
    assert torch.allclose(loaded.cameras.world_to_camera, small.cameras.world_to_camera, atol=1e-6)
    assert torch.allclose(loaded.images * loaded.alphas, small.images * small.alphas, atol=2 / 255)


def _silhouette_coverage(silhouettes: torch.Tensor, cameras) -> tuple[float, float]:
    """Carve a voxel hull from (C, H, W) silhouettes with ``cameras``; returns the (min, mean)
    fraction of each silhouette its reprojected hull covers (1 for perfectly consistent cameras)."""
    count, height, width = silhouettes.shape
    grid = (torch.arange(48) + 0.5) / 48 * 1.2 - 0.6
    points = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    pix, _ = cameras.project(points)
    ij = pix.floor().long()
    in_bounds = (ij[..., 0] >= 0) & (ij[..., 0] < width) & (ij[..., 1] >= 0) & (ij[..., 1] < height)
    ij[..., 0].clamp_(0, width - 1)
    ij[..., 1].clamp_(0, height - 1)
    inside = torch.stack([silhouettes[c][ij[c, :, 1], ij[c, :, 0]] for c in range(count)]) & in_bounds
    hull = inside.all(0)
    cover = []
    for c in range(count):
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[ij[c, hull, 1], ij[c, hull, 0]] = True
        cover.append(float((mask & silhouettes[c]).sum() / silhouettes[c].sum()))
    return min(cover), sum(cover) / count


@needs_sample
def test_diffusion4d_sample_silhouettes_agree_with_documented_azimuth_direction(d4d):
    """The loader's cameras explain the real renders: a visual hull carved from the 24 static-orbit
    silhouettes reprojects onto every silhouette; the mirrored azimuth direction does not."""
    static = d4d.split("static_orbit").resized(64)
    silhouettes = static.alphas[..., 0] > 0.5
    right_min, right_mean = _silhouette_coverage(silhouettes, static.cameras)
    fov = math.degrees(2 * math.atan(18 / 50))
    mirrored = orbit(0.0, -360.0 * torch.arange(24) / 23, 2.0, fov, 64, 64)
    wrong_min, wrong_mean = _silhouette_coverage(silhouettes, mirrored)
    assert right_min > 0.88 and right_mean > 0.93
    assert right_min - wrong_min > 0.05 and right_mean - wrong_mean > 0.05


def test_load_dataset_names_both_formats_for_an_unknown_folder(tmp_path):
    from gen4d.data.dataset import load_dataset

    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(ValueError, match="manifest.json.*Diffusion4D format"):
        load_dataset(tmp_path)
