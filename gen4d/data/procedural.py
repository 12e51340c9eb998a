"""Procedural animated assets: articulated creatures built from primitives, varied by a seed.

gen4d's own source of animated 3D content, with no external asset: the embedded default data set
(``gen4d/assets/default``), curation test cases and a training set for the video diffusion model.

A :class:`CreatureSpec` (pure Python, drawn by :func:`creature_spec` from a seed) describes the
shape (body primitive and proportions, head, 0/2/4/6 legs, optional arms and tail), the colours
and the motion (type, magnitude, cycles over the clip). :func:`build_creature` turns a spec into a
Blender scene: every part is a mesh made with ``bmesh`` primitives; joints are empties that the
parts hang from, and the motion is keyframed on the joints and on the root (rigid articulated
parts, no skinning). It runs inside a Blender process (``gen4d render procedural:SEED`` or
:func:`export_glb`); this module imports ``bpy`` only inside those functions.

Asset names: ``procedural:SEED`` or ``procedural:SEED:key=value,key=value`` to override fields,
e.g. ``procedural:3:motion=hop,magnitude=0.8``.

Orientation: the creature faces -Y (gen4d's front), stands on z = 0 before normalisation; its
eyes are on the front of the head so front and back views differ.

Motions (all loop over the clip, ``cycles`` times):
  walk   legs swing in alternating pairs, body bobs, tail wags
  wave   arms (or front legs) flap, head nods
  hop    the whole creature jumps, legs tuck
  spin   the creature turns back and forth about its vertical axis
  sway   the body rolls side to side, the head turns
  still  keyframes exist but nothing moves (a "too static" asset for curation tests)
  leave  the creature slides sideways out of its starting place (an asset that leaves the frame
         when normalised at its first frame)
  none   no animation at all (a static asset)
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MOTIONS",
    "RANDOM_MOTIONS",
    "CreatureSpec",
    "creature_spec",
    "parse_procedural_name",
    "is_procedural",
    "build_creature",
    "export_glb",
]

Motion = Literal["walk", "wave", "hop", "spin", "sway", "still", "leave", "none"]
MOTIONS: tuple[str, ...] = ("walk", "wave", "hop", "spin", "sway", "still", "leave", "none")
RANDOM_MOTIONS: tuple[str, ...] = ("walk", "wave", "hop", "spin", "sway")
PREFIX = "procedural:"


@dataclass(frozen=True)
class CreatureSpec:
    """One procedural creature: shape, colours and motion. Lengths in arbitrary units (the
    renderer normalises the object into the unit cube)."""

    seed: int = 0
    """Seed the spec was drawn from (recorded for provenance)."""
    body_shape: Literal["ellipsoid", "box", "cylinder"] = "ellipsoid"
    """Primitive of the torso."""
    body_size: tuple[float, float, float] = (0.6, 1.0, 0.5)
    """Torso extent along x (width), y (length, front at -y) and z (height)."""
    head_size: float = 0.35
    """Head diameter."""
    leg_count: int = 4
    """0, 2, 4 or 6 legs under the torso."""
    leg_length: float = 0.6
    """Leg length (hip to foot)."""
    leg_radius: float = 0.07
    """Leg thickness (radius)."""
    arm_count: int = 0
    """0 or 2 arms / wings on the sides of the torso."""
    arm_length: float = 0.5
    """Arm length."""
    tail_length: float = 0.0
    """Tail length (0 = no tail)."""
    body_color: tuple[float, float, float] = (0.8, 0.4, 0.2)
    """Linear RGB of the torso."""
    limb_color: tuple[float, float, float] = (0.3, 0.5, 0.8)
    """Linear RGB of the legs, arms and tail."""
    head_color: tuple[float, float, float] = (0.9, 0.8, 0.3)
    """Linear RGB of the head."""
    motion: Motion = "walk"
    """Motion type (see the module docstring)."""
    magnitude: float = 0.7
    """Motion amplitude in (0, 1]: 1 = the largest swing / jump / turn."""
    cycles: int = 2
    """Motion periods over the clip (the clip loops)."""
    num_frames: int = 48
    """Clip length in frames at ``fps`` (frames 0..num_frames)."""
    fps: int = 24
    """Frames per second of the clip."""

    def __post_init__(self) -> None:
        if self.motion not in MOTIONS:
            raise ValueError(f"CreatureSpec.motion: {self.motion!r} is not one of {list(MOTIONS)}")
        if self.leg_count not in (0, 2, 4, 6):
            raise ValueError(f"CreatureSpec.leg_count: expected 0, 2, 4 or 6, got {self.leg_count}")
        if self.arm_count not in (0, 2):
            raise ValueError(f"CreatureSpec.arm_count: expected 0 or 2, got {self.arm_count}")
        if not 0.0 <= self.magnitude <= 1.0:
            raise ValueError(f"CreatureSpec.magnitude: expected a value in [0, 1], got {self.magnitude}")
        if self.num_frames < 2 or self.cycles < 1:
            raise ValueError("CreatureSpec: num_frames must be >= 2 and cycles >= 1")
        if self.body_shape not in ("ellipsoid", "box", "cylinder"):
            raise ValueError(f"CreatureSpec.body_shape: unknown shape {self.body_shape!r}")

    @property
    def name(self) -> str:
        return f"creature{self.seed}_{self.motion}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _color(rng: random.Random, hue: float | None = None) -> tuple[float, float, float]:
    hue = rng.random() if hue is None else hue % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.9), rng.uniform(0.55, 0.95))
    return (round(r**2.2, 4), round(g**2.2, 4), round(b**2.2, 4))  # sRGB-ish -> linear


def creature_spec(seed: int, **overrides: Any) -> CreatureSpec:
    """Draw a creature from ``seed`` (deterministic); ``overrides`` replace drawn fields."""
    rng = random.Random(int(seed))
    hue = rng.random()
    legs = rng.choice([0, 2, 4, 4, 4, 6])
    arms = rng.choice([0, 2]) if legs != 2 else 2
    spec = CreatureSpec(
        seed=int(seed),
        body_shape=rng.choice(["ellipsoid", "ellipsoid", "box", "cylinder"]),
        body_size=(round(rng.uniform(0.45, 0.8), 3), round(rng.uniform(0.7, 1.2), 3), round(rng.uniform(0.35, 0.6), 3)),
        head_size=round(rng.uniform(0.28, 0.45), 3),
        leg_count=legs,
        leg_length=round(rng.uniform(0.35, 0.7), 3),
        leg_radius=round(rng.uniform(0.05, 0.1), 3),
        arm_count=arms,
        arm_length=round(rng.uniform(0.25, 0.45), 3),
        tail_length=round(rng.choice([0.0, rng.uniform(0.3, 0.7)]), 3),
        body_color=_color(rng, hue),
        limb_color=_color(rng, hue + rng.uniform(0.25, 0.75)),
        head_color=_color(rng, hue + rng.uniform(-0.1, 0.1)),
        motion=rng.choice(list(RANDOM_MOTIONS)),
        magnitude=round(rng.uniform(0.4, 1.0), 3),
        cycles=rng.choice([1, 2, 2, 3]),
        num_frames=48,
        fps=24,
    )
    if spec.motion == "wave" and spec.arm_count == 0 and spec.leg_count == 0:
        spec = replace(spec, arm_count=2)
    return replace(spec, **_coerce_overrides(overrides)) if overrides else spec


def _coerce_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(CreatureSpec)}
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in types:
            raise ValueError(f"procedural asset: unknown field {key!r}; fields are {sorted(types)}")
        kind = str(types[key])
        if isinstance(value, str):
            if "tuple" in kind:
                value = tuple(float(v) for v in value.replace("/", " ").replace(";", " ").split())
            elif kind in ("int", "<class 'int'>"):
                value = int(value)
            elif kind in ("float", "<class 'float'>"):
                value = float(value)
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def is_procedural(asset: str | Path) -> bool:
    return str(asset).startswith(PREFIX)


def parse_procedural_name(asset: str) -> CreatureSpec:
    """``procedural:SEED`` or ``procedural:SEED:key=value,key=value`` -> :class:`CreatureSpec`."""
    if not is_procedural(asset):
        raise ValueError(f"{asset!r} is not a procedural asset name (expected 'procedural:SEED[:key=value,...]')")
    rest = str(asset)[len(PREFIX) :]
    seed_text, _, options = rest.partition(":")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"{asset!r}: the seed must be an integer (e.g. 'procedural:3')") from None
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{asset!r}: expected key=value after the seed, got {item!r}")
        overrides[key.strip()] = value.strip()
    return creature_spec(seed, **overrides)


# ---------------------------------------------------------------------------------------
# Motion curves (pure functions of the frame; shared by the builder and the tests)
# ---------------------------------------------------------------------------------------
def joint_angles(spec: CreatureSpec, frame: float) -> dict[str, Any]:
    """Pose of every joint at ``frame``: rotations in radians (XYZ Euler) and the root offset.

    Keys: ``root_location`` (x, y, z), ``root_rotation``, ``leg{i}``, ``arm{i}``, ``tail``, ``head``.
    """
    phase = 2 * math.pi * spec.cycles * frame / spec.num_frames
    m = spec.magnitude if spec.motion not in ("still", "none") else 0.0
    s, c = math.sin(phase), math.cos(phase)
    pose: dict[str, Any] = {
        "root_location": (0.0, 0.0, 0.0),
        "root_rotation": (0.0, 0.0, 0.0),
        "head": (0.0, 0.0, 0.0),
        "tail": (0.0, 0.0, 0.0),
    }
    for i in range(spec.leg_count):
        pose[f"leg{i}"] = (0.0, 0.0, 0.0)
    for i in range(spec.arm_count):
        pose[f"arm{i}"] = (0.0, 0.0, 0.0)
    motion = spec.motion
    if motion == "walk":
        for i in range(spec.leg_count):
            pair, side = divmod(i, 2)
            sign = 1.0 if (pair + side) % 2 == 0 else -1.0
            pose[f"leg{i}"] = (sign * 0.6 * m * s, 0.0, 0.0)
        for i in range(spec.arm_count):
            pose[f"arm{i}"] = ((-1.0 if i % 2 == 0 else 1.0) * 0.5 * m * s, 0.0, 0.0)
        pose["root_location"] = (0.0, 0.0, 0.06 * m * abs(s))
        pose["tail"] = (0.0, 0.0, 0.6 * m * s)
    elif motion == "wave":
        for i in range(spec.arm_count):
            pose[f"arm{i}"] = (0.0, (1.0 if i % 2 == 0 else -1.0) * 1.1 * m * (0.5 + 0.5 * s), 0.0)
        if spec.arm_count == 0:
            for i in range(min(2, spec.leg_count)):
                pose[f"leg{i}"] = (-1.2 * m * (0.5 + 0.5 * s), 0.0, 0.0)
        pose["head"] = (0.35 * m * c, 0.0, 0.0)
        pose["tail"] = (0.0, 0.0, 0.4 * m * c)
    elif motion == "hop":
        height = 0.5 * m * max(0.0, s)
        pose["root_location"] = (0.0, 0.0, height)
        for i in range(spec.leg_count):
            pose[f"leg{i}"] = ((0.6 if i < 2 else -0.6) * m * max(0.0, s), 0.0, 0.0)
        pose["tail"] = (0.5 * m * s, 0.0, 0.0)
    elif motion == "spin":
        pose["root_rotation"] = (0.0, 0.0, 0.5 * math.pi * m * s)
        pose["head"] = (0.0, 0.0, 0.3 * m * c)
    elif motion == "sway":
        pose["root_rotation"] = (0.0, 0.3 * m * s, 0.0)
        pose["head"] = (0.0, 0.0, 0.6 * m * c)
        for i in range(spec.arm_count):
            pose[f"arm{i}"] = (0.0, 0.4 * m * s, 0.0)
    elif motion == "leave":
        # Slides to +x over the clip (not looping): 3 body widths by the end at magnitude 1.
        pose["root_location"] = (3.0 * max(spec.body_size) * m * frame / spec.num_frames, 0.0, 0.0)
        for i in range(spec.leg_count):
            pose[f"leg{i}"] = ((1 if i % 2 == 0 else -1) * 0.5 * m * s, 0.0, 0.0)
    return pose


# ---------------------------------------------------------------------------------------
# Blender builder (runs inside a Blender process)
# ---------------------------------------------------------------------------------------
def _material(bpy, name: str, color: tuple[float, float, float], roughness: float = 0.55):
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    bsdf = material.node_tree.nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    material.diffuse_color = (*color, 1.0)
    return material


def _mesh_object(
    bpy,
    name: str,
    kind: str,
    size: tuple[float, float, float],
    material,
    parent=None,
    location=(0, 0, 0),
    along_x: bool = False,
):
    import bmesh
    from mathutils import Matrix

    bm = bmesh.new()
    if kind == "ellipsoid":
        bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=0.5)
    elif kind == "box":
        bmesh.ops.create_cube(bm, size=1.0)
    elif kind == "cylinder":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=20, radius1=0.5, radius2=0.5, depth=1.0)
    elif kind == "cone":
        bmesh.ops.create_cone(bm, cap_ends=True, segments=16, radius1=0.5, radius2=0.15, depth=1.0)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    bmesh.ops.scale(bm, vec=size, verts=bm.verts)
    if along_x:  # primitives are built along z; lay this one along x
        bmesh.ops.rotate(bm, cent=(0, 0, 0), matrix=Matrix.Rotation(math.pi / 2, 3, "Y"), verts=bm.verts)
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    for polygon in mesh.polygons:
        polygon.use_smooth = kind != "box"
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = parent
    obj.location = location
    return obj


def _joint(bpy, name: str, parent, location):
    obj = bpy.data.objects.new(name, None)
    obj.empty_display_size = 0.05
    bpy.context.scene.collection.objects.link(obj)
    obj.parent = parent
    obj.location = location
    obj.rotation_mode = "XYZ"
    return obj


def build_creature(spec: CreatureSpec):
    """Build ``spec`` into the current Blender scene; returns the root object.

    Keyframes cover frames 0..num_frames (every frame, so the motion is exact at integer frames
    and smooth between them); the scene's fps is set to ``spec.fps``. With motion ``none`` no
    keyframe is written.
    """
    import bpy

    scene = bpy.context.scene
    scene.render.fps = spec.fps
    mats = {
        "body": _material(bpy, "body", spec.body_color),
        "limb": _material(bpy, "limb", spec.limb_color),
        "head": _material(bpy, "head", spec.head_color),
        "eye": _material(bpy, "eye", (0.02, 0.02, 0.02), roughness=0.2),
    }
    bx, by, bz = spec.body_size
    hip_height = spec.leg_length if spec.leg_count else 0.0
    root = _joint(bpy, spec.name, None, (0.0, 0.0, 0.0))
    body_joint = _joint(bpy, "body_joint", root, (0.0, 0.0, hip_height + bz / 2))
    _mesh_object(bpy, "body", spec.body_shape, (bx, by, bz), mats["body"], body_joint)
    # Head at the front (-y), above the torso's front end; eyes on its front.
    head_joint = _joint(bpy, "neck", body_joint, (0.0, -by * 0.4, bz * 0.25))
    hs = spec.head_size
    head = _mesh_object(bpy, "head", "ellipsoid", (hs, hs, hs), mats["head"], head_joint, (0.0, -hs * 0.25, hs * 0.25))
    for side in (-1, 1):
        _mesh_object(
            bpy, f"eye{side}", "ellipsoid", (hs * 0.22,) * 3, mats["eye"], head, (side * hs * 0.2, -hs * 0.43, hs * 0.1)
        )
    joints = {"head": head_joint}
    # Legs: pairs along y, left/right at +-x; each hangs from a hip joint.
    pairs = spec.leg_count // 2
    for i in range(spec.leg_count):
        pair, side = divmod(i, 2)
        y = 0.0 if pairs == 1 else -by * 0.35 + (by * 0.7) * pair / max(pairs - 1, 1)
        hip = _joint(bpy, f"hip{i}", body_joint, ((-1 if side == 0 else 1) * bx * 0.3, y, -bz * 0.3))
        r = spec.leg_radius
        _mesh_object(
            bpy,
            f"leg{i}",
            "cylinder",
            (2 * r, 2 * r, spec.leg_length + bz * 0.2),
            mats["limb"],
            hip,
            (0.0, 0.0, -(spec.leg_length + bz * 0.2) / 2 + bz * 0.1),
        )
        joints[f"leg{i}"] = hip
    for i in range(spec.arm_count):
        side = -1 if i % 2 == 0 else 1
        shoulder = _joint(bpy, f"shoulder{i}", body_joint, (side * bx * 0.45, -by * 0.15, bz * 0.15))
        _mesh_object(
            bpy,
            f"arm{i}",
            "cylinder",
            (0.09, 0.09, spec.arm_length),
            mats["limb"],
            shoulder,
            (side * spec.arm_length / 2, 0.0, 0.0),
            along_x=True,
        )
        joints[f"arm{i}"] = shoulder
    if spec.tail_length > 0:
        tail_joint = _joint(bpy, "tail_root", body_joint, (0.0, by * 0.45, bz * 0.1))
        tail = _mesh_object(
            bpy,
            "tail",
            "cone",
            (0.12, 0.12, spec.tail_length),
            mats["limb"],
            tail_joint,
            (0.0, spec.tail_length * 0.45, spec.tail_length * 0.2),
        )
        tail.rotation_euler = (-math.radians(65), 0.0, 0.0)
        joints["tail"] = tail_joint
    if spec.motion == "none":
        return root
    scene.frame_start, scene.frame_end = 0, spec.num_frames
    for frame in range(spec.num_frames + 1):
        pose = joint_angles(spec, frame)
        root.location = pose["root_location"]
        root.rotation_euler = pose["root_rotation"]
        root.keyframe_insert("location", frame=frame)
        root.keyframe_insert("rotation_euler", frame=frame)
        for key, joint in joints.items():
            joint.rotation_euler = pose.get(key, (0.0, 0.0, 0.0))
            joint.keyframe_insert("rotation_euler", frame=frame)
    # One clip named after the motion: every joint's action sits on an NLA track of that name
    # (and stays active), so Blender, the glTF exporter and gen4d's clip logic all see one clip.
    for obj in [root, *joints.values()]:
        action = obj.animation_data.action
        action.name = f"{spec.motion}_{obj.name}"
        track = obj.animation_data.nla_tracks.new()
        track.name = spec.motion
        track.strips.new(spec.motion, 0, action)
    return root


def export_glb(spec: CreatureSpec, path: str | Path) -> Path:
    """Build ``spec`` in a fresh Blender scene and save it as a binary glTF with its animation
    (one clip named after the motion). Needs ``bpy``; run it in a subprocess if the caller's
    Blender state matters (``gen4d render`` does)."""
    import bpy

    path = Path(path)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    build_creature(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.export_scene.gltf(
        filepath=str(path),
        export_format="GLB",
        export_animations=spec.motion != "none",
        export_animation_mode="NLA_TRACKS",
    )
    return path
