"""gen4d's own on-disk dataset format: a folder of RGBA PNGs plus one ``manifest.json``.

Written by ``gen4d render`` (:mod:`gen4d.data.blender`) and by :func:`save_dataset`; read by
:func:`load_manifest` (and :func:`gen4d.data.dataset.load_dataset`, which dispatches here for a
folder holding ``manifest.json``).

Format (``"format": "gen4d.manifest"``, ``"version": 1``)
------------------------------------------------------
Top level::

    format, version      "gen4d.manifest", 1
    complete             false while ``gen4d render`` is still filling the folder (the loader
                         refuses incomplete manifests: rerun the render to resume it)
    name                 human-readable name (asset)
    width, height        image size in pixels, shared by every image
    num_frames           number of distinct times T; time index k <-> t = k / (T - 1)
    convention           one line restating gen4d's camera convention (see gen4d.cameras)
    asset, clip,         free-form dicts describing the source asset, the animation clip
    normalisation,       (name, index, frame range, fps, time mapping) and the normalisation
    render               (mode, scale, offset, bounds), and the render settings (engine,
                         samples, seed, lights ...); shared by every image, so stored once
    extra_splits         optional {name: [image indices]} for splits beyond each image's own
    images               list of image records (below), in dataset order

Image record::

    file                      path of the RGBA PNG relative to the manifest's folder
    split                     the split it belongs to (orbit, static_orbit, front, zero123pp, eval ...)
    view                      index of the view inside its split's pose set (orbit pose i, eval view k ...)
    time                      normalised time t in [0, 1]
    frame_index               time index k in 0..num_frames-1 (t = k / (num_frames - 1))
    source_frame              the asset's animation frame that was shown (float: Blender subframes)
    world_to_camera           4x4 world-to-camera, gen4d/OpenCV convention (x right, y down, z forward)
    blender_camera_to_world   4x4 the same camera as Blender's camera matrix_world (-Z forward, +Y up)
    fov_deg, fov_axis         field of view in degrees and the image side it spans ("x" / "y")
    fx, fy, cx, cy            pinhole intrinsics in pixels (authoritative; fov is derived)
    elevation_deg, azimuth_deg, radius   the spherical pose when the camera came from one (optional)
    asset, clip               short names of the source asset and clip (repeated for convenience)

World: Z up, object front facing -Y, normalised object at the origin (see gen4d.cameras).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen4d.cameras import Cameras, to_blender_camera_to_world
from gen4d.data.multiview import MultiViewVideo, load_images_rgba
from gen4d.io import atomic_path, read_json, write_json

__all__ = [
    "FORMAT",
    "VERSION",
    "CONVENTION",
    "camera_records",
    "write_manifest",
    "read_manifest",
    "load_manifest",
    "save_dataset",
    "manifest_cameras",
    "DEFAULT_DATASET",
    "load_default",
]

FORMAT = "gen4d.manifest"
VERSION = 1
CONVENTION = (
    "world Z up, object front faces -Y; world_to_camera in OpenCV axes (x right, y down, z forward); "
    "blender_camera_to_world in Blender axes (camera looks down -Z, +Y up); pixel (u, v) centre at (u+0.5, v+0.5)"
)
DEFAULT_DATASET = Path(__file__).resolve().parents[1] / "assets" / "default"
"""gen4d's embedded default data set (a rendered procedural creature; see its README)."""
_REQUIRED_IMAGE_KEYS = ("file", "split", "time", "frame_index", "world_to_camera", "fx", "fy", "cx", "cy")


def _matrix(value: torch.Tensor) -> list[list[float]]:
    return [[float(x) for x in row] for row in value.tolist()]


def camera_records(
    cameras: Cameras,
    split: str,
    files: Sequence[str],
    frame_indices: Sequence[int],
    source_frames: Sequence[float] | None = None,
    views: Sequence[int] | None = None,
    spherical: Sequence[tuple[float, float, float]] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Image records (see the module docstring) for C ``cameras`` of one split.

    ``files``, ``frame_indices``, ``source_frames`` (default: the frame index), ``views``
    (default 0..C-1) and ``spherical`` ((elevation_deg, azimuth_deg, radius) per camera, optional)
    hold one entry per camera; ``extra`` is added to every record (e.g. asset / clip names).
    """
    count = len(cameras)
    for name, values in (
        ("files", files),
        ("frame_indices", frame_indices),
        ("source_frames", source_frames),
        ("views", views),
        ("spherical", spherical),
    ):
        if values is not None and len(values) != count:
            raise ValueError(f"camera_records: {name} has {len(values)} entries for {count} cameras")
    blender = to_blender_camera_to_world(cameras)
    larger_x = cameras.width >= cameras.height
    fov = cameras.fov_x_deg if larger_x else cameras.fov_y_deg
    records = []
    for i in range(count):
        record: dict[str, Any] = {
            "file": str(files[i]),
            "split": split,
            "view": int(views[i]) if views is not None else i,
            "time": float(cameras.times[i]),
            "frame_index": int(frame_indices[i]),
            "source_frame": float(source_frames[i]) if source_frames is not None else float(frame_indices[i]),
            "world_to_camera": _matrix(cameras.world_to_camera[i]),
            "blender_camera_to_world": _matrix(blender[i]),
            "fov_deg": float(fov[i]),
            "fov_axis": "x" if larger_x else "y",
            "fx": float(cameras.fx[i]),
            "fy": float(cameras.fy[i]),
            "cx": float(cameras.cx[i]),
            "cy": float(cameras.cy[i]),
        }
        if spherical is not None:
            el, az, radius = spherical[i]
            record.update(elevation_deg=float(el), azimuth_deg=float(az), radius=float(radius))
        if extra:
            record.update(extra)
        records.append(record)
    return records


def write_manifest(
    path: str | Path,
    images: Iterable[dict[str, Any]],
    *,
    width: int,
    height: int,
    num_frames: int,
    name: str,
    complete: bool = True,
    extra_splits: dict[str, Sequence[int]] | None = None,
    **meta: Any,
) -> Path:
    """Write ``manifest.json`` atomically (``path`` is the file or its folder). ``meta`` holds the
    shared dicts (asset, clip, normalisation, render ...). Returns the manifest path."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "manifest.json"
    images = list(images)
    data: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "complete": bool(complete),
        "name": name,
        "width": int(width),
        "height": int(height),
        "num_frames": int(num_frames),
        "convention": CONVENTION,
    }
    data.update(meta)
    if extra_splits:
        data["extra_splits"] = {k: [int(i) for i in v] for k, v in extra_splits.items()}
    data["images"] = images
    _validate(data, path)
    write_json(path, data)
    return path


_FIX_HINT = "fix the manifest or render the dataset again with `gen4d render`"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_matrix4(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(row, list) and len(row) == 4 and all(_is_number(x) for x in row) for row in value)
    )


def _is_camera_pose(value: list[list[float]]) -> bool:
    """A 4x4 rigid-style pose: last row (0, 0, 0, 1) and an invertible 3x3 block (else every
    projection of the camera is undefined)."""
    (a, b, c, _), (d, e, f, _), (g, h, i, _), last = value
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return all(abs(x - y) <= 1e-6 for x, y in zip(last, (0, 0, 0, 1))) and abs(det) > 1e-6


def _field_error(where: str, field: str, expected: str, value: Any) -> ValueError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ValueError(f"{where}: field {field!r}: expected {expected}, got {shown}; {_FIX_HINT}")


def _validate(data: Any, path: Path) -> None:
    """Check the manifest's structure and every field's type; errors name the file, the image
    (index and file) and the field."""
    where = str(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f'{where}: not a gen4d manifest (expected "format": "{FORMAT}")')
    if data.get("version") != VERSION:
        raise ValueError(
            f"{where}: manifest version {data.get('version')!r} is not supported (this gen4d reads {VERSION})"
        )
    for key in ("width", "height", "num_frames", "images"):
        if key not in data:
            raise ValueError(f"{where}: manifest lacks the {key!r} field")
    for key in ("width", "height", "num_frames"):
        if not _is_int(data[key]) or data[key] <= 0:
            raise _field_error(where, key, "an integer > 0", data[key])
    images = data["images"]
    if not isinstance(images, list) or not images:
        raise ValueError(f"{where}: manifest has no images")
    num_frames = data["num_frames"]
    for i, record in enumerate(images):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: image {i}: expected an object of fields, got {record!r}; {_FIX_HINT}")
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in record]
        if missing:
            raise ValueError(f"{where}: image {i} lacks {missing}")
        image = f"{where}: image {i}" + (f" ({record['file']})" if isinstance(record["file"], str) else "")
        if not isinstance(record["file"], str) or not record["file"]:
            raise _field_error(image, "file", "a relative path (a string)", record["file"])
        if not isinstance(record["split"], str):
            raise _field_error(image, "split", "a split name (a string)", record["split"])
        if not _is_number(record["time"]) or not 0 <= record["time"] <= 1:
            raise _field_error(image, "time", "a number in [0, 1]", record["time"])
        if not _is_int(record["frame_index"]):
            raise _field_error(image, "frame_index", f"an integer in 0..{num_frames - 1}", record["frame_index"])
        if not 0 <= record["frame_index"] < num_frames:
            raise ValueError(
                f"{image} has frame_index {record['frame_index']} outside 0..{num_frames - 1}; {_FIX_HINT}"
            )
        for key in ("fx", "fy"):
            if not _is_number(record[key]) or record[key] <= 0:
                raise _field_error(image, key, "a focal length in pixels > 0", record[key])
        for key in ("cx", "cy"):
            if not _is_number(record[key]):
                raise _field_error(image, key, "a principal point coordinate in pixels (a number)", record[key])
        for key in ("world_to_camera", "blender_camera_to_world"):
            if key in record and not _is_matrix4(record[key]):
                raise _field_error(image, key, "a finite 4x4 matrix (4 lists of 4 numbers)", record[key])
            if key in record and not _is_camera_pose(record[key]):
                raise _field_error(
                    image, key, "a camera pose: an invertible 3x3 rotation block and last row [0, 0, 0, 1]", record[key]
                )
        if "view" in record and not _is_int(record["view"]):
            raise _field_error(image, "view", "an integer", record["view"])
        for key in ("source_frame", "fov_deg", "elevation_deg", "azimuth_deg", "radius"):
            if key in record and not _is_number(record[key]):
                raise _field_error(image, key, "a number", record[key])
    extra_splits = data.get("extra_splits") or {}
    if not isinstance(extra_splits, dict):
        raise _field_error(where, "extra_splits", "an object {split name: [image indices]}", extra_splits)
    for name, index in extra_splits.items():
        if not isinstance(index, list) or not all(_is_int(j) for j in index):
            raise _field_error(where, f"extra_splits.{name}", "a list of image indices", index)
        bad = [j for j in index if not 0 <= j < len(images)]
        if bad:
            raise ValueError(f"{where}: extra split {name!r} indexes outside 0..{len(images) - 1}: {bad[:5]}")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The validated manifest dict (``path`` = manifest.json or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest: {path} (render a dataset with `gen4d render ASSET --out DIR`)")
    data = read_json(path)
    _validate(data, path)
    return data


def manifest_cameras(data: dict[str, Any], check: bool = True) -> Cameras:
    """Cameras (M) of a manifest dict. ``check``: verify that ``blender_camera_to_world``
    (where present) is the same camera as ``world_to_camera``."""
    images = data["images"]
    world_to_camera = torch.tensor([r["world_to_camera"] for r in images], dtype=torch.float32)
    cameras = Cameras(
        world_to_camera=world_to_camera,
        fx=torch.tensor([float(r["fx"]) for r in images]),
        fy=torch.tensor([float(r["fy"]) for r in images]),
        cx=torch.tensor([float(r["cx"]) for r in images]),
        cy=torch.tensor([float(r["cy"]) for r in images]),
        width=int(data["width"]),
        height=int(data["height"]),
        times=torch.tensor([float(r["time"]) for r in images]),
    )
    if check:
        have = [i for i, r in enumerate(images) if "blender_camera_to_world" in r]
        if have:
            given = torch.tensor([images[i]["blender_camera_to_world"] for i in have], dtype=torch.float32)
            expected = to_blender_camera_to_world(cameras[have])
            error = (given - expected).abs().amax(dim=(1, 2))
            if bool((error > 1e-3).any()):
                worst = have[int(error.argmax())]
                raise ValueError(
                    f"image {worst} ({images[worst]['file']}): blender_camera_to_world and world_to_camera "
                    f"disagree by {float(error.max()):.3g}; the manifest was edited inconsistently"
                )
    return cameras


def _cameras_of(data: dict[str, Any], manifest_path: Path) -> Cameras:
    """:func:`manifest_cameras`, with its errors naming the manifest file."""
    try:
        return manifest_cameras(data)
    except ValueError as err:
        raise ValueError(f"{manifest_path}: {err}; {_FIX_HINT}") from None


def load_manifest(path: str | Path, size: int | tuple[int, int] | None = None) -> MultiViewVideo:
    """Load a gen4d render folder (or its ``manifest.json``) as a :class:`MultiViewVideo`.

    Splits come from each image's ``split`` plus ``extra_splits``. ``frames`` holds each image's
    time index k (the Blender source frame stays in the manifest's ``source_frame``).
    ``size`` = W = H or (W, H) resamples every image (area filter) and the cameras with it.
    """
    path = Path(path)
    manifest_path = path / "manifest.json" if path.is_dir() else path
    data = read_manifest(manifest_path)
    if not data.get("complete", True):
        raise ValueError(
            f"{manifest_path}: the render that writes this folder has not finished; rerun the same "
            "`gen4d render` command to resume it"
        )
    folder = manifest_path.parent
    width, height = int(data["width"]), int(data["height"])
    images, alphas, files = [], [], []
    paths = [folder / record["file"] for record in data["images"]]
    for file, (rgb, alpha) in zip(paths, load_images_rgba(paths)):
        if rgb.shape[:2] != (height, width):
            raise ValueError(f"{file}: image is {rgb.shape[1]}x{rgb.shape[0]}, the manifest says {width}x{height}")
        images.append(rgb)
        alphas.append(alpha)
        files.append(str(file))
    if all(a is None for a in alphas):
        alpha_stack = None
    else:  # RGB images among RGBA ones are fully opaque
        alpha_stack = torch.from_numpy(
            np.stack([a if a is not None else np.ones((height, width, 1), np.float32) for a in alphas])
        )
    splits: dict[str, list[int]] = {}
    for i, record in enumerate(data["images"]):
        if record["split"]:
            splits.setdefault(record["split"], []).append(i)
    for name, index in (data.get("extra_splits") or {}).items():
        splits[name] = sorted(set(splits.get(name, [])) | {int(j) for j in index})
    video = MultiViewVideo(
        images=torch.from_numpy(np.stack(images)),
        alphas=alpha_stack,
        cameras=_cameras_of(data, manifest_path),
        splits={k: torch.tensor(v, dtype=torch.long) for k, v in splits.items()},
        frames=torch.tensor([int(r["frame_index"]) for r in data["images"]], dtype=torch.long),
        num_frames=int(data["num_frames"]),
        name=str(data.get("name") or folder.name),
        files=files,
    )
    return video.resized(size) if size else video


def load_default(size: int | tuple[int, int] | None = None) -> MultiViewVideo:
    """The embedded default data set (128x128; splits orbit, static_orbit, front, zero123pp, eval)."""
    if not (DEFAULT_DATASET / "manifest.json").is_file():
        raise FileNotFoundError(
            f"the default data set is missing from {DEFAULT_DATASET}; reinstall gen4d or rebuild it with the "
            "command in gen4d/assets/default/README.md"
        )
    return load_manifest(DEFAULT_DATASET, size=size)


def _to_pil(rgb: np.ndarray, alpha: np.ndarray | None):
    from PIL import Image

    rgb8 = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    if alpha is None:
        return Image.fromarray(rgb8, "RGB")
    a8 = np.clip(np.round(alpha[..., 0] * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb8, a8]), "RGBA")


def save_dataset(video: MultiViewVideo, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write any :class:`MultiViewVideo` as a gen4d render folder (PNGs + manifest.json), e.g. to
    store generated videos or convert the Diffusion4D sample. Returns the manifest path.

    Each image's ``split`` is the first split (in ``video.splits`` order) holding it; further
    memberships go to ``extra_splits``. PNGs are 8-bit, so a round trip quantises colours to 1/255.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = len(video)
    primary = [""] * count
    extra: dict[str, list[int]] = {}
    for name, index in video.splits.items():
        for i in index.tolist():
            if not primary[i]:
                primary[i] = name
            elif primary[i] != name:
                extra.setdefault(name, []).append(i)
    frames = video.frames if video.frames is not None else torch.zeros(count, dtype=torch.long)
    images = video.images.numpy()
    alphas = None if video.alphas is None else video.alphas.numpy()
    records = []
    view_counter: dict[str, int] = {}
    for i in range(count):
        split = primary[i]
        file = f"{split or 'images'}/{i:05d}.png"
        with atomic_path(folder / file) as tmp:
            _to_pil(images[i], None if alphas is None else alphas[i]).save(tmp, format="PNG")
        view = view_counter.get(split, 0)
        view_counter[split] = view + 1
        records.extend(camera_records(video.cameras[i], split, [file], [int(frames[i])], views=[view]))
    return write_manifest(
        folder,
        records,
        width=video.width,
        height=video.height,
        num_frames=video.num_frames,
        name=video.name,
        extra_splits=extra or None,
        **(meta or {}),
    )
