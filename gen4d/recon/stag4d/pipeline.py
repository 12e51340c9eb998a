"""STAG4D's pipeline stages: input preparation, anchored multi-view generation, the optimisation
(:mod:`.optimise`) and the outputs, in :func:`run_video_to_4d`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gen4d.cameras import orbit
from gen4d.config import to_dict
from gen4d.data.dataset import MultiViewVideo
from gen4d.diffusion.zero123pp import MultiViewConfig
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.io import write_json
from gen4d.recon.outputs import write_renders
from gen4d.recon.stag4d.conditions import load_guidance, spherical, torch_dtype
from gen4d.recon.stag4d.config import Stag4DConfig
from gen4d.recon.stag4d.optimise import evaluate_views, optimise
from gen4d.render import RenderOptions, resolve_backend
from gen4d.run import check_resume_config, open_run
from gen4d.run.checkpoint import CHECKPOINT_ENTRIES
from gen4d.run.device import resolve_device
from gen4d.run.logs import LOGGER, run_logging
from gen4d.run.timing import peak_memory, release_memory, reset_peak_memory

__all__ = ["MAY_CHANGE_ON_RESUME", "RUN_ENTRIES", "RUN_KIND", "load_multiview_model", "run_video_to_4d"]


def load_multiview_model(config: MultiViewConfig, device: torch.device):
    """The Zero123++ model for ``config.model`` ('random:full' / 'random:tiny' build random weights)."""
    from gen4d.diffusion.zero123pp import Zero123Plus

    dtype = torch_dtype(config.dtype, device)
    if config.model == "random:tiny":
        return Zero123Plus.tiny(version=config.version).to(device)
    if config.model == "random:full":
        return Zero123Plus.full_size(config.version, device=device).to(device, dtype)
    return Zero123Plus.from_pretrained(config.model, config.version, device=device, dtype=dtype)


def _reference_from_frames(frames, config: Stag4DConfig) -> MultiViewVideo:
    times = frames.times()
    size = frames.size
    cams = orbit(0.0, 0.0, config.ref_radius, config.ref_fov_deg, size, size, times)
    return MultiViewVideo(
        images=frames.rgb.contiguous(),
        alphas=frames.alpha.contiguous(),
        cameras=cams,
        splits={"front": torch.arange(len(frames))},
        num_frames=len(frames),
        name="input",
        files=list(frames.names),
    )


def _is_dataset(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / "manifest.json").is_file():
        return True
    return any(p.name.startswith(("front_frame", "multi_frame")) for p in path.iterdir())


def _views_from_grids(grids: torch.Tensor, reference: MultiViewVideo, config: Stag4DConfig) -> MultiViewVideo:
    """Generated views (F, 6, 3, v, v) -> a MultiViewVideo with alpha and Zero123++ cameras."""
    from gen4d.data.matting import matte
    from gen4d.diffusion.zero123pp import view_cameras

    count, _, _, size, _ = grids.shape
    flat = grids.reshape(count * 6, 3, size, size).permute(0, 2, 3, 1)
    rgba = matte(flat, config.view_matting, config.input.rembg, source="the Zero123++ views")
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    times = reference.cameras.times
    _, az, r = spherical(reference.cameras[[0]])
    cams = view_cameras(
        config.multiview.version, times, float(r[0]), float(reference.cameras.fov_y_deg[0]), size, float(az[0])
    )
    frames = torch.arange(count).repeat_interleave(6)
    return MultiViewVideo(images=rgb.contiguous(), alphas=alpha.contiguous(), cameras=cams, frames=frames,
                          num_frames=count, name="zero123pp", splits={"zero123pp": torch.arange(count * 6)})  # fmt: skip


def _write_videos(
    model: DynamicGaussians, run_dir: Path, reference: MultiViewVideo, config: Stag4DConfig, options: RenderOptions
) -> list[str]:
    from gen4d.eval.split import render_cameras
    from gen4d.export import orbit_sweep, to_uint8, write_video

    size = config.output.video_size
    _, _, r = spherical(reference.cameras)
    radius, fov = float(r.mean()), float(reference.cameras.fov_y_deg[0])
    count = max(len(reference), 2) * config.output.loops
    times = (torch.arange(count) % len(reference)).float() / max(len(reference) - 1, 1)

    def render(c):
        return render_cameras(model, c, 1.0, options).rgb

    written = []
    folder = run_dir / "videos"
    for name, azimuth in (("front", 0.0), ("back", 180.0)):
        frames = to_uint8(render(orbit(0.0, azimuth, radius, fov, size, size, times)))
        write_video(frames, folder, name, config.output.fps)
        written.append(name)
    frames = to_uint8(render(orbit_sweep(config.output.round_frames, 0.0, radius, fov, size)))
    write_video(frames, folder, "round", config.output.fps)
    return written + ["round"]


RUN_KIND = "video"
RUN_ENTRIES = (*CHECKPOINT_ENTRIES, "frames", "multiview", "ply", "renders", "videos", "metrics.json", "log.txt",
               "config.json")  # fmt: skip
"""What a STAG4D run writes into its folder (``--overwrite`` deletes only these)."""
MAY_CHANGE_ON_RESUME = ("output", "log_every", "checkpoint_every", "eval_every", "device", "backend", "steps")
"""Config fields a resumed STAG4D run may change."""


def run_video_to_4d(
    input_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: Stag4DConfig,
    multiview: str = "zero123pp",
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    overwrite: bool = False,
    multiview_loader: Callable[[], Any] | None = None,
    guidance_loader: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The whole STAG4D run (module docstring). ``multiview``: 'zero123pp' (generate),
    'oracle:DIR' (ground-truth ``zero123pp`` renders of dataset DIR; INPUT must be that dataset)
    or 'none'. ``*_loader`` override model loading (tests). Returns what metrics.json holds.
    ``run_dir`` follows :func:`gen4d.run.open_run` (``resume`` continues an earlier video run there,
    ``overwrite`` replaces it; any other non-empty folder is refused)."""

    wall = time.perf_counter()
    device = resolve_device(config.device)  # a bad --device fails before the run folder is made
    run_dir = open_run(run_dir, RUN_KIND, RUN_ENTRIES, resume=resume, overwrite=overwrite, command="video").path
    with run_logging(run_dir / "log.txt", echo):
        return _run(input_path, run_dir, config, device, multiview, resume, progress, wall, multiview_loader,
                    guidance_loader)  # fmt: skip


def _run(input_path, run_dir: Path, config: Stag4DConfig, device: torch.device, multiview: str, resume: bool,
         progress: bool, wall: float, multiview_loader, guidance_loader) -> dict[str, Any]:  # fmt: skip
    from gen4d.data.dataset import load_dataset
    from gen4d.data.video_input import load_video_input, save_frames
    from gen4d.diffusion.zero123pp import composite, generate_multiview_cached

    log = LOGGER.info
    reset_peak_memory(device)

    config_path = run_dir / "config.json"
    if resume and config_path.is_file():
        check_resume_config(run_dir, config, MAY_CHANGE_ON_RESUME)
    write_json(config_path, to_dict(config))
    timings: dict[str, float] = {}
    input_path = Path(input_path)

    # -- 1. input ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    evaluation = None
    oracle_dir = None
    if multiview.startswith("oracle"):
        oracle_dir = Path(multiview.split(":", 1)[1]) if ":" in multiview else input_path
    elif multiview not in ("zero123pp", "none"):
        raise ValueError(f"--multiview must be 'zero123pp', 'oracle:DIR' or 'none', got {multiview!r}")
    if _is_dataset(input_path):
        dataset = load_dataset(input_path)
        if not dataset.has_split("front"):
            raise ValueError(
                f"{input_path}: the dataset has no 'front' split to use as the input video (it has {sorted(dataset.splits)})"
            )
        reference = dataset.split("front")
        if reference.alphas is None:
            raise ValueError(f"{input_path}: the front video has no alpha; STAG4D needs RGBA frames")
        size = config.input.size
        if size and size < reference.width:
            reference = reference.resized(size)  # never upsampled: the dataset's resolution is the ceiling
        if dataset.has_split("eval"):
            evaluation = dataset.split("eval")
            if size and size < evaluation.width:
                evaluation = evaluation.resized(size)  # measured at the reference resolution
        log(f"input: dataset {dataset.name}, front video of {len(reference)} frames at {reference.width}px")
    else:
        if oracle_dir is not None:
            raise ValueError(
                "oracle mode needs INPUT to be the dataset folder whose front video the ground-truth views belong to "
                "(so their cameras agree); got a video / frame folder"
            )
        frames = load_video_input(input_path, config.input)
        save_frames(frames, run_dir / "frames")
        reference = _reference_from_frames(frames, config)
        log(f"input: {len(frames)} frames from {input_path}, recentred to {frames.size}px (crop {frames.crop})")
    # frames must be ordered by time for 'frame' indices to mean time order
    order = torch.argsort(reference.cameras.times)
    reference = reference.subset(order, name="front")
    timings["input_s"] = round(time.perf_counter() - t0, 3)

    # -- 2. anchored multi-views ------------------------------------------------------------
    t0 = time.perf_counter()
    views = None
    if oracle_dir is not None:
        source = load_dataset(oracle_dir)
        if not source.has_split("zero123pp"):
            raise ValueError(
                f"{oracle_dir}: no 'zero123pp' split of ground-truth views (it has {sorted(source.splits)})"
            )
        views = source.split("zero123pp")
        if views.width > reference.width:
            views = views.resized(reference.width)  # supervise at (at most) the reference resolution
        ref_times = reference.cameras.times
        nearest = (views.cameras.times[:, None] - ref_times[None]).abs().argmin(-1)
        views.frames = nearest  # frame index into the reference video
        log(f"multi-view: oracle, {len(views)} ground-truth views at {len(torch.unique(nearest))} frames")
    elif multiview == "zero123pp":
        images = composite(torch.cat([reference.images, reference.alphas], -1))
        loader = multiview_loader or (lambda: load_multiview_model(config.multiview, device))
        grids = generate_multiview_cached(loader, images, config.multiview, run_dir / "multiview", progress)
        views = _views_from_grids(grids, reference, config)
        if views.width > reference.width:
            views = views.resized(reference.width)
        log(f"multi-view: Zero123++ {config.multiview.version}, {len(views)} views (cached in {run_dir / 'multiview'})")
    timings["multiview_s"] = round(time.perf_counter() - t0, 3)
    release_memory(device)  # Zero123++ is gone; return its cached blocks before Zero-1-to-3 loads

    # -- 3. optimisation --------------------------------------------------------------------
    t0 = time.perf_counter()
    guidance = None
    if config.sds.weight > 0 and config.views_per_step > 0:
        guidance = guidance_loader() if guidance_loader is not None else load_guidance(config.sds, device)
    timings["guidance_load_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    model, summary = optimise(reference, views, guidance, config, run_dir, evaluation, resume, progress, device)
    timings["optimise_s"] = round(time.perf_counter() - t0, 3)
    del guidance

    # -- 4. outputs -------------------------------------------------------------------------
    t0 = time.perf_counter()
    options = RenderOptions(backend=config.backend)
    result: dict[str, Any] = {
        "method": "stag4d",
        "input": str(input_path),
        "multiview": multiview,
        "frames": len(reference),
    }
    if evaluation is not None:
        result["eval"], renders = evaluate_views(model, evaluation, options)
        if config.output.renders:
            write_renders(run_dir / "renders" / "eval", renders, [f"{i:04d}" for i in range(len(evaluation))])
        log(
            f"eval: PSNR {result['eval']['psnr']:.2f} SSIM {result['eval']['ssim']:.3f} on {len(evaluation)} held-out views"
        )
    if config.output.ply:
        from gen4d.export import write_ply_sequence

        write_ply_sequence(model.at, reference.cameras.times, run_dir / "ply")
    if config.output.videos:
        with torch.no_grad():
            result["videos"] = _write_videos(model, run_dir, reference, config, options)
    timings["outputs_s"] = round(time.perf_counter() - t0, 3)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.update(
        num_gaussians=model.num_gaussians,
        timings=timings,
        wall_time_s=round(time.perf_counter() - wall, 3),
        train_time_s=summary["train_time_s"],
        history=summary["history"],
        sds_conditions=summary["sds_conditions"],
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        backend=resolve_backend(options.backend, device),
        **peak_memory(device),
    )
    write_json(run_dir / "metrics.json", result)
    log(f"done in {result['wall_time_s']:.1f} s: {model.num_gaussians} Gaussians; outputs in {run_dir}")
    return result
