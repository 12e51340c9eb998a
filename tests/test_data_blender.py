"""Blender rendering (gen4d render), procedural assets and the shipped default set.

Renders are tiny (64x64, 4-8 samples, few views); each runs in its own Blender process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gen4d.cameras import ZERO123PP_AZIMUTHS, diffusion4d_orbit, zero123pp_poses
from gen4d.data.blender import PRESETS, RenderConfig, bpy_available, check_asset, plan_images, render_asset
from gen4d.data.manifest import DEFAULT_DATASET, load_default, load_manifest, manifest_cameras, read_manifest
from gen4d.data.procedural import MOTIONS, creature_spec, joint_angles, parse_procedural_name

SHARED = Path(os.environ.get("GEN4D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FOX = SHARED / "assets" / "gltf" / "Fox.glb"

needs_bpy = pytest.mark.skipif(
    not bpy_available(), reason="bpy is not installed (pip install 'gen4d[render]', Python 3.11)"
)
needs_fox = pytest.mark.skipif(not FOX.is_file(), reason=f"Fox.glb not found at {FOX} (set GEN4D_SHARED)")
TINY = RenderConfig(size=64, samples=4, num_frames=4, denoise=False)


# -- pure planning / spec tests (no Blender) ----------------------------------------------------
def test_plan_matches_gen4d_cameras():
    config = RenderConfig(
        sets=("orbit", "static-orbit", "front", "zero123pp", "eval"), size=32, num_frames=24, zero123pp_frames=(0, 5)
    )
    records = plan_images(config)
    by_split: dict[str, list] = {}
    for r in records:
        by_split.setdefault(r["split"], []).append(r)
    assert {k: len(v) for k, v in by_split.items()} == {
        "orbit": 24,
        "static_orbit": 24,
        "front": 24,
        "zero123pp": 12,
        "eval": 96,
    }
    data = {"width": 32, "height": 32, "images": records}
    cams = manifest_cameras(data)  # also checks the Blender matrices against world_to_camera
    orbit_idx = [i for i, r in enumerate(records) if r["split"] == "orbit"]
    # Default orbit = Diffusion4D's orbit (gen4d.cameras.diffusion4d_orbit), pose 0 = front pose.
    ref = diffusion4d_orbit(24, size=32)
    assert torch.allclose(cams.world_to_camera[orbit_idx], ref.world_to_camera, atol=1e-5)
    assert torch.allclose(cams.fx[orbit_idx], ref.fx, rtol=1e-4)
    assert torch.allclose(cams.times[orbit_idx], ref.times)
    front_idx = [i for i, r in enumerate(records) if r["split"] == "front"]
    assert torch.allclose(cams.world_to_camera[front_idx[5]], ref.world_to_camera[0], atol=1e-5)
    static_idx = [i for i, r in enumerate(records) if r["split"] == "static_orbit"]
    assert torch.all(cams.times[static_idx] == 0)
    z_idx = [i for i, r in enumerate(records) if r["split"] == "zero123pp"]
    zref = zero123pp_poses("v1.2", 0.0, 2.0, 39.5978, 32, 5 / 23)
    assert torch.allclose(cams.world_to_camera[z_idx[6:]], zref.world_to_camera, atol=1e-5)
    assert [records[i]["azimuth_deg"] for i in z_idx[:6]] == list(ZERO123PP_AZIMUTHS)
    assert [records[i]["frame_index"] for i in z_idx] == [0] * 6 + [5] * 6
    eval_az = sorted({records[i]["azimuth_deg"] for i, r in enumerate(records) if r["split"] == "eval"})
    assert eval_az == [45.0, 135.0, 225.0, 315.0]
    assert len({r["file"] for r in records}) == len(records)


def test_config_and_asset_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown render set"):
        RenderConfig(sets=("orbit", "sideways"))
    with pytest.raises(ValueError, match="num_frames"):
        RenderConfig(num_frames=1)
    with pytest.raises(ValueError, match="zero123pp_frames"):
        RenderConfig(num_frames=4, zero123pp_frames=(4,))
    with pytest.raises(FileNotFoundError, match="no such asset"):
        check_asset(tmp_path / "missing.glb")
    (tmp_path / "mesh.stl").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="unsupported asset format '.stl'"):
        check_asset(tmp_path / "mesh.stl")
    with pytest.raises(ValueError, match="seed must be an integer"):
        check_asset("procedural:abc")
    with pytest.raises(ValueError, match="unknown field 'legs'"):
        parse_procedural_name("procedural:1:legs=4")
    with pytest.raises(ValueError, match="motion"):
        parse_procedural_name("procedural:1:motion=dance")


def test_procedural_specs_vary_and_are_deterministic():
    specs = [creature_spec(s) for s in range(12)]
    assert creature_spec(3) == creature_spec(3)
    assert len({(s.body_shape, s.leg_count, s.arm_count, s.motion) for s in specs}) >= 6
    assert len({s.body_color for s in specs}) == 12
    spec = parse_procedural_name("procedural:3:motion=hop,magnitude=0.25,cycles=1")
    assert (spec.motion, spec.magnitude, spec.cycles, spec.seed) == ("hop", 0.25, 1, 3)
    # still / none do not move; the others do; motions loop over the clip (except leave).
    for motion in MOTIONS:
        s = creature_spec(5, motion=motion)
        poses = [joint_angles(s, f) for f in range(0, s.num_frames + 1, 4)]
        flat = np.array([[v for value in p.values() for v in value] for p in poses])
        moving = float(np.ptp(flat, axis=0).max())
        assert (moving == 0) == (motion in ("still", "none")), motion
        if motion not in ("leave",):
            assert np.allclose(flat[0], flat[-1], atol=1e-9), motion


def test_presets_and_default_set_manifest():
    assert PRESETS["diffusion4d"].num_frames == 24 and PRESETS["diffusion4d"].samples == 128
    assert PRESETS["diffusion4d"].size == 256
    video = load_default()
    assert {"orbit", "static_orbit", "front", "eval", "zero123pp"} <= set(video.splits)
    assert video.num_frames == 24 and len(video.split("orbit")) == 24 and len(video.split("eval")) == 96
    data = read_manifest(DEFAULT_DATASET)
    assert data["complete"] and data["clip"]["name"] == "wave"
    size_mb = sum(p.stat().st_size for p in DEFAULT_DATASET.rglob("*") if p.is_file()) / 2**20
    assert size_mb < 5, f"the shipped default set grew to {size_mb:.1f} MB"
    # The creature moves in the front video and is fully inside every frame.
    front = video.split("front")
    assert (front.alphas[0] - front.alphas[12]).abs().mean() > 0.002
    border = torch.cat([video.alphas[:, 0], video.alphas[:, -1], video.alphas[:, :, 0], video.alphas[:, :, -1]], 1)
    assert float(border.max()) < 0.05
    # Its cameras are gen4d's: orbit = diffusion4d_orbit at 128 px.
    orbit_cams = video.split("orbit").cameras
    assert torch.allclose(orbit_cams.world_to_camera, diffusion4d_orbit(24, 128).world_to_camera, atol=1e-5)


# -- Blender renders --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_render(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "creature"
    config = RenderConfig(sets=("orbit", "static_orbit", "front"), size=64, samples=4, num_frames=4, denoise=False)
    render_asset("procedural:3:motion=hop,magnitude=1", out, config, progress=False)
    return out


@needs_bpy
def test_tiny_render_of_procedural_asset(tiny_render):
    video = load_manifest(tiny_render)
    data = read_manifest(tiny_render)
    assert data["complete"] and len(video) == 12 and video.width == 64
    assert set(video.splits) == {"orbit", "static_orbit", "front"}
    assert video.alphas is not None and float(video.alphas.max()) == 1.0 and float(video.alphas.min()) == 0.0
    # The animation moves: front frames differ over time; static orbit pose 0 = orbit pose 0 = front 0.
    front, orbit_v, static = video.split("front"), video.split("orbit"), video.split("static_orbit")
    assert (front.alphas[1] - front.alphas[0]).abs().mean() > 0.01
    assert (orbit_v.images[0] - static.images[0]).abs().max() < 1e-6
    assert (orbit_v.images[0] - front.images[0]).abs().max() < 1e-6
    # Manifest facts: clip, time mapping onto the clip range, normalisation into the unit cube.
    clip = data["clip"]
    assert clip["name"] == "hop" and clip["frame_start"] == 0 and clip["frame_end"] == 48
    frames = [r["source_frame"] for r in data["images"] if r["split"] == "front"]
    assert frames == [0.0, 16.0, 32.0, 48.0]
    norm = data["normalisation"]
    lo, hi = np.array(norm["bounds_min"]), np.array(norm["bounds_max"])
    assert np.all(lo >= -0.5 - 1e-5) and np.all(hi <= 0.5 + 1e-5) and abs((hi - lo).max() - 1) < 1e-5
    assert [light["name"] for light in data["render"]["lights"]] == ["key", "fill", "rim", "bottom"]
    assert all(light["shadow"] is False for light in data["render"]["lights"])


@needs_bpy
def test_resume_and_determinism(tiny_render, tmp_path):
    manifest = tiny_render / "manifest.json"
    data = json.loads(manifest.read_text())
    config = RenderConfig(sets=("orbit", "static_orbit", "front"), size=64, samples=4, num_frames=4, denoise=False)
    files = [tiny_render / r["file"] for r in data["images"]]
    before = {f: f.read_bytes() for f in files}
    # Simulate an interrupted run: two images missing, manifest not complete.
    files[1].unlink()
    files[7].unlink()
    data["complete"] = False
    manifest.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="rerun"):
        load_manifest(tiny_render)
    mtimes = {f: f.stat().st_mtime_ns for f in files if f.exists()}
    render_asset("procedural:3:motion=hop,magnitude=1", tiny_render, config, progress=False)
    assert read_manifest(tiny_render)["complete"]
    assert all(f.stat().st_mtime_ns == t for f, t in mtimes.items())  # untouched
    # Deterministic for a seed: the re-rendered images equal the first ones.
    for f in (files[1], files[7]):
        a = np.asarray(Image.open(f), dtype=np.int16)
        b = np.asarray(Image.open(io.BytesIO(before[f])), dtype=np.int16)
        assert np.abs(a - b).max() <= 1
    # Another asset or other settings in the same folder: refused without overwrite.
    with pytest.raises(ValueError, match="--overwrite"):
        render_asset("procedural:4", tiny_render, config, progress=False)


MARKERS = {  # source positions of three small coloured spheres (and the colour channel that wins)
    0: (0.35, -0.25, 0.30),
    1: (-0.40, 0.30, -0.10),
    2: (0.05, 0.35, -0.45),
}
MARKER_SCRIPT = """
import sys, bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
for channel, location in {markers}.items():
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.07, location=location, segments=24, ring_count=12)
    obj = bpy.context.active_object
    mat = bpy.data.materials.new(f"m{{channel}}")
    mat.use_nodes = True
    color = [0.0, 0.0, 0.0, 1.0]
    color[channel] = 1.0
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = color
    bsdf.inputs["Emission Color"].default_value = color
    bsdf.inputs["Emission Strength"].default_value = 3.0
    obj.data.materials.append(mat)
bpy.ops.export_scene.gltf(filepath=sys.argv[1], export_format="GLB")
"""


@pytest.fixture(scope="module")
def marker_asset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("markers") / "markers.glb"
    subprocess.run(
        [sys.executable, "-c", MARKER_SCRIPT.format(markers=MARKERS), str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@needs_bpy
def test_markers_land_where_gen4d_cameras_project_them(marker_asset, tmp_path):
    """A small sphere at a known 3D position appears at the pixel gen4d's camera projects it to
    (orbit, front, Zero123++ v1.2 poses); a static asset renders time-varying sets with allow_static."""
    config = RenderConfig(
        sets=("orbit", "front", "zero123pp"),
        size=64,
        samples=4,
        num_frames=5,
        denoise=False,
        zero123pp_frames=(0,),
        allow_static=True,
    )
    render_asset(marker_asset, tmp_path / "m", config, progress=False)
    video = load_manifest(tmp_path / "m")
    data = read_manifest(tmp_path / "m")
    assert data["clip"]["name"] is None  # no animation
    scale, offset = data["normalisation"]["scale"], np.array(data["normalisation"]["offset"])
    points = torch.from_numpy(np.stack([scale * np.array(MARKERS[c]) + offset for c in range(3)])).float()
    pix, _ = video.cameras.project(points)  # (M, 3, 2)
    images, alphas = video.images.numpy(), video.alphas.numpy()[..., 0]
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    checked = {"orbit": 0, "front": 0, "zero123pp": 0}
    for m in range(len(video)):
        split = data["images"][m]["split"]
        for channel in range(3):
            rgb = images[m]
            others = np.delete(rgb, channel, axis=-1).max(-1)
            mask = (alphas[m] > 0.5) & (rgb[..., channel] > 0.3) & (rgb[..., channel] > 2 * others)
            if mask.sum() < 6:
                continue  # hidden behind another marker from this side
            centroid = np.array([xs[mask].mean(), ys[mask].mean()])
            error = np.linalg.norm(centroid - pix[m, channel].numpy())
            assert error < 0.75, f"image {m} ({split}) marker {channel}: {error:.2f} px from gen4d's projection"
            checked[split] += 1
    assert checked["orbit"] >= 12 and checked["front"] >= 12 and checked["zero123pp"] >= 15, checked


@needs_bpy
def test_bad_assets(tmp_path):
    corrupt = tmp_path / "broken.glb"
    corrupt.write_bytes(b"glTF\x02\x00\x00\x00" + os.urandom(200))
    with pytest.raises(ValueError, match="broken.glb"):
        render_asset(corrupt, tmp_path / "a", TINY, progress=False)
    corrupt_fbx = tmp_path / "broken.fbx"
    corrupt_fbx.write_bytes(b"not an fbx file at all" * 10)
    with pytest.raises(ValueError, match="could not import the fbx file|broken.fbx"):
        render_asset(corrupt_fbx, tmp_path / "b", TINY, progress=False)
    # No animation: a clear message for time-varying sets, static sets still work.
    still = "procedural:2:motion=none"
    with pytest.raises(ValueError, match="has no animation.*static_orbit"):
        render_asset(still, tmp_path / "c", TINY, progress=False)
    static_only = RenderConfig(sets=("static_orbit",), size=64, samples=4, num_frames=4, denoise=False)
    video = load_manifest(render_asset(still, tmp_path / "d", static_only, progress=False))
    assert len(video) == 4 and float(video.alphas.max()) == 1.0
    # Unknown clip.
    with pytest.raises(ValueError, match="no clip named 'dance'.*hop"):
        render_asset(
            "procedural:1:motion=hop",
            tmp_path / "e",
            RenderConfig(sets=("front",), size=64, samples=4, num_frames=2, denoise=False, clip="dance"),
            progress=False,
        )


@needs_bpy
@needs_fox
def test_fox_requested_clip_is_rendered(tmp_path):
    def front(clip: str, name: str, normalise: str = "box"):
        config = RenderConfig(
            sets=("front",), size=64, samples=4, num_frames=3, denoise=False, clip=clip, normalise=normalise
        )
        path = render_asset(FOX, tmp_path / name, config, progress=False)
        return load_manifest(path), read_manifest(path)

    walk, walk_data = front("Walk", "walk")
    walk_by_index, index_data = front("1", "walk1")
    run, run_data = front("Run", "run", normalise="sphere")
    assert walk_data["asset"]["clips"] == ["Survey", "Walk", "Run"]
    # The clip's own frame range (README: Walk 0.708 s, Run 1.158 s at 24 fps) is what was sampled.
    assert walk_data["clip"]["name"] == "Walk" and walk_data["clip"]["index"] == 1
    assert abs(walk_data["clip"]["frame_end"] - walk_data["clip"]["frame_start"] - 0.708 * 24) < 1.0
    assert abs(run_data["clip"]["frame_end"] - run_data["clip"]["frame_start"] - 1.158 * 24) < 1.0
    assert index_data["clip"]["name"] == "Walk"
    assert torch.equal(walk.images * walk.alphas, walk_by_index.images * walk_by_index.alphas)
    # Fox moves, and Walk at mid-clip is not Run at mid-clip.
    assert (walk.alphas[1] - walk.alphas[0]).abs().mean() > 0.001
    assert (walk.alphas[1] - run.alphas[1]).abs().mean() > 0.001
    # Normalised over the sampled times into the unit cube.
    lo, hi = np.array(walk_data["normalisation"]["bounds_min"]), np.array(walk_data["normalisation"]["bounds_max"])
    assert abs((hi - lo).max() - 1) < 1e-4 and np.all(np.abs(lo + hi) < 1e-4)
    assert 0.5 < walk_data["normalisation"]["max_radius"] < 0.87
    # Bounding-sphere normalisation: every vertex within radius 0.5 of the origin, one touching it.
    assert run_data["normalisation"]["mode"] == "sphere"
    assert abs(run_data["normalisation"]["max_radius"] - 0.5) < 1e-3


@needs_bpy
def test_procedural_glb_export_round_trip(tmp_path):
    from gen4d.data.blender import export_procedural_glb, inspect_asset

    glb = export_procedural_glb("procedural:7:motion=wave,cycles=1", tmp_path / "c7.glb")
    assert glb.is_file() and inspect_asset(glb)["clips"] == ["wave"]
    config = RenderConfig(sets=("front",), size=64, samples=4, num_frames=3, denoise=False)
    direct = load_manifest(
        render_asset("procedural:7:motion=wave,cycles=1", tmp_path / "direct", config, progress=False)
    )
    via_glb = load_manifest(render_asset(glb, tmp_path / "glb", config, progress=False))
    for t in range(3):
        a, b = direct.alphas[t, ..., 0] > 0.5, via_glb.alphas[t, ..., 0] > 0.5
        iou = float((a & b).sum() / (a | b).sum())
        assert iou > 0.9, f"time {t}: silhouettes of the creature and its .glb differ (IoU {iou:.2f})"


@needs_bpy
def test_render_command(tmp_path, capsys):
    from gen4d.cli import main

    out = tmp_path / "cli"
    args = [
        "render",
        "procedural:1",
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--sets",
        "front,static-orbit",
        "--num_frames",
        "2",
        "--samples",
        "2",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "4 images (front 2, static_orbit 2)" in capsys.readouterr().out
    assert read_manifest(out)["render"]["settings"]["samples"] == 2
    assert main(["render", "procedural:1", "--list-clips"]) == 0
    assert "0: walk  (default)" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "missing.glb"), "--out", str(out)]) == 2
    assert "no such asset" in capsys.readouterr().err


CONVERT_SCRIPT = """
import sys, bpy
from gen4d.data.procedural import build_creature, parse_procedural_name
bpy.ops.wm.read_factory_settings(use_empty=True)
build_creature(parse_procedural_name(sys.argv[1]))
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])
bpy.ops.export_scene.fbx(filepath=sys.argv[3], bake_anim=True, bake_anim_use_all_actions=False,
                         bake_anim_use_nla_strips=True)
"""


@needs_bpy
def test_blend_and_fbx_assets_render_like_the_procedural_original(tmp_path):
    """.blend and .fbx loading: a creature saved by Blender renders (nearly) like the original.
    (Blender's FBX round trip drops the root empty's own keyframes, so the motion here is in the
    joints only: ``wave``.)"""
    asset = "procedural:5:motion=wave,cycles=1"
    blend, fbx = tmp_path / "c.blend", tmp_path / "c.fbx"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(
        [sys.executable, "-c", CONVERT_SCRIPT, asset, str(blend), str(fbx)],
        check=True,
        capture_output=True,
        timeout=120,
        env=env,
    )
    config = RenderConfig(sets=("front",), size=64, samples=2, num_frames=5, denoise=False)
    original = load_manifest(render_asset(asset, tmp_path / "orig", config, progress=False))
    for path, floor in ((blend, 0.99), (fbx, 0.8)):
        manifest = render_asset(path, tmp_path / path.suffix[1:], config, progress=False)
        assert read_manifest(manifest)["clip"]["name"] == "wave"
        video = load_manifest(manifest)
        assert (video.alphas[1] - video.alphas[0]).abs().mean() > 0.005  # it moves
        for t in range(5):
            a, b = original.alphas[t, ..., 0] > 0.5, video.alphas[t, ..., 0] > 0.5
            iou = float((a & b).sum() / (a | b).sum())
            assert iou > floor, f"{path.name} time {t}: IoU {iou:.3f} with the original"
