"""The Blender side of ``gen4d render``: one fresh process per job (``python -m
gen4d.data.blender_worker JOB.json``), so bpy's global state never leaks between renders.

The job (written by :mod:`gen4d.data.blender`) names the asset, the render settings and the
images to make (file, time, frame index, Blender camera-to-world, fov). The worker loads the
asset, picks the clip (others muted), normalises the object over the sampled times, lights it as
the Diffusion4D script does, renders every image whose file does not exist yet (so a rerun
resumes) and writes ``info`` JSON (clip, frame range, normalisation, lights, source frame of each
image, or the error). Progress goes to stdout as lines ``GEN4D {"done": n, ...}``.

Needs only bpy and numpy (no torch).
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED_SUFFIXES = (".glb", ".gltf", ".fbx", ".blend")
PROGRESS_PREFIX = "GEN4D "
# The four shadowless sun lights of the Diffusion4D / Objaverse rendering script: Euler XYZ
# rotation (radians) and the energies one is drawn from.
LIGHTS = (
    ("key", (0.785398, 0.0, -0.785398), (3.0, 4.0, 5.0)),
    ("fill", (0.785398, 0.0, 2.35619), (2.0, 3.0, 4.0)),
    ("rim", (-0.785398, 0.0, -3.92699), (3.0, 4.0, 5.0)),
    ("bottom", (3.14159, 0.0, 0.0), (1.0, 2.0, 3.0)),
)


class AssetError(Exception):
    """A problem with the asset itself (reported to the user without a traceback); ``code``
    names machine-readable cases (``no_animation``)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def _emit(**payload: Any) -> None:
    sys.stdout.write(PROGRESS_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
def gltf_animation_names(path: Path) -> list[str]:
    """Animation names of a .gltf / .glb file in file order (read from its JSON chunk)."""
    data = path.read_bytes()
    if path.suffix.lower() == ".glb":
        if len(data) < 20 or data[:4] != b"glTF":
            raise AssetError(f"{path}: not a binary glTF file (bad header)")
        length, chunk_type = struct.unpack_from("<II", data, 12)
        if chunk_type != 0x4E4F534A:  # "JSON"
            raise AssetError(f"{path}: binary glTF without a JSON chunk")
        text = data[20 : 20 + length]
    else:
        text = data
    try:
        document = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AssetError(f"{path}: corrupt glTF JSON ({err})") from None
    animations = document.get("animations") or []
    return [a.get("name") or f"Animation_{i}" for i, a in enumerate(animations)]


def load_asset(bpy, asset: str) -> dict[str, Any]:
    """Load ``asset`` into an empty scene; returns facts about it (kind, name, glTF clip order)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    facts: dict[str, Any] = {"clip_order": None}
    if asset.startswith("procedural:"):
        from gen4d.data.procedural import build_creature, parse_procedural_name

        spec = parse_procedural_name(asset)
        build_creature(spec)
        facts.update(kind="procedural", name=spec.name, spec=spec.to_dict())
        return facts
    path = Path(asset)
    if not path.is_file():
        raise AssetError(f"no such asset file: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise AssetError(f"{path}: unsupported format {suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")
    facts.update(kind=suffix[1:], name=path.stem)
    try:
        if suffix in (".glb", ".gltf"):
            facts["clip_order"] = gltf_animation_names(path)
            result = bpy.ops.import_scene.gltf(filepath=str(path), disable_bone_shape=True)
        elif suffix == ".fbx":
            result = bpy.ops.import_scene.fbx(filepath=str(path))
        else:
            result = bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    except AssetError:
        raise
    except Exception as err:  # bpy raises RuntimeError with the importer's message
        message = " ".join(str(err).split())
        raise AssetError(f"{path}: could not import the {suffix[1:]} file ({message[:400]})") from None
    if "FINISHED" not in result:
        raise AssetError(f"{path}: the {suffix[1:]} importer did not finish ({result})")
    if suffix == ".blend":
        # Keep the asset only: our cameras and lights replace the file's.
        for obj in list(bpy.data.objects):
            if obj.type in ("CAMERA", "LIGHT"):
                bpy.data.objects.remove(obj, do_unlink=True)
    return facts


def renderable_objects(bpy) -> list:
    scene = bpy.context.scene
    kinds = {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME"}
    return [o for o in scene.objects if o.type in kinds and not o.hide_render]


# ---------------------------------------------------------------------------------------
# Animation clips
# ---------------------------------------------------------------------------------------
def _animated_ids(bpy) -> list:
    ids = [o for o in bpy.data.objects if o.animation_data]
    ids += [k for k in bpy.data.shape_keys if k.animation_data]
    ids += [m for m in bpy.data.materials if m.animation_data]
    return ids


def _owner_key(owner) -> str:
    return f"{type(owner).__name__}:{owner.name}"


def discover_clips(bpy, clip_order: list[str] | None) -> dict[str, dict[str, Any]]:
    """Clip name -> {owner key: action}, in clip order.

    * NLA tracks (glTF: one track per animation on every animated datablock, listed in the file's
      order; procedural creatures: one track named after the motion): a clip per track name.
    * Else FBX-style actions named ``<object>|<take>``: a clip per take.
    * Else the active actions together form one clip (named after the first), and when a single
      datablock is animated, each other action suited to it is a clip of its own.
    """
    owners = _animated_ids(bpy)
    clips: dict[str, dict[str, Any]] = {}
    for owner in owners:
        for track in owner.animation_data.nla_tracks:
            if track.strips and track.strips[0].action is not None:
                clips.setdefault(track.name, {})[_owner_key(owner)] = track.strips[0].action
    if clips:
        if clip_order:
            order = {n: i for i, n in enumerate(clip_order)}
            clips = dict(sorted(clips.items(), key=lambda item: order.get(item[0], len(order))))
        return clips
    by_name = {}
    for owner in list(bpy.data.objects) + list(bpy.data.shape_keys):
        by_name.setdefault(owner.name, owner)
    takes: dict[str, dict[str, Any]] = {}
    for action in bpy.data.actions:
        target, sep, take = action.name.partition("|")
        if sep and take and target in by_name:
            takes.setdefault(take, {})[_owner_key(by_name[target])] = action
    if takes:
        return takes
    active = [(owner, owner.animation_data.action) for owner in owners if owner.animation_data.action is not None]
    if not active:
        return {}
    clips[active[0][1].name] = {_owner_key(owner): action for owner, action in active}
    if len(active) == 1:
        owner, current = active[0]
        for action in bpy.data.actions:
            if action is not current and action.users >= 0 and action.name not in clips:
                clips[action.name] = {_owner_key(owner): action}
    return clips


def list_clips(bpy, clip_order: list[str] | None) -> list[str]:
    return list(discover_clips(bpy, clip_order))


def _assign_action(owner, action) -> None:
    if owner.animation_data is None:
        owner.animation_data_create()
    data = owner.animation_data
    data.action = action
    if action is not None and hasattr(data, "action_slot"):
        slots = list(getattr(data, "action_suitable_slots", []) or [])
        if slots and data.action_slot is None:
            data.action_slot = slots[0]


def select_clip(bpy, clip_order: list[str] | None, request: str) -> tuple[int, str]:
    """Apply clip ``request`` (name, index or "" = the first): its actions become the active
    actions of their datablocks, every other datablock loses its action and every NLA track is
    muted (so clips never blend). Returns (index, name)."""
    clips = discover_clips(bpy, clip_order)
    names = list(clips)
    if not names:
        raise AssetError("the asset has no animation clip")
    if request == "":
        index = 0
    elif request.lstrip("-").isdigit():
        index = int(request)
        if not 0 <= index < len(names):
            raise AssetError(f"clip index {index} out of range: the asset has {len(names)} clips {names}")
    elif request in clips:
        index = names.index(request)
    else:
        raise AssetError(f"no clip named {request!r}; the asset has {names}")
    name = names[index]
    chosen = clips[name]
    by_key = {_owner_key(o): o for o in list(bpy.data.objects) + list(bpy.data.shape_keys) + list(bpy.data.materials)}
    for key, owner in by_key.items():
        if owner.animation_data is None and key not in chosen:
            continue
        if owner.animation_data is not None:
            for track in owner.animation_data.nla_tracks:
                track.mute = True
        _assign_action(owner, chosen.get(key))
    return index, name


def clip_frame_range(bpy) -> tuple[float, float]:
    starts, ends = [], []
    for owner in _animated_ids(bpy):
        action = owner.animation_data.action
        if action is not None:
            start, end = action.frame_range
            starts.append(float(start))
            ends.append(float(end))
    if not starts:
        raise AssetError("the chosen clip animates nothing")
    return min(starts), max(ends)


# ---------------------------------------------------------------------------------------
# Scene set-up
# ---------------------------------------------------------------------------------------
def set_frame(bpy, frame: float) -> None:
    whole = math.floor(frame)
    bpy.context.scene.frame_set(int(whole), subframe=float(frame - whole))


def world_points(bpy, objects) -> np.ndarray:
    """(N, 3) world-space vertices of the evaluated (deformed) objects at the current frame."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    chunks = []
    for obj in objects:
        evaluated = obj.evaluated_get(depsgraph)
        try:
            mesh = evaluated.to_mesh()
        except RuntimeError:
            continue
        if mesh is None:
            continue
        count = len(mesh.vertices)
        if count:
            co = np.empty(count * 3, dtype=np.float64)
            mesh.vertices.foreach_get("co", co)
            matrix = np.array(evaluated.matrix_world, dtype=np.float64)
            chunks.append(co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3])
        evaluated.to_mesh_clear()
    return np.concatenate(chunks) if chunks else np.zeros((0, 3))


def normalise(bpy, objects, frames: list[float], mode: str) -> dict[str, Any]:
    """Scale and move the whole asset so its vertices over ``frames`` fit the unit cube centred
    at the origin (``box``: largest bounding-box side = 1) or a sphere of diameter 1 around the
    bounding-box centre (``sphere``). Done by parenting every root object to one scaled empty."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    radius_points = []
    for frame in frames:
        set_frame(bpy, frame)
        points = world_points(bpy, objects)
        if len(points):
            lo, hi = np.minimum(lo, points.min(0)), np.maximum(hi, points.max(0))
            radius_points.append(points)
    if not np.isfinite(lo).all():
        raise AssetError("the asset has no vertices to render")
    centre = (lo + hi) / 2
    if mode == "box":
        extent = float((hi - lo).max())
        scale = 1.0 / extent if extent > 0 else 1.0
    elif mode == "sphere":
        radius = max(float(np.linalg.norm(p - centre, axis=1).max()) for p in radius_points)
        scale = 0.5 / radius if radius > 0 else 1.0
    else:
        raise AssetError(f"unknown normalisation {mode!r} (expected 'box' or 'sphere')")
    normaliser = bpy.data.objects.new("gen4d_normaliser", None)
    bpy.context.scene.collection.objects.link(normaliser)
    normaliser.scale = (scale, scale, scale)
    normaliser.location = tuple(float(v) for v in -scale * centre)
    from mathutils import Matrix

    for obj in list(bpy.context.scene.objects):
        if obj is normaliser or obj.parent is not None or obj.type in ("CAMERA", "LIGHT"):
            continue
        obj.parent = normaliser
        obj.matrix_parent_inverse = Matrix.Identity(4)
    # Check the result over the same frames.
    after_lo, after_hi, after_radius = np.full(3, np.inf), np.full(3, -np.inf), 0.0
    for frame in frames:
        set_frame(bpy, frame)
        points = world_points(bpy, objects)
        after_lo, after_hi = np.minimum(after_lo, points.min(0)), np.maximum(after_hi, points.max(0))
        after_radius = max(after_radius, float(np.linalg.norm(points, axis=1).max()))
    return {
        "mode": mode,
        "scale": scale,
        "offset": [float(v) for v in -scale * centre],
        "source_bounds_min": lo.tolist(),
        "source_bounds_max": hi.tolist(),
        "bounds_min": after_lo.tolist(),
        "bounds_max": after_hi.tolist(),
        "max_radius": after_radius,
        "frames_used": len(frames),
        "formula": "p_render = scale * p_source + offset",
    }


def add_lights(bpy, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    lights = []
    for name, rotation, energies in LIGHTS:
        energy = rng.choice(energies)
        data = bpy.data.lights.new(f"gen4d_{name}", type="SUN")
        data.energy = energy
        data.use_shadow = False
        data.specular_factor = 1.0
        obj = bpy.data.objects.new(f"gen4d_{name}", data)
        obj.rotation_euler = rotation
        bpy.context.scene.collection.objects.link(obj)
        lights.append(
            {"name": name, "type": "SUN", "energy": energy, "rotation_euler": list(rotation), "shadow": False}
        )
    return lights


def setup_render(bpy, job: dict[str, Any]) -> dict[str, Any]:
    cfg = job["config"]
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = int(cfg["samples"])
    scene.cycles.seed = int(cfg["seed"])
    scene.cycles.use_animated_seed = False
    scene.cycles.use_denoising = bool(cfg["denoise"])
    if cfg["denoise"]:
        scene.cycles.denoiser = "OPENIMAGEDENOISE"
    scene.render.film_transparent = True
    scene.render.resolution_x = int(job["width"])
    scene.render.resolution_y = int(job["height"])
    scene.render.resolution_percentage = 100
    scene.render.use_persistent_data = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    if int(cfg.get("threads", 0)) > 0:
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(cfg["threads"])
    device = "CPU"
    if cfg["device"] == "gpu":
        prefs = bpy.context.preferences.addons["cycles"].preferences
        found = None
        for backend in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
            try:
                prefs.compute_device_type = backend
            except TypeError:
                continue
            prefs.get_devices()
            gpus = [d for d in prefs.devices if d.type != "CPU"]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type != "CPU"
                found = backend
                break
        if found is None:
            raise AssetError("no GPU device usable by Cycles was found; render with --device cpu")
        scene.cycles.device = "GPU"
        device = f"GPU ({found})"
    # A dim grey world like Blender's default scene (the Diffusion4D script rendered in it).
    world = bpy.data.worlds.new("gen4d_world")
    world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    background.inputs["Color"].default_value = (0.0508, 0.0508, 0.0508, 1.0)
    background.inputs["Strength"].default_value = 1.0
    scene.world = world
    return {"engine": "CYCLES", "device": device}


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
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
