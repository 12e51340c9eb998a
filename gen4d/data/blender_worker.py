"""The Blender side of ``gen4d render``: one fresh process per job (``python -m
gen4d.data.blender_worker JOB.json``), so bpy's global state never leaks between renders.

The job (written by :mod:`gen4d.data.blender`) names the asset, the render settings and the
images to make (file, time, frame index, Blender camera-to-world, fov). The worker loads the
asset, picks the clip (others muted), normalises the object over the sampled times, lights it as
the Diffusion4D script does, renders every image whose file does not exist yet (so a rerun
resumes) and writes ``info`` JSON (clip, frame range, normalisation, lights, source frame of each
image, or the error). Progress goes to stdout as lines ``GEN4D {"done": n, ...}``.

The worker is split by concern: loading and clips in :mod:`gen4d.data.blender_asset`, the scene
(normalisation, lights, Cycles) in :mod:`gen4d.data.blender_scene`, the render loop here.
Needs only bpy and numpy (no torch).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gen4d.data.blender_asset import (
    AssetError,
    clip_frame_range,
    list_clips,
    load_asset,
    renderable_objects,
    select_clip,
)
from gen4d.data.blender_scene import add_lights, normalise, set_frame, setup_render

PROGRESS_PREFIX = "GEN4D "


def _emit(**payload: Any) -> None:
    sys.stdout.write(PROGRESS_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def source_frames(job: dict[str, Any], start: float, end: float) -> list[float]:
    mapping = job["config"]["time_mapping"]
    steps = max(int(job["num_frames"]) - 1, 1)
    frames = []
    for image in job["images"]:
        if mapping == "clip":  # t = k / (T - 1) exactly (the manifest's float32 time rounds it)
            frames.append(start + int(image["frame_index"]) / steps * (end - start))
        else:  # raw: Diffusion4D's frame_set(0..T-1) counted from the clip start
            frames.append(start + int(image["frame_index"]))
    return frames


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import bpy

    cfg = job["config"]
    info: dict[str, Any] = {"blender": bpy.app.version_string}
    if job.get("export_glb"):
        from gen4d.data.procedural import export_glb, parse_procedural_name

        info["path"] = str(export_glb(parse_procedural_name(job["asset"]), job["export_glb"]))
        return info
    facts = load_asset(bpy, job["asset"])
    info["asset"] = facts
    objects = renderable_objects(bpy)
    if not objects:
        raise AssetError(f"{job['asset']}: no mesh to render")
    clips = list_clips(bpy, facts.get("clip_order"))
    info["clips"] = clips
    if job.get("inspect"):
        return info
    scene = bpy.context.scene
    dynamic = any(image["split"] != "static_orbit" for image in job["images"])
    if clips:
        index, name = select_clip(bpy, facts.get("clip_order"), str(cfg["clip"]))
        start, end = clip_frame_range(bpy)
        if end <= start and dynamic:
            raise AssetError(f"clip {name!r} has a single frame ({start}); nothing moves")
        info["clip"] = {
            "name": name,
            "index": index,
            "frame_start": start,
            "frame_end": end,
            "fps": scene.render.fps / scene.render.fps_base,
            "time_mapping": cfg["time_mapping"],
        }
        frames = source_frames(job, start, end)
    else:
        if dynamic and not cfg.get("allow_static"):
            raise AssetError(
                f"{job['asset']} has no animation: render only the static set (--sets static_orbit), or pass "
                "--allow_static true (allow_static=True) to render every set of the still object",
                code="no_animation",
            )
        start = end = float(scene.frame_current)
        info["clip"] = {
            "name": None,
            "index": None,
            "frame_start": start,
            "frame_end": end,
            "fps": scene.render.fps,
            "time_mapping": "none (no animation)",
        }
        frames = [start] * len(job["images"])
    info["source_frames"] = frames
    if cfg["normalise_over"] == "first":
        norm_frames = [start]
    else:
        norm_frames = sorted(set(frames)) or [start]
    info["normalisation"] = normalise(bpy, objects, norm_frames, cfg["normalise"])
    info["normalisation"]["over"] = cfg["normalise_over"]
    info["lights"] = add_lights(bpy, int(cfg["seed"]))
    info["engine"] = setup_render(bpy, job)
    camera_data = bpy.data.cameras.new("gen4d_camera")
    camera_data.sensor_fit = "AUTO"
    camera_data.clip_start, camera_data.clip_end = 0.01, 1000.0
    camera = bpy.data.objects.new("gen4d_camera", camera_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    from mathutils import Matrix

    out_dir = Path(job["out_dir"])
    for stale in out_dir.glob("*/.*.partial.png"):  # left by an interrupted run
        stale.unlink(missing_ok=True)
    todo = [i for i, image in enumerate(job["images"]) if not (out_dir / image["file"]).is_file()]
    _emit(total=len(job["images"]), todo=len(todo))
    timings = []
    for i in sorted(todo, key=lambda k: frames[k]):
        image = job["images"][i]
        target = out_dir / image["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.stem}.partial.png")
        set_frame(bpy, frames[i])
        camera.matrix_world = Matrix(image["blender_camera_to_world"])
        camera_data.angle = math.radians(float(image["fov_deg"]))
        scene.render.filepath = str(partial)
        began = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        timings.append(time.perf_counter() - began)
        os.replace(partial, target)
        _emit(done=image["file"], seconds=timings[-1])
    info["render_seconds"] = timings
    return info


def main(argv: list[str] | None = None, run=run_job) -> int:
    """Run the job file ``argv[0]`` with ``run(job) -> info`` and write the info (or the error) to
    the job's ``info_path``: exit 0, 3 (the asset's fault) or 4 (internal error)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gen4d.data.blender_worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    info_path = Path(job["info_path"])
    try:
        info = run(job)
        status = 0
    except AssetError as err:
        info, status = {"error": str(err), "kind": "asset", "code": err.code}, 3
    except Exception as err:  # report, do not hide: the parent shows the traceback tail
        info, status = (
            {"error": f"{type(err).__name__}: {err}", "kind": "internal", "traceback": traceback.format_exc()},
            4,
        )
    tmp = info_path.with_name(info_path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, info_path)
    return status


if __name__ == "__main__":
    sys.exit(main())
