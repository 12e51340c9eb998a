"""Binary glTF 2.0 (``.glb``) of an :class:`~gen4d.export.mesh.AnimatedMesh`: one mesh, morph targets, one animation.

Axes: glTF's (Y up, the front facing +Z): a point (x, y, z) of gen4d's world (Z up, front
facing -Y) is stored as (x, z, -y), so glTF viewers and Blender's importer show it upright.
Layout: the base mesh is frame 0 (``POSITION``, ``NORMAL``, ``COLOR_0`` as linear float RGB,
16- or 32-bit indices); frame f > 0 is morph target f - 1 (``POSITION`` deltas from frame 0, plus
``NORMAL`` deltas only when ``normal_targets``: the unlit material does not use normals); the animation ``gen4d`` drives the node's ``weights``
with a one-hot key per frame at ``f / fps`` seconds, so it covers the run's times 0..1 exactly once
(``(F - 1) / fps`` seconds) and a LINEAR sampler blends neighbouring frames. The material is
``KHR_materials_unlit`` (the Gaussians' colours already include their lighting), double-sided,
with a matte metallic-roughness fallback for viewers without the extension.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gen4d.export.mesh import AnimatedMesh
from gen4d.io import atomic_path

__all__ = ["write_glb", "read_glb", "is_glb", "accessor_array"]

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Display (sRGB) values in [0, 1] -> linear values (glTF vertex colours are linear)."""
    values = np.clip(values, 0.0, 1.0)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4).astype(np.float32)


class _Builder:
    """Accumulates the binary chunk and the bufferViews / accessors that point into it."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(self, array: np.ndarray, kind: str, target: int | None = None, bounds: bool = False) -> int:
        component = {
            np.dtype("float32"): _FLOAT,
            np.dtype("uint16"): _UNSIGNED_SHORT,
            np.dtype("uint32"): _UNSIGNED_INT,
        }
        array = np.ascontiguousarray(array)
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        view = {"buffer": 0, "byteOffset": len(self.blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.blob.extend(array.astype(array.dtype.newbyteorder("<")).tobytes())
        self.views.append(view)
        rows = array.reshape(len(array), -1)
        accessor = {
            "bufferView": len(self.views) - 1,
            "componentType": component[array.dtype],
            "count": len(array),
            "type": kind,
        }
        if bounds:
            accessor["min"] = rows.min(0).tolist()
            accessor["max"] = rows.max(0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def to_gltf_axes(points: np.ndarray) -> np.ndarray:
    """gen4d world (Z up, front towards -Y) -> glTF (Y up, front towards +Z): (x, y, z) -> (x, z, -y)."""
    return np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1).astype(np.float32)


def write_glb(
    mesh: AnimatedMesh,
    path: str | os.PathLike,
    normal_targets: bool = False,
    interpolation: Literal["LINEAR", "STEP"] = "LINEAR",
    name: str = "gen4d",
) -> Path:
    """Write ``mesh`` as a binary glTF 2.0 file (atomically); returns the path."""
    if interpolation not in ("LINEAR", "STEP"):
        raise ValueError(f"write_glb: interpolation must be LINEAR or STEP, got {interpolation!r}")
    positions, normals = to_gltf_axes(mesh.positions), to_gltf_axes(mesh.normals())
    count_frames, count_vertices = positions.shape[:2]
    builder = _Builder()
    index_type = np.uint16 if count_vertices < 65535 else np.uint32
    indices = builder.add(mesh.faces.reshape(-1).astype(index_type), "SCALAR", _ELEMENT_ARRAY_BUFFER)
    attributes = {
        "POSITION": builder.add(positions[0], "VEC3", _ARRAY_BUFFER, bounds=True),
        "NORMAL": builder.add(normals[0], "VEC3", _ARRAY_BUFFER),
        "COLOR_0": builder.add(srgb_to_linear(mesh.colors), "VEC3", _ARRAY_BUFFER),
    }
    targets = []
    for frame in range(1, count_frames):
        target = {"POSITION": builder.add(positions[frame] - positions[0], "VEC3", _ARRAY_BUFFER, bounds=True)}
        if normal_targets:
            target["NORMAL"] = builder.add(normals[frame] - normals[0], "VEC3", _ARRAY_BUFFER)
        targets.append(target)
    primitive: dict[str, Any] = {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}
    mesh_json: dict[str, Any] = {"name": name, "primitives": [primitive]}
    animations = []
    if targets:
        primitive["targets"] = targets
        mesh_json["weights"] = [0.0] * len(targets)
        mesh_json["extras"] = {"targetNames": [f"frame_{f:04d}" for f in range(1, count_frames)]}
        keys = np.arange(count_frames, dtype=np.float32) / np.float32(mesh.fps)
        weights = np.eye(count_frames, dtype=np.float32)[:, 1:]  # key f: target f - 1 fully on, frame 0: none
        sampler = {
            "input": builder.add(keys, "SCALAR", bounds=True),
            "output": builder.add(weights.reshape(-1), "SCALAR"),
            "interpolation": interpolation,
        }
        animations.append(
            {
                "name": name,
                "samplers": [sampler],
                "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
            }
        )
    document: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "gen4d"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"name": name, "nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [mesh_json],
        "materials": [
            {
                "name": f"{name}_vertex_colours",
                "pbrMetallicRoughness": {
                    "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "doubleSided": True,
                "extensions": {"KHR_materials_unlit": {}},
            }
        ],
        "buffers": [{"byteLength": len(builder.blob)}],
        "bufferViews": builder.views,
        "accessors": builder.accessors,
    }
    if animations:
        document["animations"] = animations
        document["extras"] = {"fps": float(mesh.fps), "frames": count_frames, "times": mesh.times.tolist()}
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    blob = bytes(builder.blob) + b"\0" * (-len(builder.blob) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(struct.pack("<III", _GLB_MAGIC, 2, total))
            handle.write(struct.pack("<II", len(text), _JSON_CHUNK) + text)
            handle.write(struct.pack("<II", len(blob), _BIN_CHUNK) + blob)
    return path


def is_glb(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that gen4d's glb writer made (binary glTF, generator "gen4d")."""
    try:
        document, _ = read_glb(path)
    except (OSError, ValueError):
        return False
    return document.get("asset", {}).get("generator") == "gen4d"


def read_glb(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """(JSON document, binary chunk) of a .glb file (container checks only)."""
    data = Path(path).read_bytes()
    if len(data) < 20 or struct.unpack_from("<I", data)[0] != _GLB_MAGIC:
        raise ValueError(f"{path}: not a binary glTF file")
    magic, version, total = struct.unpack_from("<III", data)
    if version != 2 or total != len(data):
        raise ValueError(f"{path}: glTF version {version}, length {total} of {len(data)} bytes")
    length, kind = struct.unpack_from("<II", data, 12)
    if kind != _JSON_CHUNK:
        raise ValueError(f"{path}: the first chunk is not JSON")
    document = json.loads(data[20 : 20 + length])
    offset = 20 + length
    blob = b""
    if offset < len(data):
        blob_length, kind = struct.unpack_from("<II", data, offset)
        blob = data[offset + 8 : offset + 8 + blob_length] if kind == _BIN_CHUNK else b""
    return document, blob


def accessor_array(document: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    """The values of accessor ``index`` as an array (count, components) (tightly packed views only)."""
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    dtype = {_FLOAT: "<f4", _UNSIGNED_SHORT: "<u2", _UNSIGNED_INT: "<u4"}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(blob, dtype, accessor["count"] * width, start).reshape(accessor["count"], width)
