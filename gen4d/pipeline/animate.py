"""``gen4d animate``: static 3D -> 4D (Diffusion4D's third condition) in one command.

Stages (run folder of kind ``animate``): ``static/`` - the asset's static orbit V-bar as a dataset
(a mesh rendered with Blender, :func:`gen4d.data.blender.render_asset`; a 3DGS PLY rendered with
gen4d's rasteriser on the video model's orbit cameras) -> ``orbit/`` - the orbital video generated
by the static3d video model -> ``construct/`` - 4D construction (coarse stage on the orbit and the
static orbit, fine stage on the orbit).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gen4d.errors import UserError
from gen4d.pipeline.config import RouteConfig
from gen4d.pipeline.routes import construct_stage, load_route_video_model, run_stage_list
from gen4d.run.stages import Stage, StageContext

__all__ = ["MESH_SUFFIXES", "animate", "animate_stages", "normalise_gaussians", "render_static_ply", "read_spec"]

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".fbx")


def read_spec(model: str):
    """The video model's :class:`VDMSpec` (model.json of a gen4d model folder; the defaults otherwise)."""
    from gen4d.config import from_dict
    from gen4d.diffusion.vdm.components import MODEL_FILE, VDMSpec
    from gen4d.io import read_json

    path = Path(model).expanduser() / MODEL_FILE
    return from_dict(VDMSpec, read_json(path), strict=False).validate() if path.is_file() else VDMSpec()


def normalise_gaussians(gaussians, fill: float = 0.9):
    """Centre a Gaussian set on its bounding box (of Gaussians with opacity > 0.05) and scale it so that the
    box's larger side is ``fill`` (the frame Blender's 'box' normalisation gives a mesh)."""
    keep = gaussians.opacities.reshape(-1) > 0.05
    means = gaussians.means[keep] if bool(keep.any()) else gaussians.means
    low, high = means.min(0).values, means.max(0).values
    scale = fill / float((high - low).max().clamp_min(1e-8))
    centre = (low + high) / 2
    return gaussians.with_(means=(gaussians.means - centre) * scale, log_scales=gaussians.log_scales + float(torch.log(torch.tensor(scale))))  # fmt: skip


def render_static_ply(path: str | os.PathLike, cameras, fill: float = 0.9, backend: str = "auto", device="cpu"):
    """A 3DGS PLY seen from ``cameras`` (their times are ignored: the asset is static) -> (C, H, W, 4)
    un-premultiplied RGBA in [0, 1]."""
    from gen4d.gaussians.ply import load_ply
    from gen4d.render import RenderOptions, render

    gaussians = normalise_gaussians(load_ply(path), fill).to(device)
    rgb, alpha = [], []
    with torch.no_grad():
        for start in range(0, len(cameras), 8):
            chunk = cameras[list(range(start, min(start + 8, len(cameras))))].to(device)
            out = render(gaussians, chunk, torch.zeros(3, device=device), RenderOptions(backend=backend))
            rgb.append(out.rgb.float().cpu())
            alpha.append(out.alpha.float().cpu())
    rgb, alpha = torch.cat(rgb), torch.cat(alpha).clamp(0, 1)
    colour = torch.where(alpha > 1e-4, rgb / alpha.clamp_min(1e-4), torch.zeros_like(rgb)).clamp(0, 1)
    return torch.cat([colour, alpha], -1)


def _static_stage(asset: str) -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        config: RouteConfig = ctx.config
        spec = read_spec(config.model)
        folder = ctx.run_dir / "static"
        if Path(asset).suffix.lower() == ".ply":
            from gen4d.data.dataset import MultiViewVideo
            from gen4d.data.manifest import save_dataset
            from gen4d.diffusion.vdm.components import orbit_cameras

            cameras = orbit_cameras(spec).with_times(0.0)
            rgba = render_static_ply(
                asset, cameras, config.static_render.fill, config.static_render.backend, ctx.device
            )
            video = MultiViewVideo(images=rgba[..., :3].contiguous(), alphas=rgba[..., 3:].contiguous(),
                                   cameras=cameras, splits={"static_orbit": torch.arange(len(cameras))},
                                   frames=torch.zeros(len(cameras), dtype=torch.long), num_frames=1,
                                   name=Path(asset).stem)  # fmt: skip
            save_dataset(video, folder, meta={"source": {"asset": str(asset), "renderer": "gen4d rasteriser"}})
            coverage = float((rgba[..., 3] > 0.5).float().mean())
        else:
            from gen4d.data.blender import RenderConfig, render_asset

            settings = RenderConfig(sets=("static_orbit",), num_frames=spec.num_frames, size=spec.size,
                                    samples=config.static_render.samples, device=config.static_render.blender_device)  # fmt: skip
            render_asset(asset, folder, settings, progress=ctx.progress)
            coverage = None
        if coverage is not None and coverage < 1e-3:
            raise UserError(f"{asset}: the static orbit is empty (nothing in view); check the asset")
        return {"asset": str(asset), "views": spec.num_frames, "size": spec.size, "coverage": coverage}

    return Stage("static", ("static/manifest.json",), run, sections=("static_render",))


def _orbit_stage(prompt: str | None) -> Stage:
    def run(ctx: StageContext) -> dict[str, Any]:
        from gen4d.diffusion.vdm.pipeline import generate_dataset, static_orbit_condition

        config: RouteConfig = ctx.config
        model = load_route_video_model(config, ctx.device, variant="static3d")
        static = static_orbit_condition(ctx.run_dir / "static")
        meta = {"generator": {"command": "gen4d animate", "model": config.model, "static": "static"}}
        _, result, seconds = generate_dataset(model, ctx.run_dir / "orbit", static_video=static, prompt=prompt,
                                              config=config.sample, progress=ctx.progress, meta=meta)  # fmt: skip
        del model
        return {"motion": result.motion, "measured_motion": result.measured_motion, "sample_s": round(seconds, 3)}

    return Stage("orbit", ("orbit/manifest.json",), run, sections=("model", "vdm", "sample"))


def animate_stages(asset: str, prompt: str | None = None) -> list[Stage]:
    return [_static_stage(asset), _orbit_stage(prompt), construct_stage()]


def check_animate_inputs(asset: str, config: RouteConfig) -> None:
    """UserErrors for a missing / unsupported asset and a missing or non-static3d video model."""
    path = Path(asset)
    if not path.is_file():
        raise UserError(f"{asset}: no such asset file")
    if path.suffix.lower() not in (*MESH_SUFFIXES, ".ply"):
        raise UserError(
            f"{asset}: unsupported asset {path.suffix!r}; gen4d animate takes a mesh ({', '.join(MESH_SUFFIXES)}) "
            "or a 3DGS .ply"
        )
    if not config.model:
        raise UserError(
            "gen4d animate needs the static3d variant of the Diffusion4D video model: pass --model DIR (a gen4d "
            "model folder from `gen4d train-vdm --model.variant static3d`); no such model is public, see docs/image_to_4d.md"
        )
    if not Path(config.model).expanduser().exists() and config.model.count("/") != 1:
        raise UserError(f"--model {config.model}: no such model folder")
    spec = read_spec(config.model)
    if (Path(config.model).expanduser() / "model.json").is_file() and spec.variant != "static3d":
        raise UserError(
            f"--model {config.model} is the {spec.variant!r} variant; gen4d animate needs the static3d variant"
        )


def animate(asset: str, out: str | os.PathLike, config: RouteConfig, prompt: str | None = None, **kwargs):
    """The whole ``gen4d animate`` run (module docstring); ``kwargs`` as :func:`run_stage_list`."""
    check_animate_inputs(asset, config)
    return run_stage_list("animate", asset, out, config, animate_stages(asset, prompt), **kwargs)
