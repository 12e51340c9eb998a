"""The public generators of the STAG4D image / text route: text -> image with a diffusers
text-to-image pipeline (SDXL by default) and image -> video with Stable Video Diffusion.

Weights come from a local diffusers folder or a hub id (offline: the cached copy, or an error
saying how to download them, see :func:`gen4d.metrics.weights.resolve_hub_model`); ``random:tiny``
and ``random:full`` build random weights of the real architecture
(:mod:`gen4d.diffusion.random_weights`; tests and benchmarks). A pipeline only runs inference; the
caller deletes it after its stage so that the next stage's model has the GPU to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range
from gen4d.errors import UserError

__all__ = [
    "PROMPT_SUFFIX",
    "NEGATIVE_PROMPT",
    "TextToImageConfig",
    "ImageToVideoConfig",
    "load_pipeline",
    "text_to_image",
    "image_to_video",
    "fit_to_canvas",
]

DIFFUSION_HINT = "pip install 'gen4d[diffusion]' (diffusers, transformers, accelerate)"
PROMPT_SUFFIX = ", one single whole object, centred and fully in view, on a plain white background, studio lighting"
"""Appended to the user's prompt: STAG4D's multi-view and video stages expect one whole object on a plain background."""
NEGATIVE_PROMPT = "cropped, cut off, several objects, scenery, busy background, text, watermark, blurry"
"""The default negative prompt of the text-to-image stage."""


@dataclass(frozen=True)
class TextToImageConfig:
    """Text -> image (the first stage of ``gen4d text``'s STAG4D route)."""

    model: str = "stabilityai/stable-diffusion-xl-base-1.0"
    """diffusers text-to-image folder or hub id (SDXL by default; any AutoPipelineForText2Image model), or 'random:tiny' / 'random:full'."""
    prompt_suffix: str = PROMPT_SUFFIX
    """Text appended to the prompt (asks for one whole object on a plain white background; '' for none)."""
    negative_prompt: str = NEGATIVE_PROMPT
    """Negative prompt ('' for none)."""
    size: int = 1024
    """Image side in pixels (SDXL: 1024)."""
    steps: int = 30
    """Denoising steps."""
    guidance_scale: float = 5.0
    """Classifier-free guidance scale."""
    seed: int = 0
    """Seed of the initial noise."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Weights dtype on CUDA (always float32 on a CPU)."""
    cpu_offload: bool = False
    """Keep only the sub-model in use on the GPU (accelerate's model offload): less GPU memory, slower."""

    def __post_init__(self) -> None:
        check_positive(self, "size", "steps")
        check_non_negative(self, "guidance_scale")
        if self.size % 8:
            raise ConfigError("size", f"expected a multiple of 8, got {self.size}", type(self).__name__)


@dataclass(frozen=True)
class ImageToVideoConfig:
    """Image -> video with Stable Video Diffusion (img2vid: 14 frames, img2vid-xt: 25)."""

    model: str = "stabilityai/stable-video-diffusion-img2vid-xt"
    """SVD folder or hub id (img2vid or img2vid-xt), or 'random:tiny' / 'random:full'."""
    frames: int = 0
    """Frames to generate (0: the model's own, 14 for img2vid and 25 for img2vid-xt)."""
    width: int = 1024
    """Video width (SVD was trained at 1024 x 576; the image is fitted inside, not stretched)."""
    height: int = 576
    """Video height."""
    steps: int = 25
    """Denoising steps."""
    motion_bucket_id: int = 127
    """SVD's motion conditioning: higher means more motion."""
    fps: int = 7
    """SVD's frame-rate conditioning (also the fps of raw.mp4)."""
    noise_aug_strength: float = 0.02
    """Noise added to the condition image: more noise, less likeness and more motion."""
    decode_chunk_size: int = 8
    """Frames decoded by the VAE at once (lower: less memory)."""
    min_guidance_scale: float = 1.0
    """Guidance at the first frame (SVD ramps it linearly over the frames)."""
    max_guidance_scale: float = 3.0
    """Guidance at the last frame."""
    seed: int = 0
    """Seed of the initial noise."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Weights dtype on CUDA (always float32 on a CPU)."""
    cpu_offload: bool = False
    """Keep only the sub-model in use on the GPU (accelerate's model offload): less GPU memory, slower."""

    def __post_init__(self) -> None:
        check_non_negative(self, "frames", "motion_bucket_id", "min_guidance_scale", "max_guidance_scale")
        check_positive(self, "width", "height", "steps", "fps", "decode_chunk_size")
        check_range(self, "noise_aug_strength", 0.0, 10.0)
        for name in ("width", "height"):
            if getattr(self, name) % 8:
                raise ConfigError(name, f"expected a multiple of 8, got {getattr(self, name)}", type(self).__name__)
        if self.frames == 1:
            raise ConfigError("frames", "expected 0 (the model's own) or at least 2", type(self).__name__)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_pipeline(kind: Literal["text_to_image", "image_to_video"], model: str, device: torch.device,
                  dtype: str = "float16", cpu_offload: bool = False, option: str = "--model",
                  progress: bool = True):  # fmt: skip
    """The diffusers pipeline for ``kind`` from ``model`` (folder, hub id or 'random:tiny|full'), on ``device``."""
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(f"the text / image to video route needs diffusers: {DIFFUSION_HINT}") from err
    torch_dtype = _dtype(dtype, device)
    what = "the text-to-image model" if kind == "text_to_image" else "the Stable Video Diffusion model"
    if model in ("random:tiny", "random:full"):
        from gen4d.diffusion import random_weights

        build = random_weights.random_sdxl_pipeline if kind == "text_to_image" else random_weights.random_svd_pipeline
        pipe = build(model.split(":")[1], device="cpu" if cpu_offload else device, dtype=torch_dtype)
    else:
        source = _resolve(model, what, option)
        cls = diffusers.AutoPipelineForText2Image if kind == "text_to_image" else diffusers.StableVideoDiffusionPipeline
        import warnings

        if not progress:
            diffusers.utils.logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():  # newer diffusers call it dtype; older ones know only torch_dtype
                warnings.simplefilter("ignore", FutureWarning)
                pipe = cls.from_pretrained(source, torch_dtype=torch_dtype)
        except (OSError, ValueError) as err:
            raise UserError(
                f"{option} {model}: could not load {what} ({str(err).splitlines()[0][:300]}); pass a complete "
                "diffusers folder (model_index.json, unet/, vae/, ...) or a hub id"
            ) from None
    if cpu_offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe = pipe.to(device)
    return pipe


def _resolve(model: str, what: str, option: str) -> str:
    from gen4d.metrics.weights import resolve_hub_model

    path = Path(model).expanduser()
    local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1
    if local:
        if not path.is_dir():
            raise UserError(
                f"{option} {model}: no such model folder; pass a diffusers folder (downloaded with "
                "`huggingface-cli download REPO --local-dir DIR`, see docs/image_to_4d.md) or a hub id"
            )
        return str(path)
    return str(resolve_hub_model(model, what))  # offline: the cached copy, or how to download it


def _progress(pipe, progress: bool, desc: str) -> None:
    pipe.set_progress_bar_config(disable=not progress, desc=desc, leave=False)


def _step_clock(pipe, stats: dict | None):
    """A ``callback_on_step_end`` that records the mean denoising step time in ``stats["seconds_per_step"]``
    (synchronising CUDA once per step), or None when no stats are wanted."""
    if stats is None:
        return None
    import time

    times: list[float] = []

    def callback(_pipe, step, timestep, kwargs):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize(pipe.device)
        times.append(time.perf_counter())
        if len(times) >= 2:
            stats["seconds_per_step"] = round((times[-1] - times[0]) / (len(times) - 1), 4)
        stats["steps"] = len(times)
        return kwargs

    return callback


def text_to_image(pipe, prompt: str, config: TextToImageConfig, progress: bool = True,
                  stats: dict | None = None) -> np.ndarray:  # fmt: skip
    """(size, size, 3) uint8 image of ``prompt`` + the configured suffix; ``stats`` receives the
    mean denoising step time."""
    if not prompt or not prompt.strip():
        raise UserError('the prompt is empty; describe the object, e.g. gen4d text "a corgi running" --out RUN')
    _progress(pipe, progress, "text -> image")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    out = pipe(
        prompt=prompt.strip() + config.prompt_suffix, negative_prompt=config.negative_prompt or None,
        height=config.size, width=config.size, num_inference_steps=config.steps,
        guidance_scale=config.guidance_scale, generator=generator, output_type="np",
        callback_on_step_end=_step_clock(pipe, stats),
    )  # fmt: skip
    return (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)


def fit_to_canvas(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3|4) uint8 -> (height, width, 3) uint8: RGBA composited on white, scaled to fit inside
    the canvas with its aspect kept (never stretched) and padded with its background colour (white
    for RGBA, the median border colour for RGB)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3|4) uint8, got {image.shape} {image.dtype}")
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = (image[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
        fill = (255, 255, 255)
    else:
        rgb = image[..., :3]
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        fill = tuple(int(v) for v in np.median(border, axis=0))
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(
        Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS), ((width - size[0]) // 2, (height - size[1]) // 2)
    )
    return np.asarray(canvas, dtype=np.uint8)


def image_to_video(pipe, image: np.ndarray, config: ImageToVideoConfig, progress: bool = True,
                   stats: dict | None = None) -> np.ndarray:  # fmt: skip
    """(F, height, width, 3) uint8 frames generated from ``image`` ((H, W, 3|4) uint8, fitted to the
    canvas); ``stats`` receives the mean denoising step time."""
    from PIL import Image

    frames = config.frames or int(pipe.unet.config.num_frames)
    condition = Image.fromarray(fit_to_canvas(image, config.width, config.height))
    _progress(pipe, progress, "image -> video")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    out = pipe(
        condition, height=config.height, width=config.width, num_frames=frames, num_inference_steps=config.steps,
        min_guidance_scale=config.min_guidance_scale, max_guidance_scale=config.max_guidance_scale, fps=config.fps,
        motion_bucket_id=config.motion_bucket_id, noise_aug_strength=config.noise_aug_strength,
        decode_chunk_size=config.decode_chunk_size, generator=generator, output_type="np",
        callback_on_step_end=_step_clock(pipe, stats),
    )  # fmt: skip
    video = np.asarray(out.frames[0])
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
