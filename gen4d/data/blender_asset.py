"""Blender side of ``gen4d render``, part 1: loading an asset into an empty scene and choosing its
animation clip (glTF NLA tracks, FBX takes, plain actions). Runs inside the bpy worker process
(:mod:`gen4d.data.blender_worker`); needs only bpy (passed in) and the standard library.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".glb", ".gltf", ".fbx", ".obj", ".blend")


class AssetError(Exception):
    """A problem with the asset itself (reported to the user without a traceback); ``code``
    names machine-readable cases (``no_animation``)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


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
        elif suffix == ".obj":  # static meshes (gen4d animate)
            result = bpy.ops.wm.obj_import(filepath=str(path))
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
