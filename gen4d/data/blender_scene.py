"""Blender side of ``gen4d render``, part 2: the scene around a loaded asset (frame stepping,
normalisation into the unit cube, the Diffusion4D lights, Cycles and colour settings). Runs inside
the bpy worker process (:mod:`gen4d.data.blender_worker`); needs only bpy (passed in) and numpy.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from gen4d.data.blender_asset import AssetError

# The four shadowless sun lights of the Diffusion4D / Objaverse rendering script: Euler XYZ
# rotation (radians) and the energies one is drawn from.
LIGHTS = (
    ("key", (0.785398, 0.0, -0.785398), (3.0, 4.0, 5.0)),
    ("fill", (0.785398, 0.0, 2.35619), (2.0, 3.0, 4.0)),
    ("rim", (-0.785398, 0.0, -3.92699), (3.0, 4.0, 5.0)),
    ("bottom", (3.14159, 0.0, 0.0), (1.0, 2.0, 3.0)),
)


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
