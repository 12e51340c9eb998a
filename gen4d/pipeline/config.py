"""Settings of the one-command routes (stored as RUN/config.json; one class for all three commands,
each uses the sections of its stages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gen4d.config import check_positive
from gen4d.diffusion.generators import ImageToVideoConfig, TextToImageConfig
from gen4d.diffusion.vdm.pipeline import SampleConfig
from gen4d.recon.presets import ConstructConfig
from gen4d.recon.presets import preset as construct_preset
from gen4d.recon.stag4d.config import Stag4DConfig
from gen4d.recon.stag4d.config import preset as stag4d_preset

__all__ = ["RouteConfig", "StaticRenderConfig", "VideoModelConfig", "route_config"]


@dataclass(frozen=True)
class VideoModelConfig:
    """Where the Diffusion4D video model's parts come from (``--route diffusion4d`` and ``gen4d animate``)."""

    weights: str = ""
    """Fine-tuned UNet safetensors for a diffusers base --model ('' : none; a gen4d model folder has its own)."""
    base: str = ""
    """Folder or hub id of the VAE / CLIP encoders / base UNet ('' : as recorded in model.json)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights dtype (auto: float16 on CUDA, float32 on a CPU)."""


@dataclass(frozen=True)
class StaticRenderConfig:
    """The static orbit of ``gen4d animate``'s asset (Blender for meshes, gen4d's rasteriser for a 3DGS PLY)."""

    samples: int = 64
    """Cycles samples per pixel (meshes)."""
    blender_device: Literal["cpu", "gpu"] = "cpu"
    """Cycles device (meshes)."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser (3DGS PLY)."""
    fill: float = 0.9
    """A PLY is centred and scaled so that its bounding box's larger side is this (Blender's 'box' normalisation: 1)."""

    def __post_init__(self) -> None:
        check_positive(self, "samples", "fill")


@dataclass(frozen=True)
class RouteConfig:
    """Settings of ``gen4d image`` / ``gen4d text`` / ``gen4d animate``."""

    route: Literal["stag4d", "diffusion4d"] = "stag4d"
    """stag4d: public SDXL / SVD / Zero123++ / Zero-1-to-3 weights; diffusion4d: a trained Diffusion4D video model (--model)."""
    model: str = ""
    """The Diffusion4D video model (a gen4d model folder from train-vdm, or a diffusers base with --vdm.weights)."""
    device: str = "auto"
    """cuda, cpu or auto."""
    matting: Literal["auto", "rembg", "color"] = "auto"
    """Background removal of the input image and of the video frames: rembg, color (the background is one flat colour, as the prompt asks), or auto (rembg when installed, else color). Other matting settings: --stag4d.input.*."""
    text_to_image: TextToImageConfig = field(default_factory=TextToImageConfig)
    """Text -> image (gen4d text, STAG4D route)."""
    image_to_video: ImageToVideoConfig = field(default_factory=ImageToVideoConfig)
    """Image -> video with Stable Video Diffusion (STAG4D route)."""
    stag4d: Stag4DConfig = field(default_factory=lambda: stag4d_preset("stag4d"))
    """The video -> 4D stage (gen4d video's settings; --stag4d-preset picks the preset)."""
    vdm: VideoModelConfig = field(default_factory=VideoModelConfig)
    """The Diffusion4D video model's parts (diffusion4d route, animate)."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Orbital-video generation (gen4d sample-vdm's settings)."""
    construct: ConstructConfig = field(default_factory=lambda: construct_preset("default"))
    """4D construction on the orbital video (gen4d reconstruct's settings; --construct-preset)."""
    static_render: StaticRenderConfig = field(default_factory=StaticRenderConfig)
    """The static orbit of gen4d animate's asset."""


def route_config(stag4d: str = "stag4d", construct: str = "default") -> RouteConfig:
    """The defaults with the named STAG4D and construction presets."""
    return RouteConfig(stag4d=stag4d_preset(stag4d), construct=construct_preset(construct))
