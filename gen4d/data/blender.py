"""Ground-truth multi-view videos of animated assets, rendered with Blender (``bpy``).

:func:`render_asset` plans the images of the requested render sets with gen4d's cameras
(:mod:`gen4d.cameras`), writes an incomplete ``manifest.json`` (:mod:`gen4d.data.manifest`),
renders every missing image in a fresh Blender process (:mod:`gen4d.data.blender_worker`) and
completes the manifest. Rerunning the same command resumes an interrupted run; the output is
deterministic for a seed (lights, Cycles sampling seed, procedural shapes).

Render sets (T = ``num_frames``, time index k <-> t = k / (T - 1)):

* ``orbit``: T views on a circle (elevation, radius, fov, start azimuth); view i at azimuth
  ``start + 360 i / (T - 1)`` and time i / (T - 1) (Diffusion4D's V; with the defaults exactly
  :func:`gen4d.cameras.diffusion4d_orbit`, so pose T-1 = pose 0);
* ``static_orbit``: the same poses at time 0 (V-bar);
* ``front``: the front view (azimuth ``front_azimuth_deg``, default 0 = camera on -Y) at every time;
* ``zero123pp``: for every time (or ``zero123pp_frames``), the six Zero123++ poses of
  ``zero123pp_version`` relative to the front view (:func:`gen4d.cameras.zero123pp_poses`);
* ``eval``: K held-out views at every time (Consistent4D style: K = 4 views, evenly spaced in
  azimuth starting 45 degrees from the front unless ``eval_azimuths_deg`` is given).

Time mapping (``time_mapping``): ``clip`` (default) shows source frame
``start + t (end - start)`` of the chosen clip's frame range (fractional frames are Blender
subframes), so T frames always span the whole clip; ``raw`` shows ``start + k`` like the Diffusion4D
script (``frame_set(0..23)``), which covers only the first T frames of a long clip. The manifest
keeps each image's ``source_frame``.

Normalisation: the object is scaled and moved so that its deformed vertices over every sampled
time (``normalise_over="sampled"``; ``"first"``: over the first time only, as a script that
normalises once before animating does) fit the unit cube centred at the origin (``box``) or a
sphere of diameter 1 (``sphere``).

Lighting: the Diffusion4D / Objaverse script's four shadowless suns (key, fill, rim, bottom) with
energies drawn from the seed, in a dim grey world; Cycles, transparent film, Standard view
transform, 8-bit RGBA PNG.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range, to_dict

__all__ = [
    "SETS",
    "PRESETS",
    "RenderConfig",
    "RenderError",
    "NoAnimationError",
    "render_asset",
    "inspect_asset",
    "export_procedural_glb",
    "plan_images",
    "check_asset",
    "bpy_available",
]

SETS = ("orbit", "static_orbit", "front", "zero123pp", "eval")
SUPPORTED_SUFFIXES = (".glb", ".gltf", ".fbx", ".obj", ".blend")
INSTALL_HINT = "pip install 'gen4d[render]' (bpy wheels need Python 3.11)"


@dataclass(frozen=True)
class RenderConfig:
    """Settings of one ``gen4d render`` run (stored in the manifest's ``render`` field)."""

    sets: tuple[str, ...] = ("orbit", "static_orbit", "front")
    """Render sets to make: any of orbit, static_orbit, front, zero123pp, eval."""
    num_frames: int = 24
    """T: number of times (and of orbit views); time k is t = k / (T - 1)."""
    size: int = 256
    """Image width = height in pixels."""
    elevation_deg: float = 0.0
    """Elevation of the orbit (and static orbit) cameras."""
    radius: float = 2.0
    """Camera distance from the origin for orbit, front and eval views."""
    fov_deg: float = 39.5978
    """Field of view of orbit, front and eval views (Blender's 50 mm lens on a 36 mm sensor = 2 atan(18/50))."""
    start_azimuth_deg: float = 0.0
    """Azimuth of orbit view 0 (0 = the front, camera on -Y)."""
    front_azimuth_deg: float = 0.0
    """Azimuth of the front view (the monocular input video)."""
    front_elevation_deg: float = 0.0
    """Elevation of the front view."""
    eval_views: int = 4
    """K: held-out evaluation views at every time."""
    eval_elevation_deg: float = 0.0
    """Elevation of the evaluation views."""
    eval_azimuths_deg: tuple[float, ...] = ()
    """Azimuths of the evaluation views (empty: K views evenly spaced from 45 degrees off the front)."""
    zero123pp_version: Literal["v1.1", "v1.2"] = "v1.2"
    """Zero123++ pose set: v1.1 (elevations 30/-20, input fov) or v1.2 (20/-10, fov 30, distance rescaled)."""
    zero123pp_frames: tuple[int, ...] = ()
    """Time indices that get Zero123++ views (empty: every time)."""
    clip: str = ""
    """Animation clip to render: name or index (empty: the first); the others are muted."""
    normalise: Literal["box", "sphere"] = "box"
    """Fit the object into the unit cube (box) or a sphere of diameter 1 (sphere)."""
    normalise_over: Literal["sampled", "first"] = "sampled"
    """Bounds taken over every sampled time (sampled) or the first time only (first)."""
    time_mapping: Literal["clip", "raw"] = "clip"
    """clip: t spans the clip's frame range; raw: time k shows frame start + k (Diffusion4D)."""
    allow_static: bool = False
    """Render time-varying sets of an asset with no animation (every time looks the same)."""
    samples: int = 128
    """Cycles samples per pixel (Diffusion4D: 128)."""
    denoise: bool = True
    """Cycles denoising (OpenImageDenoise)."""
    device: Literal["cpu", "gpu"] = "cpu"
    """Cycles device; gpu tries OptiX, CUDA, HIP, oneAPI, Metal in turn."""
    threads: int = 0
    """CPU render threads (0: Blender's automatic choice)."""
    seed: int = 0
    """Seed of the light energies and Cycles' sampling pattern."""

    def __post_init__(self) -> None:
        sets = tuple(_canonical_set(s) for s in self.sets)
        if not sets:
            raise ValueError("RenderConfig.sets: choose at least one of " + ", ".join(SETS))
        object.__setattr__(self, "sets", tuple(dict.fromkeys(sets)))
        if self.num_frames < 2:
            raise ConfigError("num_frames", f"need at least 2 times, got {self.num_frames}", "RenderConfig")
        if self.size < 8:
            raise ConfigError("size", f"expected >= 8 pixels, got {self.size}", "RenderConfig")
        if self.samples < 1:
            raise ConfigError("samples", f"expected >= 1, got {self.samples}", "RenderConfig")
        check_positive(self, "radius")
        check_range(self, "fov_deg", 1.0, 179.0)
        check_non_negative(self, "eval_views", "threads")
        if "eval" in sets and self.eval_views < 1 and not self.eval_azimuths_deg:
            raise ConfigError("eval_views", "expected >= 1 for the eval set", "RenderConfig")
        bad = [k for k in self.zero123pp_frames if not 0 <= int(k) < self.num_frames]
        if bad:
            raise ConfigError("zero123pp_frames", f"{bad} outside 0..{self.num_frames - 1}", "RenderConfig")


def _canonical_set(name: str) -> str:
    key = str(name).strip().replace("-", "_").lower()
    if key not in SETS:
        raise ValueError(f"unknown render set {name!r}; choose from {', '.join(SETS)} (static-orbit also works)")
    return key


PRESETS: dict[str, RenderConfig] = {
    # Diffusion4D's render: 24 views / times at 256x256, Cycles 128 samples, denoised.
    "diffusion4d": RenderConfig(),
    # Every set, for evaluation and oracle tests.
    "full": RenderConfig(sets=SETS),
    # The shipped default data set (gen4d/assets/default, see its README).
    "default_set": RenderConfig(sets=SETS, size=128, samples=64, zero123pp_frames=(0, 8, 16, 23)),
    # Seconds-long renders for tests and smoke runs.
    "tiny": RenderConfig(size=64, samples=8, num_frames=6),
}
"""Named render settings (``gen4d render --preset NAME``)."""


class RenderError(RuntimeError):
    """Blender failed for a reason that is not the asset's fault (see the render log)."""


class NoAnimationError(ValueError):
    """The asset has no animation but time-varying render sets were asked for."""


def bpy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bpy") is not None


def check_asset(asset: str | os.PathLike) -> str:
    """Validate an asset argument (file path or ``procedural:SEED[...]``); returns it as a string.

    Raises FileNotFoundError for a missing file and ValueError for an unsupported format or a
    bad procedural name, before any Blender process starts.
    """
    from gen4d.data.procedural import is_procedural, parse_procedural_name

    text = str(asset)
    if is_procedural(text):
        parse_procedural_name(text)
        return text
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"no such asset: {path}")
    if path.is_dir() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported asset format {path.suffix or '(folder)'!r}; gen4d render reads "
            f"{', '.join(SUPPORTED_SUFFIXES)} files or procedural:SEED"
        )
    return str(path.resolve())


# ---------------------------------------------------------------------------------------
# Planning (gen4d cameras -> image records)
# ---------------------------------------------------------------------------------------
def _eval_azimuths(config: RenderConfig) -> list[float]:
    if config.eval_azimuths_deg:
        return [float(a) for a in config.eval_azimuths_deg]
    k = config.eval_views
    return [config.front_azimuth_deg + 45.0 + 360.0 * i / k for i in range(k)]


def plan_images(config: RenderConfig, asset_name: str = "", clip_name: str = "") -> list[dict[str, Any]]:
    """The image records (manifest format, :func:`gen4d.data.manifest.camera_records`) of every
    requested set, in set order; ``source_frame`` is filled in after Blender reports the clip."""
    import torch

    from gen4d.cameras import orbit, zero123pp_poses
    from gen4d.data.manifest import camera_records

    T, size = config.num_frames, config.size
    times = [k / (T - 1) for k in range(T)]
    extra = {"asset": asset_name, "clip": clip_name}
    records: list[dict[str, Any]] = []

    def add(split, cams, frame_indices, views, spherical):
        files = [f"{split}/t{k:03d}_v{v:02d}.png" for k, v in zip(frame_indices, views)]
        records.extend(camera_records(cams, split, files, frame_indices, views=views, spherical=spherical, extra=extra))

    orbit_az = [config.start_azimuth_deg + 360.0 * k / (T - 1) for k in range(T)]
    for split in config.sets:
        if split in ("orbit", "static_orbit"):
            cam_times = times if split == "orbit" else [0.0] * T
            cams = orbit(config.elevation_deg, orbit_az, config.radius, config.fov_deg, size, size, cam_times)
            frame_indices = list(range(T)) if split == "orbit" else [0] * T
            add(
                split, cams, frame_indices, list(range(T)), [(config.elevation_deg, a, config.radius) for a in orbit_az]
            )
        elif split == "front":
            cams = orbit(
                config.front_elevation_deg, config.front_azimuth_deg, config.radius, config.fov_deg, size, size, times
            )
            add(
                split,
                cams,
                list(range(T)),
                [0] * T,
                [(config.front_elevation_deg, config.front_azimuth_deg, config.radius)] * T,
            )
        elif split == "eval":
            azimuths = _eval_azimuths(config)
            k_views = len(azimuths)
            el = [config.eval_elevation_deg] * (T * k_views)
            az = [a for _ in range(T) for a in azimuths]
            t = [times[k] for k in range(T) for _ in azimuths]
            cams = orbit(el, az, config.radius, config.fov_deg, size, size, t)
            add(
                split,
                cams,
                [k for k in range(T) for _ in azimuths],
                [v for _ in range(T) for v in range(k_views)],
                [(config.eval_elevation_deg, a, config.radius) for a in az],
            )
        elif split == "zero123pp":
            from gen4d.cameras import ZERO123PP_AZIMUTHS, ZERO123PP_ELEVATIONS

            frames = sorted({int(k) for k in config.zero123pp_frames}) or list(range(T))
            for k in frames:
                cams = zero123pp_poses(
                    config.zero123pp_version, config.front_azimuth_deg, config.radius, config.fov_deg, size, times[k]
                )
                radius = float(torch.linalg.norm(cams.centers[0]))
                spherical = [
                    (e, config.front_azimuth_deg + a, radius)
                    for e, a in zip(ZERO123PP_ELEVATIONS[config.zero123pp_version], ZERO123PP_AZIMUTHS)
                ]
                add(split, cams, [k] * 6, list(range(6)), spherical)
    return records


# ---------------------------------------------------------------------------------------
# Running Blender
# ---------------------------------------------------------------------------------------
def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_worker(
    job: dict[str, Any],
    work_dir: Path,
    log_path: Path,
    progress: bool,
    desc: str,
    timeout: float | None,
    module: str = "gen4d.data.blender_worker",
) -> dict[str, Any]:
    """Run one job in a fresh Python + bpy process (``python -m module JOB.json``, a module whose
    ``main`` is :func:`gen4d.data.blender_worker.main`); returns its info dict (raises on failure;
    :class:`gen4d.data.batch.TaskTimeout` after killing it past ``timeout`` seconds)."""
    if not bpy_available():
        raise ImportError(f"Blender rendering needs bpy: {INSTALL_HINT}")
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path = work_dir / ".render_job.json"
    info_path = work_dir / ".render_info.json"
    if info_path.exists():
        info_path.unlink()
    job = dict(job, info_path=str(info_path))
    job_path.write_text(json.dumps(job))
    bar = None
    if progress and job.get("images"):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(job["images"]), desc=desc, unit="img")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from gen4d.data.batch import run_process
    from gen4d.data.blender_worker import PROGRESS_PREFIX

    with open(log_path, "a") as log:

        def on_line(line: str) -> None:
            if not line.startswith(PROGRESS_PREFIX):
                log.write(line)
                return
            payload = json.loads(line[len(PROGRESS_PREFIX) :])
            if bar is not None:
                if "todo" in payload:
                    bar.update(payload["total"] - payload["todo"])
                elif "done" in payload:
                    bar.update(1)

        try:
            status = run_process(
                [sys.executable, "-u", "-m", module, str(job_path)],
                timeout=timeout,
                on_line=on_line,
                env=_worker_env(),
            )
        finally:
            if bar is not None:
                bar.close()
    if not info_path.is_file():
        raise RenderError(f"Blender exited with status {status} without a report; see {log_path}")
    info = json.loads(info_path.read_text())
    info_path.unlink()
    job_path.unlink(missing_ok=True)
    if "error" in info:
        if info.get("kind") == "asset":
            raise (NoAnimationError if info.get("code") == "no_animation" else ValueError)(info["error"])
        with open(log_path, "a") as log:
            log.write(info.get("traceback", ""))
        raise RenderError(f"Blender failed: {info['error']} (traceback in {log_path})")
    return info


def inspect_asset(asset: str | os.PathLike, timeout: float | None = 300) -> dict[str, Any]:
    """Load an asset in Blender and report its clips (``{"clips": [...], "asset": {...}}``)."""
    asset = check_asset(asset)
    with tempfile.TemporaryDirectory(prefix="gen4d_inspect_") as tmp:
        job = {"asset": asset, "inspect": True, "images": [], "out_dir": tmp, "config": {}, "width": 8, "height": 8}
        return _run_worker(job, Path(tmp), Path(tmp) / "render.log", False, "", timeout)


def export_procedural_glb(asset: str, path: str | os.PathLike, timeout: float | None = 300) -> Path:
    """Save a ``procedural:SEED[...]`` creature as a binary glTF (built in a fresh Blender process)."""
    from gen4d.data.procedural import is_procedural

    asset = check_asset(asset)
    if not is_procedural(asset):
        raise ValueError(f"{asset}: export_procedural_glb takes a procedural:SEED asset")
    path = Path(path).resolve()
    if path.suffix.lower() != ".glb":
        raise ValueError(f"{path}: expected a .glb path")
    with tempfile.TemporaryDirectory(prefix="gen4d_export_") as tmp:
        job = {
            "asset": asset,
            "export_glb": str(path),
            "images": [],
            "out_dir": tmp,
            "config": {},
            "width": 8,
            "height": 8,
        }
        return Path(_run_worker(job, Path(tmp), Path(tmp) / "render.log", False, "", timeout)["path"])


def _asset_name(asset: str) -> str:
    from gen4d.data.procedural import is_procedural, parse_procedural_name

    return parse_procedural_name(asset).name if is_procedural(asset) else Path(asset).stem


def _file_digest(asset: str) -> str | None:
    import hashlib

    path = Path(asset)
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def render_asset(
    asset: str | os.PathLike,
    out: str | os.PathLike,
    config: RenderConfig = RenderConfig(),
    overwrite: bool = False,
    progress: bool = True,
    timeout: float | None = None,
) -> Path:
    """Render ``config.sets`` of ``asset`` (a .glb/.gltf/.fbx/.obj/.blend file or ``procedural:SEED``)
    into ``out`` (PNGs + ``manifest.json``); returns the manifest path.

    A folder holding a complete manifest of the same asset and settings is returned as is; an
    incomplete one is resumed (only missing images are rendered); one of another asset or other
    settings is an error unless ``overwrite``. Raises FileNotFoundError / ValueError for bad
    assets (missing, unsupported, corrupt, no animation for time-varying sets, unknown clip),
    ImportError without bpy.
    """
    from gen4d.data.manifest import read_manifest, write_manifest

    asset = check_asset(asset)
    out = Path(out)
    name = _asset_name(asset)
    settings = to_dict(config)
    identity = {"source": asset, "sha256": _file_digest(asset)}
    manifest_path = out / "manifest.json"
    from gen4d.run.folder import check_output_folder

    # A render gen4d started writes manifest.json first: any other non-empty folder is the user's.
    check_output_folder(out, "gen4d render (manifest.json)", lambda folder: (folder / "manifest.json").is_file())
    if manifest_path.is_file():
        existing = read_manifest(manifest_path)
        same = existing.get("render", {}).get("settings") == json.loads(json.dumps(settings)) and all(
            existing.get("asset", {}).get(k) == v for k, v in identity.items()
        )
        if not same and not overwrite:
            raise ValueError(
                f"{out} already holds a render of another asset or with other settings; pass --overwrite "
                "(or overwrite=True) to replace it, or choose another --out"
            )
        if same and existing.get("complete"):
            return manifest_path
        if not same:
            for split in SETS:
                shutil.rmtree(out / split, ignore_errors=True)
            manifest_path.unlink()
    images = plan_images(config, asset_name=name)
    meta = {"asset": {**identity, "name": name}, "render": {"settings": settings}}
    size = config.size
    write_manifest(
        out, images, width=size, height=size, num_frames=config.num_frames, name=name, complete=False, **meta
    )
    job = {
        "asset": asset,
        "out_dir": str(out),
        "width": size,
        "height": size,
        "num_frames": config.num_frames,
        "config": settings,
        "images": [
            {k: image[k] for k in ("file", "split", "time", "frame_index", "blender_camera_to_world", "fov_deg")}
            for image in images
        ],
    }
    info = _run_worker(job, out, out / "render.log", progress, f"render {name}", timeout)
    clip = info["clip"]
    for image, frame in zip(images, info["source_frames"]):
        image["source_frame"] = float(frame)
        image["clip"] = clip["name"]
    asset_meta = {
        **meta["asset"],
        **{k: v for k, v in info["asset"].items() if k != "clip_order"},
        "clips": info["clips"],
    }
    render_meta = {
        "settings": settings,
        "engine": info["engine"],
        "lights": info["lights"],
        "blender": info["blender"],
        "world_color": [0.0508, 0.0508, 0.0508],
        "view_transform": "Standard",
        "film": "transparent",
        "image_format": "PNG RGBA 8-bit",
        "seconds_per_image": (sum(info["render_seconds"]) / len(info["render_seconds"]))
        if info["render_seconds"]
        else None,
    }
    return write_manifest(
        out,
        images,
        width=size,
        height=size,
        num_frames=config.num_frames,
        name=name,
        complete=True,
        asset=asset_meta,
        clip=clip,
        normalisation=info["normalisation"],
        render=render_meta,
    )
