"""Renders of an exported animated glTF in Blender, at gen4d cameras and times (checks and pictures).

:func:`render_glb` imports the file with Blender's own glTF importer in a fresh Blender process
(``python -m gen4d.export.blender_preview JOB.json``, the process protocol of
:mod:`gen4d.data.blender`), shows time ``t`` as frame ``start + t (end - start)`` of the imported
clip and renders each camera with Workbench (flat lighting, transparent film): ``silhouette``
draws the object in one colour, ``colour`` with its vertex colours. It returns the RGBA images and
what Blender reports about the animation (frame range, fps, number of shape keys).

The Blender side needs only bpy and numpy.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

__all__ = ["render_glb"]

SHADINGS = ("silhouette", "colour")


def render_glb(
    path: str | os.PathLike,
    cameras,
    shading: Literal["silhouette", "colour"] = "silhouette",
    timeout: float | None = 600,
):
    """(images (C, H, W, 4) float in [0, 1], info dict) of Blender renders of the glb ``path`` at
    ``cameras`` (:class:`gen4d.cameras.Cameras` with centred principal points), each at its own
    time. Raises ImportError without bpy, ValueError when Blender cannot import the file."""
    import numpy as np
    import torch
    from PIL import Image

    from gen4d.cameras import to_blender_camera_to_world
    from gen4d.data.blender import _run_worker

    if shading not in SHADINGS:
        raise ValueError(f"render_glb: shading must be one of {SHADINGS}, got {shading!r}")
    centred = torch.allclose(cameras.cx, torch.full_like(cameras.cx, cameras.width / 2)) and torch.allclose(
        cameras.cy, torch.full_like(cameras.cy, cameras.height / 2)
    )
    if not centred:
        raise ValueError("render_glb: cameras must have centred principal points (cx = W / 2, cy = H / 2)")
    matrices = to_blender_camera_to_world(cameras).tolist()
    images = [
        {"file": f"{i:04d}.png", "time": float(t), "blender_camera_to_world": m, "fov_y_deg": float(fov)}
        for i, (t, m, fov) in enumerate(zip(cameras.times.tolist(), matrices, cameras.fov_y_deg.tolist()))
    ]
    with tempfile.TemporaryDirectory(prefix="gen4d_glb_preview_") as tmp:
        job = {
            "asset": str(Path(path).resolve()),
            "out_dir": tmp,
            "width": cameras.width,
            "height": cameras.height,
            "shading": shading,
            "images": images,
        }
        info = _run_worker(
            job, Path(tmp), Path(tmp) / "render.log", False, "", timeout, module="gen4d.export.blender_preview"
        )
        frames = [np.asarray(Image.open(Path(tmp) / image["file"]).convert("RGBA")) for image in images]
    return np.stack(frames).astype(np.float32) / 255.0, info


# ---------------------------------------------------------------------------------------
# The Blender side
# ---------------------------------------------------------------------------------------
def _setup(bpy, job: dict[str, Any]) -> None:
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "FLAT"
    scene.display.shading.color_type = "SINGLE" if job["shading"] == "silhouette" else "VERTEX"
    scene.display.shading.single_color = (0.2, 0.2, 0.2)
    scene.display.render_aa = "8"
    scene.render.film_transparent = True
    scene.render.resolution_x, scene.render.resolution_y = int(job["width"]), int(job["height"])
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"


def run_preview(job: dict[str, Any]) -> dict[str, Any]:
    import bpy
    from mathutils import Matrix

    from gen4d.data.blender_worker import AssetError, clip_frame_range, load_asset, select_clip, set_frame

    facts = load_asset(bpy, job["asset"])
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not meshes:
        raise AssetError(f"{job['asset']}: no mesh")
    keys = [k for o in meshes if o.data.shape_keys for k in o.data.shape_keys.key_blocks]
    info: dict[str, Any] = {"shape_keys": len(keys), "vertices": sum(len(o.data.vertices) for o in meshes)}
    scene = bpy.context.scene
    info["fps"] = scene.render.fps / scene.render.fps_base
    start = end = float(scene.frame_current)
    if facts.get("clip_order"):
        info["clip"] = select_clip(bpy, facts["clip_order"], "")[1]
        start, end = clip_frame_range(bpy)
    info["frame_start"], info["frame_end"] = start, end
    _setup(bpy, job)
    camera_data = bpy.data.cameras.new("gen4d_camera")
    camera_data.sensor_fit = "VERTICAL"
    camera_data.clip_start, camera_data.clip_end = 0.01, 1000.0
    camera = bpy.data.objects.new("gen4d_camera", camera_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    out_dir = Path(job["out_dir"])
    for image in job["images"]:
        set_frame(bpy, start + float(image["time"]) * (end - start))
        camera.matrix_world = Matrix(image["blender_camera_to_world"])
        camera_data.angle_y = math.radians(float(image["fov_y_deg"]))
        scene.render.filepath = str(out_dir / image["file"])
        bpy.ops.render.render(write_still=True)
    return info


def main(argv: list[str] | None = None) -> int:
    from gen4d.data.blender_worker import main as worker_main

    return worker_main(argv, run=run_preview)


if __name__ == "__main__":
    sys.exit(main())
