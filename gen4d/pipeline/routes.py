"""``gen4d image`` / ``gen4d text``: the stages of the STAG4D and Diffusion4D routes and the run.

Run folder (kind ``image`` or ``text``; every stage writes its outputs, then ``stages/NAME.json``):

* STAG4D route: ``image.png`` (the prompt image, or the input image) -> ``raw/0000.png ...`` +
  ``raw.mp4`` (Stable Video Diffusion) -> ``matted/0_rgba.png ...`` (matted, recentred) ->
  ``stag4d/`` (a ``gen4d video`` run: multi-views, checkpoint, ply, videos, metrics.json);
* Diffusion4D route: [``image.png``] -> ``orbit/`` (the generated orbital video as a dataset) ->
  ``construct/`` (a ``gen4d reconstruct`` run).
"""

from __future__ import annotations

import dataclasses as dc
import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen4d.config import to_dict
from gen4d.errors import UserError
from gen4d.io import atomic_path, read_json, write_json
from gen4d.pipeline.config import RouteConfig
from gen4d.run import check_resume_config, is_run, open_run
from gen4d.run.device import resolve_device
from gen4d.run.logs import LOGGER, run_logging
from gen4d.run.stages import Stage, StageContext, check_stage_name, finished_stages, run_stages

__all__ = ["RUN_ENTRIES", "check_prompt", "route_stages", "run_route", "find_object", "read_rgba_image"]

RUN_ENTRIES = ("config.json", "input.json", "log.txt", "stages", "image.png", "raw", "raw.mp4", "matted", "stag4d",
               "orbit", "construct", "static")  # fmt: skip
"""Everything a route run writes into its folder (``--overwrite`` deletes only these)."""
ALWAYS_MAY_CHANGE = ("device",)


def check_prompt(prompt: str | None) -> str:
    if prompt is None or not prompt.strip():
        raise UserError('the prompt is empty; describe one object, e.g. gen4d text "a corgi running" --out RUN')
    return prompt.strip()


# --------------------------------------------------------------------------------------------- images


def read_rgba_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3|4) uint8 of an image file (RGBA when it has alpha)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as image:
            image.load()
            alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            return np.asarray(image.convert("RGBA" if alpha else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None


def _write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array, "RGBA" if array.shape[2] == 4 else "RGB").save(tmp, format="PNG")


def matting_method(name: str) -> str:
    """'auto' -> rembg when it is installed, else color (the flat background the prompt asks for)."""
    if name != "auto":
        return name
    return "rembg" if importlib.util.find_spec("rembg") is not None else "color"


def matte(images: Sequence[np.ndarray], method: str, rembg=None, source: str = "the image") -> list[np.ndarray]:
    """RGBA uint8 frames through :func:`gen4d.data.matting.matte`: kept when they have a usable
    alpha, else matted by rembg or by the distance to the flat background colour ('color')."""
    from gen4d.data.matting import RembgConfig, has_usable_alpha
    from gen4d.data.matting import matte as matte_frames

    frames = torch.from_numpy(np.stack(images)).float() / 255.0
    how = "alpha" if has_usable_alpha(frames) else matting_method(method)
    out = matte_frames(frames, how, rembg or RembgConfig(), source)
    return list((out * 255.0).round().to(torch.uint8).numpy())


def find_object(image: np.ndarray, method: str, what: str) -> float:
    """Fraction of ``image`` covered by the object; UserError when there is none (all background)."""
    rgba = matte([image], method, source=what)[0]
    coverage = float((rgba[..., 3] > 127).mean())
    if coverage < 1e-3:
        raise UserError(
            f"{what}: no object found, the whole image is background ({matting_method(method)} matting); pass an "
            "image that shows one object (or an RGBA image whose alpha marks it)"
        )
    return coverage


# --------------------------------------------------------------------------------------------- stages


def _image_stage(source: str) -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        image = read_rgba_image(source)  # checked for an object before the run started (run_route)
        _write_png(image, ctx.run_dir / "image.png")
        return {"source": source, "size": [image.shape[1], image.shape[0]]}

    return Stage("image", ("image.png",), run)


def _text_image_stage(prompt: str) -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.diffusion.generators import load_pipeline, text_to_image

        settings = config.text_to_image
        pipe = load_pipeline("text_to_image", settings.model, ctx.device, settings.dtype, settings.cpu_offload,
                             "--text_to_image.model", ctx.progress)  # fmt: skip
        stats: dict[str, Any] = {}
        image = text_to_image(pipe, prompt, settings, ctx.progress, stats)
        del pipe
        _write_png(image, ctx.run_dir / "image.png")
        coverage = find_object(image, config.matting, "the generated image image.png")
        return {"prompt": prompt + settings.prompt_suffix, "object_coverage": round(coverage, 4), **stats}

    return Stage("image", ("image.png",), run, sections=("text_to_image",))


def _video_stage() -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.diffusion.generators import image_to_video, load_pipeline
        from gen4d.export.video import mp4_available, write_mp4

        settings = config.image_to_video
        image = read_rgba_image(ctx.run_dir / "image.png")
        pipe = load_pipeline("image_to_video", settings.model, ctx.device, settings.dtype, settings.cpu_offload,
                             "--image_to_video.model", ctx.progress)  # fmt: skip
        stats: dict[str, Any] = {}
        frames = image_to_video(pipe, image, settings, ctx.progress, stats)
        del pipe
        folder = ctx.run_dir / "raw"
        for i, frame in enumerate(frames):
            _write_png(frame, folder / f"{i:04d}.png")
        if mp4_available():
            write_mp4(frames, ctx.run_dir / "raw.mp4", settings.fps)
        return {"frames": len(frames), "size": [int(frames.shape[2]), int(frames.shape[1])], **stats}

    return Stage("video", ("raw",), run, sections=("image_to_video",))


def _matting_stage() -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.data.video_input import preprocess_frames, read_frames, save_frames

        settings = config.stag4d.input
        frames, names = read_frames(ctx.run_dir / "raw", settings.max_frames, settings.stride)
        method = matting_method(config.matting)
        video = preprocess_frames(frames, names, dc.replace(settings, matting=method))
        save_frames(video, ctx.run_dir / "matted")
        return {"frames": len(video), "matting": method, "crop": list(video.crop), "size": video.size}

    return Stage("matting", ("matted",), run, sections=("matting",))


def _stag4d_stage() -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.recon.stag4d import run_video_to_4d

        folder = ctx.run_dir / "stag4d"
        inner = dc.replace(config.stag4d, input=dc.replace(config.stag4d.input, matting="alpha"))
        if config.stag4d.device == "auto" and config.device != "auto":
            inner = dc.replace(inner, device=config.device)
        result = run_video_to_4d(ctx.run_dir / "matted", folder, inner, "zero123pp", resume=is_run(folder),
                                 progress=ctx.progress, echo=None)  # fmt: skip
        keep = ("num_gaussians", "wall_time_s", "timings", "backend")
        return {"run": "stag4d", **{k: result[k] for k in keep if k in result}}

    return Stage("stag4d", ("stag4d/metrics.json",), run, sections=("stag4d",), resumable=True)


def load_route_video_model(config: RouteConfig, device: torch.device, variant: str | None = None):
    """The Diffusion4D video model of ``--model`` (UserError without one)."""
    from gen4d.diffusion.vdm.components import load_video_model

    if not config.model:
        raise UserError(
            "this route needs the Diffusion4D video model: pass --model DIR (a gen4d model folder written by "
            "`gen4d train-vdm`, or a diffusers base with --vdm.weights); no such model is public, see docs/image_to_4d.md"
        )
    if not Path(config.model).expanduser().exists() and config.model.count("/") != 1:
        raise UserError(f"--model {config.model}: no such model folder")
    name = config.vdm.dtype
    if name == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, name)
    return load_video_model(config.model, weights=config.vdm.weights or None, variant=variant,
                            base=config.vdm.base or None, device=device, dtype=dtype)  # fmt: skip


def _orbit_stage(prompt: str | None, image: bool) -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.data.video_input import load_image_input
        from gen4d.diffusion.vdm.pipeline import generate_dataset

        model = load_route_video_model(config, ctx.device, variant=None if image else "text")
        condition = load_image_input(ctx.run_dir / "image.png", config.sample.condition) if image else None
        meta = {"generator": {"command": "gen4d image" if image else "gen4d text", "model": config.model}}
        _, result, seconds = generate_dataset(model, ctx.run_dir / "orbit", image=condition, prompt=prompt,
                                              config=config.sample, progress=ctx.progress, meta=meta)  # fmt: skip
        del model
        return {"motion": result.motion, "measured_motion": result.measured_motion, "sample_s": round(seconds, 3)}

    return Stage("orbit", ("orbit/manifest.json",), run, sections=("model", "vdm", "sample"))


def construct_stage() -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        from gen4d.recon.construct import reconstruct

        folder = ctx.run_dir / "construct"
        construct = config.construct
        if construct.device == "auto" and config.device != "auto":
            construct = dc.replace(construct, device=config.device)
        metrics = reconstruct(ctx.run_dir / "orbit", construct, folder, resume=is_run(folder), progress=ctx.progress,
                              echo=None, command="reconstruct")  # fmt: skip
        return {"run": "construct", "splits": metrics.get("splits", {})}

    return Stage("construct", ("construct/metrics.json",), run, sections=("construct",), resumable=True)


def route_stages(kind: str, source: str, config: RouteConfig) -> list[Stage]:
    """The stages of ``gen4d image`` (source: the image path) or ``gen4d text`` (source: the prompt)."""
    if config.route == "stag4d":
        first = _image_stage(source) if kind == "image" else _text_image_stage(source)
        return [first, _video_stage(), _matting_stage(), _stag4d_stage()]
    if kind == "image":
        return [_image_stage(source), _orbit_stage(None, image=True), construct_stage()]
    return [_orbit_stage(source, image=False), construct_stage()]


# --------------------------------------------------------------------------------------------- the run


def _input_record(kind: str, source: str) -> dict[str, Any]:
    if kind in ("image", "animate"):
        path = Path(source)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        return {"kind": kind, "path": str(path.resolve()), "sha256": digest}
    return {"kind": kind, "prompt": source}


def run_stage_list(kind: str, source: str, out: str | os.PathLike, config: RouteConfig,
                   stages: Sequence[Stage], resume: bool = False, overwrite: bool = False,
                   stop_after: str | None = None, progress: bool = True,
                   echo: Callable[[str], None] | None = print) -> dict[str, Any]:  # fmt: skip
    """Open the run folder, check / store the config and the input, run the stages."""
    check_stage_name(stages, stop_after)
    device = resolve_device(config.device)
    run_dir = open_run(out, kind, RUN_ENTRIES, resume=resume, overwrite=overwrite, command=kind).path
    with run_logging(run_dir / "log.txt", echo):
        done = finished_stages(run_dir, stages) if resume else []
        if resume:
            may_change = list(ALWAYS_MAY_CHANGE)
            for stage in stages:
                if stage.name not in done:
                    may_change += stage.sections
            check_resume_config(run_dir, config, may_change)
            stored = read_json(run_dir / "input.json") if (run_dir / "input.json").is_file() else None
            current = _input_record(kind, source)
            if done and stored is not None and stored != current:
                shown = current.get("prompt", current.get("path"))
                raise UserError(
                    f"{run_dir}: --resume with another input ({shown!r}) than the run was made for; pass the same "
                    "input, or another --out"
                )
        write_json(run_dir / "config.json", to_dict(config))
        write_json(run_dir / "input.json", _input_record(kind, source))
        LOGGER.info(f"gen4d {kind}: route {config.route}, stages {', '.join(s.name for s in stages)} -> {run_dir}")
        records = run_stages(run_dir, stages, device, resume, stop_after, progress, config)
    return {"run": str(run_dir), "stages": records, "finished": len(records) == len(stages)}


def run_route(kind: str, source: str, out: str | os.PathLike, config: RouteConfig, **kwargs) -> dict[str, Any]:
    """``gen4d image`` (kind 'image', source: image path) or ``gen4d text`` (kind 'text', source: prompt)."""
    if kind == "text":
        source = check_prompt(source)
    else:
        find_object(read_rgba_image(source), config.matting, source)  # before any folder is made
    return run_stage_list(kind, source, out, config, route_stages(kind, source, config), **kwargs)
