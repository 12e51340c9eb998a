"""Zero123++ multi-view generation with STAG4D's temporal anchor, built on diffusers components.

Zero123++ (Shi et al. 2023) turns one image into a 3 x 2 grid of views (row-major: relative
azimuths 30, 90, 150, 210, 270, 330 degrees; elevations 30 / -20 (v1.1) or 20 / -10 (v1.2)).
The model is an SD2-style ``UNet2DConditionModel`` conditioned three ways, all reproduced here:

* reference-only attention: the condition image's VAE latent (unscaled, ``latent_dist.sample``),
  noised to the current step, is run through the UNet first; every self-attention layer then
  attends to ``[own tokens ; condition tokens]`` (:mod:`gen4d.diffusion.anchor`);
* global conditioning: the empty prompt's CLIP text embedding plus the CLIP image embedding
  times 77 per-token "ramping" coefficients (``model_index.json``);
* classifier-free guidance 4: the unconditional half uses the plain empty-prompt embedding and
  the latent of an all-zero (grey) condition image.

Latents live in Zero123++'s scaled space: ``decode(unscale(z) / scaling_factor)`` with
``unscale(z) = z / 0.75 + 0.22`` and the decoded image multiplied by 0.8 / 0.5. Sampling uses
diffusers' EulerAncestral scheduler with ``timestep_spacing="trailing"``.

STAG4D specifics: 75 steps, CFG 4, the condition composited on grey (127), every frame sampled
from the same seed, and the temporal anchor (frame 0's self-attention inputs fused into every
later frame; :class:`MultiViewConfig.anchor_weight`). Each frame draws its noise from its own
generator seeded identically, so a frame's result does not depend on which frames share its
batch - that is what lets the anchor frame be recomputed inside each batch (anchor mode
"batch", no cache) instead of caching ~8 GB of its activations (mode "cache").

Weights: ``sudo-ai/zero123plus-v1.1`` / ``-v1.2`` from a local folder (diffusers layout:
``unet/ vae/ text_encoder/ tokenizer/ vision_encoder/ scheduler/ feature_extractor_*/
model_index.json``) or a hub id (downloaded with huggingface_hub when online). Tested here only
with random weights (tiny and full-size architectures); not validated against real weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gen4d._checks import check_shape
from gen4d.cameras import Cameras, zero123pp_poses
from gen4d.config import check_non_negative, check_positive, check_range
from gen4d.diffusion.anchor import (
    AnchorCache,
    AnchorSpec,
    AttentionContext,
    BatchLayout,
    anchor_cache_bytes,
    install_processors,
)

__all__ = [
    "DIFFUSION_HINT",
    "MultiViewConfig",
    "ImagePrep",
    "Zero123Plus",
    "split_grid",
    "join_grid",
    "composite",
    "view_cameras",
    "multiview_key",
    "generate_multiview_cached",
    "load_cached_multiview",
]

DIFFUSION_HINT = "pip install 'gen4d[diffusion]' (diffusers, transformers, accelerate)"
GREY = 127.0 / 255.0
LATENT_SHIFT, LATENT_SCALE, IMAGE_SCALE = 0.22, 0.75, 0.8 / 0.5


def _require_diffusers():
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(f"Zero123++ needs diffusers and transformers: {DIFFUSION_HINT}") from err


@dataclass(frozen=True)
class MultiViewConfig:
    """Zero123++ sampling with the temporal anchor (defaults: STAG4D's settings)."""

    model: str = "sudo-ai/zero123plus-v1.1"
    """Zero123++ weights: a local diffusers folder or a hub id."""
    version: Literal["v1.1", "v1.2"] = "v1.1"
    """Model version (decides the view elevations and field of view)."""
    steps: int = 75
    """Denoising steps (EulerAncestral, trailing spacing)."""
    guidance_scale: float = 4.0
    """Classifier-free guidance scale (<= 1 disables the unconditional half)."""
    seed: int = 42
    """Seed used, identically, for every frame."""
    anchor_weight: float = 0.5
    """Temporal anchor fusion weight (0 = off, frames independent; 1 = frame 0's inputs)."""
    anchor_mode: Literal["batch", "cache"] = "batch"
    """'batch': recompute frame 0 inside each batch (no cache); 'cache': record frame 0 once (fp16, on device)."""
    frames_per_batch: int = 4
    """Frames denoised together (in 'batch' mode this includes the anchor frame's copy)."""
    max_cache_gb: float = 10.0
    """'cache' mode refuses to record more than this many GB."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Model dtype on CUDA (CPU always runs float32)."""

    def __post_init__(self) -> None:
        check_positive(self, "steps", "frames_per_batch", "max_cache_gb")
        check_non_negative(self, "guidance_scale")
        check_range(self, "anchor_weight", 0.0, 1.0)


@dataclass(frozen=True)
class ImagePrep:
    """Resize + normalise settings of a CLIPImageProcessor (preprocessor_config.json)."""

    size: int
    """Square output size (resize the shorter side, then centre-crop)."""
    mean: tuple[float, float, float]
    """Per-channel mean subtracted after scaling to [0, 1]."""
    std: tuple[float, float, float]
    """Per-channel std divided by."""

    @staticmethod
    def from_json(path: Path, default: ImagePrep) -> ImagePrep:
        if not path.is_file():
            return default
        data = json.loads(path.read_text())
        crop = data.get("crop_size", data.get("size", default.size))
        if isinstance(crop, dict):
            crop = crop.get("height", crop.get("shortest_edge", default.size))
        return ImagePrep(
            int(crop), tuple(data.get("image_mean", default.mean)), tuple(data.get("image_std", default.std))
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 3, size, size) normalised."""
        h, w = images.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        out = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        out = out[..., top : top + self.size, left : left + self.size].clamp(0, 1)
        mean = torch.tensor(self.mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
        return (out - mean) / std


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# -----------------------------------------------------------------------------------------
# Architectures (random weights): full size for benchmarks, tiny for CPU tests.
# -----------------------------------------------------------------------------------------
FULL_UNET = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
FULL_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=0,
)  # fmt: skip
FULL_VISION = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu",
)  # fmt: skip
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    prediction_type="v_prediction", steps_offset=1, timestep_spacing="trailing",
)  # fmt: skip

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    cross_attention_dim=16,
    attention_head_dim=2,
    norm_num_groups=4,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
    scaling_factor=0.18215,
)
TINY_TEXT = dict(
    vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)  # fmt: skip
TINY_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    projection_dim=16,
)  # fmt: skip


def composite(rgba: torch.Tensor, background: float | Sequence[float] = GREY) -> torch.Tensor:
    """(F, H, W, 4) RGBA in [0, 1] -> (F, 3, H, W) RGB over a constant background."""
    check_shape("rgba", rgba, (None, None, None, 4))
    bg = torch.as_tensor(background, dtype=rgba.dtype).reshape(-1)
    rgb = rgba[..., :3] * rgba[..., 3:] + bg * (1 - rgba[..., 3:])
    return rgb.permute(0, 3, 1, 2).contiguous()


def split_grid(grid: torch.Tensor, rows: int = 3, cols: int = 2) -> torch.Tensor:
    """(..., C, rows*v, cols*v) grid -> (..., rows*cols, C, v, v) views in row-major order."""
    *lead, c, h, w = grid.shape
    if h % rows or w % cols or h // rows != w // cols:
        raise ValueError(f"split_grid: a {h}x{w} image is not a {rows}x{cols} grid of square views")
    v, k = h // rows, len(lead)
    views = grid.reshape(*lead, c, rows, v, cols, v).permute(*range(k), k + 1, k + 3, k, k + 2, k + 4)
    return views.reshape(*lead, rows * cols, c, v, v)


def join_grid(views: torch.Tensor, rows: int = 3, cols: int = 2) -> torch.Tensor:
    """Inverse of :func:`split_grid`: (..., rows*cols, C, v, v) -> (..., C, rows*v, cols*v)."""
    *lead, n, c, v, v2 = views.shape
    if n != rows * cols or v != v2:
        raise ValueError(f"join_grid: expected {rows * cols} square views, got {n} of {v}x{v2}")
    grid = views.reshape(*lead, rows, cols, c, v, v)
    k = len(lead)
    grid = grid.permute(*range(k), k + 2, k, k + 3, k + 1, k + 4)
    return grid.reshape(*lead, c, rows * v, cols * v)


def view_cameras(
    version: Literal["v1.1", "v1.2"],
    times: torch.Tensor | Sequence[float],
    radius: float = 2.0,
    input_fov_deg: float = 49.1,
    size: int = 320,
    input_azimuth_deg: float = 0.0,
) -> Cameras:
    """(F * 6) cameras of Zero123++'s views for an input camera on the front (azimuth 0,
    elevation 0) at ``radius`` with ``input_fov_deg``; frame-major, views row-major."""
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    return Cameras.cat(
        [zero123pp_poses(version, input_azimuth_deg, radius, input_fov_deg, size, float(t)) for t in times.tolist()]
    )


def _resolve_folder(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {model}")
    from gen4d.metrics.weights import resolve_hub_model

    resolved = resolve_hub_model(model, "model")  # offline: the cached copy, or how to get the weights
    if isinstance(resolved, Path):
        return resolved
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"downloading {model!r} needs huggingface_hub: {DIFFUSION_HINT}") from err
    try:
        return Path(snapshot_download(model))
    except Exception as err:  # network / auth / unknown repo
        raise FileNotFoundError(
            f"could not load {model!r}: not a local folder and the hub download failed ({type(err).__name__}: {err}). "
            "Download the weights elsewhere and pass the folder."
        ) from err


class Zero123Plus:
    """Zero123++ components plus gen4d's sampler (reference attention, temporal anchor)."""

    def __init__(
        self,
        unet,
        vae,
        text_encoder,
        vision_encoder,
        scheduler_config: dict,
        ramping: torch.Tensor,
        prompt_ids: torch.Tensor,
        version: Literal["v1.1", "v1.2"] = "v1.1",
        vae_prep: ImagePrep | None = None,
        clip_prep: ImagePrep | None = None,
        view_size: int = 320,
    ):
        _require_diffusers()
        self.unet, self.vae, self.text_encoder, self.vision_encoder = unet, vae, text_encoder, vision_encoder
        for module in (unet, vae, text_encoder, vision_encoder):
            module.eval().requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.scheduler_config["timestep_spacing"] = "trailing"
        ramping = torch.as_tensor(ramping, dtype=torch.float32).reshape(-1)
        check_shape("ramping", ramping, (77,))
        self.ramping = ramping
        check_shape("prompt_ids", prompt_ids, (1, None))
        self.prompt_ids = prompt_ids.long()
        self.version = version
        self.vae_prep = vae_prep or ImagePrep(view_size, (0.5,) * 3, (0.5,) * 3)
        self.clip_prep = clip_prep or ImagePrep(int(vision_encoder.config.image_size), CLIP_MEAN, CLIP_STD)
        self.view_size = int(view_size)
        self.self_attention_layers = install_processors(unet)
        self._empty_prompt: torch.Tensor | None = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        unet_config: dict,
        vae_config: dict,
        text_config: dict,
        vision_config: dict,
        scheduler_config: dict = SCHEDULER,
        version: Literal["v1.1", "v1.2"] = "v1.1",
        view_size: int = 320,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> Zero123Plus:
        """Random-weight model of the given architecture (built directly on ``device``)."""
        _require_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(seed)
        with torch.device(device):
            unet = UNet2DConditionModel(**unet_config)
            vae = AutoencoderKL(**vae_config)
            text = CLIPTextModel(CLIPTextConfig(**text_config))
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config))
        gen = torch.Generator().manual_seed(seed)
        ramping = torch.rand(77, generator=gen)
        ids = [text_config["bos_token_id"], text_config["eos_token_id"]] + [text_config["pad_token_id"]] * 75
        return cls(
            unet, vae, text, vision, scheduler_config, ramping, torch.tensor([ids]), version, view_size=view_size
        )

    @classmethod
    def tiny(cls, seed: int = 0, view_size: int = 16, version: Literal["v1.1", "v1.2"] = "v1.1") -> Zero123Plus:
        """A 2-level, 2-layer random model for CPU tests (views of ``view_size`` pixels)."""
        scheduler = dict(SCHEDULER)
        return cls.build(TINY_UNET, TINY_VAE, TINY_TEXT, TINY_VISION, scheduler, version, view_size, seed)

    @classmethod
    def full_size(cls, version: Literal["v1.1", "v1.2"] = "v1.2", device="cpu", seed: int = 0) -> Zero123Plus:
        """The real architecture (SD2 UNet, SD VAE, OpenCLIP-H text, CLIP ViT-H/14) with random
        weights: same cost as the real model, for benchmarks."""
        return cls.build(FULL_UNET, SD_VAE, FULL_TEXT, FULL_VISION, SCHEDULER, version, 320, seed, device)

    @classmethod
    def from_pretrained(
        cls,
        model: str = "sudo-ai/zero123plus-v1.1",
        version: Literal["v1.1", "v1.2"] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Zero123Plus:
        """Load Zero123++ weights from a local diffusers folder or a hub id."""
        _require_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        folder = _resolve_folder(model)
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{folder}: no model_index.json; expected a Zero123++ diffusers folder")
        index = json.loads(index_path.read_text())
        if index.get("ramping_coefficients") is None:
            raise ValueError(f"{index_path}: no ramping_coefficients; is this a Zero123++ model?")
        if version is None:
            version = "v1.2" if "1.2" in str(model) else "v1.1"
        kwargs = dict(torch_dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kwargs)
        text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kwargs)
        vision = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="vision_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        ids = tokenizer([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        scheduler_path = folder / "scheduler" / "scheduler_config.json"
        scheduler_config = json.loads(scheduler_path.read_text()) if scheduler_path.is_file() else dict(SCHEDULER)
        vae_prep = ImagePrep.from_json(
            folder / "feature_extractor_vae" / "preprocessor_config.json", ImagePrep(320, (0.5,) * 3, (0.5,) * 3)
        )
        clip_default = ImagePrep(int(vision.config.image_size), CLIP_MEAN, CLIP_STD)
        clip_prep = ImagePrep.from_json(folder / "feature_extractor_clip" / "preprocessor_config.json", clip_default)
        ramping = torch.tensor(index["ramping_coefficients"])
        # Zero123++ outputs views at the size its VAE preprocessor feeds the condition (320).
        out = cls(unet, vae, text, vision, scheduler_config, ramping, ids, version, vae_prep, clip_prep, vae_prep.size)
        return out.to(device)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Zero123Plus:
        for module in (self.unet, self.vae, self.text_encoder, self.vision_encoder):
            module.to(device) if dtype is None else module.to(device=device, dtype=dtype)
        self._empty_prompt = None
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        """(height, width) of the grid latent (3 x 2 views)."""
        return 3 * self.view_size // self.vae_factor, 2 * self.view_size // self.vae_factor

    def anchor_cache_bytes(self, steps: int, guidance: bool = True) -> int:
        """Memory of an fp16 anchor cache for one frame (mode 'cache')."""
        return anchor_cache_bytes(self.unet, *self.latent_size, steps, guidance)

    # -- conditioning -------------------------------------------------------------------
    def empty_prompt(self) -> torch.Tensor:
        if self._empty_prompt is None:
            ids = self.prompt_ids.to(self.device)
            self._empty_prompt = self.text_encoder(ids).last_hidden_state.to(self.dtype)
        return self._empty_prompt

    @torch.no_grad()
    def encode_conditions(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(F, 3, H, W) RGB in [0, 1] (already on grey) -> per-frame conditioning tensors:
        ``latent`` (F, 4, h, w), ``text`` (F, 77, D) conditional embedding; plus the shared
        unconditional ``neg_latent`` (1, 4, h, w) and ``neg_text`` (1, 77, D)."""
        check_shape("images", images, (None, 3, None, None))
        device, dtype = self.device, self.dtype
        images = images.to(device=device, dtype=torch.float32)
        vae_in = self.vae_prep(images).to(dtype)
        if vae_in.shape[-1] != self.view_size:
            vae_in = F.interpolate(
                vae_in.float(), size=(self.view_size, self.view_size), mode="bilinear", align_corners=False
            ).to(dtype)
        latent = self._encode(vae_in)
        neg_latent = self._encode(torch.zeros_like(vae_in[:1]))
        clip = self.vision_encoder(self.clip_prep(images).to(dtype)).image_embeds  # (F, D)
        empty = self.empty_prompt()
        ramp = self.ramping.to(device=device, dtype=dtype)
        text = empty + clip[:, None, :].to(dtype) * ramp[None, :, None]
        return dict(latent=latent, text=text, neg_latent=neg_latent, neg_text=empty)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``latent_dist.sample()`` as Zero123++ does, but with the same seeded draw for every
        frame (so identical frames get identical conditions)."""
        dist = self.vae.encode(pixels).latent_dist
        shape = (1,) + tuple(dist.mean.shape[1:])
        noise = torch.cat(
            [torch.randn(shape, generator=torch.Generator().manual_seed(0)) for _ in range(pixels.shape[0])]
        )
        return dist.mean + dist.std * noise.to(dist.mean)

    # -- sampling -------------------------------------------------------------------------
    def _denoise(
        self,
        cond: dict[str, torch.Tensor],
        frames: list[int],
        config: MultiViewConfig,
        spec: AnchorSpec | None,
        progress=None,
        trace: dict | None = None,
    ) -> torch.Tensor:
        """Sample the grid latents of ``frames`` (indices into ``cond``) in one batch."""
        from diffusers import EulerAncestralDiscreteScheduler

        device, dtype = self.device, self.dtype
        guidance = config.guidance_scale > 1.0
        layout = BatchLayout.for_frames(frames, guidance)
        n = len(frames)
        scheduler = EulerAncestralDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(config.steps, device=device)
        generators = [torch.Generator(device="cpu").manual_seed(int(config.seed)) for _ in frames]
        h, w = self.latent_size
        latents = torch.cat([torch.randn((1, 4, h, w), generator=g) for g in generators]).to(device)
        latents = latents * scheduler.init_noise_sigma
        idx = torch.tensor(frames, device=device)
        cond_lat = cond["latent"][idx]
        cond_shape = tuple(cond_lat.shape[1:])
        text = cond["text"][idx]
        if guidance:
            cond_lat = torch.cat([cond["neg_latent"].expand(n, -1, -1, -1), cond_lat])
            text = torch.cat([cond["neg_text"].expand(n, -1, -1), text])
        for step, t in enumerate(scheduler.timesteps):
            model_in = torch.cat([latents] * 2) if guidance else latents
            model_in = scheduler.scale_model_input(model_in, t).to(dtype)
            # Condition latent noised to this step (Euler: x + sigma * eps, scaled by 1 / sqrt(sigma^2 + 1)).
            draws = [torch.randn((2 if guidance else 1,) + cond_shape, generator=g) for g in generators]
            noise = torch.cat([d[0:1] for d in draws] + ([d[1:2] for d in draws] if guidance else [])).to(device)
            sigma = scheduler.sigmas[step].to(device)
            noisy_cond = ((cond_lat.float() + sigma * noise) / (sigma**2 + 1) ** 0.5).to(dtype)
            context = AttentionContext(phase="write", layout=layout, step=step, anchor=spec, trace=trace)
            self.unet(noisy_cond, t, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": context})
            context.phase, context.calls = "read", {}
            out = self.unet(model_in, t, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": context}).sample
            out = out.float()
            if guidance:
                uncond, cond_out = out.chunk(2)
                out = uncond + config.guidance_scale * (cond_out - uncond)
            latents = scheduler.step(out, t, latents, generator=generators).prev_sample
            if progress is not None:
                progress.update(1)
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) grid latents -> (B, 3, 3v, 2v) images in [0, 1]."""
        out = []
        for lat in latents.split(1):
            lat = (lat / LATENT_SCALE + LATENT_SHIFT) / self.vae.config.scaling_factor
            image = self.vae.decode(lat.to(self.dtype)).sample.float() * IMAGE_SCALE
            out.append(((image + 1) / 2).clamp(0, 1))
        return torch.cat(out)

    def plan(
        self, num_frames: int, frames: Sequence[int], config: MultiViewConfig
    ) -> list[tuple[list[int], list[int]]]:
        """Batches as (frames denoised together, frames kept) for generating ``frames``."""
        frames = sorted(set(int(f) for f in frames))
        if any(f < 0 or f >= num_frames for f in frames):
            raise ValueError(f"frames {frames} outside 0..{num_frames - 1}")
        size = int(config.frames_per_batch)
        if size < 1:
            raise ValueError(f"frames_per_batch must be >= 1, got {size}")
        anchored = config.anchor_weight > 0 and num_frames > 1
        if not anchored:
            return [(frames[i : i + size], frames[i : i + size]) for i in range(0, len(frames), size)]
        later = [f for f in frames if f != 0]
        if config.anchor_mode == "cache":
            plan = [([0], [0] if 0 in frames else [])] if later or 0 in frames else []
            return plan + [(later[i : i + size], later[i : i + size]) for i in range(0, len(later), size)]
        if size < 2:
            raise ValueError("anchor_mode 'batch' needs frames_per_batch >= 2 (the anchor frame plus one more)")
        plan, first = [], True
        for i in range(0, len(later), size - 1):
            chunk = later[i : i + size - 1]
            keep = chunk + ([0] if first and 0 in frames else [])
            plan.append(([0] + chunk, sorted(keep)))
            first = False
        if not later and 0 in frames:
            plan.append(([0], [0]))
        return plan

    @torch.no_grad()
    def iter_generate(
        self, images: torch.Tensor, config: MultiViewConfig, frames: Sequence[int] | None = None, progress: bool = True
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (frame, views (6, 3, v, v) in [0, 1]) for ``frames`` (default all) of a video
        whose condition images are ``images`` (F, 3, H, W) on grey; frame 0 anchors the rest."""
        check_shape("images", images, (None, 3, None, None))
        num = images.shape[0]
        frames = list(range(num)) if frames is None else list(frames)
        batches = self.plan(num, frames, config)
        cond = self.encode_conditions(images)
        cache = None
        if config.anchor_weight > 0 and num > 1 and config.anchor_mode == "cache":
            need = self.anchor_cache_bytes(config.steps, config.guidance_scale > 1)
            if need > config.max_cache_gb * 1e9:
                raise MemoryError(
                    f"anchor cache needs {need / 1e9:.1f} GB > max_cache_gb {config.max_cache_gb}; "
                    "use anchor_mode 'batch' (no cache) or raise max_cache_gb"
                )
            cache = AnchorCache(dtype=torch.float16)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(batches) * config.steps, desc="Zero123++", unit="step")
        try:
            for rows, keep in batches:
                spec = None
                if config.anchor_weight > 0 and num > 1:
                    if config.anchor_mode == "cache":
                        recording = rows == [0]
                        spec = AnchorSpec(config.anchor_weight, 0, "cache", cache, record=recording)
                    else:
                        spec = AnchorSpec(config.anchor_weight, 0, "batch")
                latents = self._denoise(cond, rows, config, spec, bar)
                for k, frame in enumerate(rows):
                    if frame in keep:
                        yield frame, split_grid(self.decode(latents[k : k + 1]))[0].cpu()
        finally:
            if bar is not None:
                bar.close()
            if cache is not None:
                cache.clear()

    def generate(
        self, images: torch.Tensor, config: MultiViewConfig, frames: Sequence[int] | None = None, progress: bool = False
    ) -> torch.Tensor:
        """(len(frames), 6, 3, v, v) views; see :meth:`iter_generate`."""
        out = dict(self.iter_generate(images, config, frames, progress))
        order = sorted(out)
        return torch.stack([out[f] for f in order])


# -----------------------------------------------------------------------------------------
# On-disk cache of generated views (rerunning the 4D stage does not regenerate them).
# -----------------------------------------------------------------------------------------
def multiview_key(config: MultiViewConfig, images: torch.Tensor) -> dict:
    """What determines the generated views: sampling settings + a hash of the condition images."""
    data = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes()
    settings = asdict(config)
    for unrelated in ("frames_per_batch", "max_cache_gb", "anchor_mode"):
        settings.pop(unrelated)  # change speed / memory, not the result
    return {"settings": settings, "frames": int(images.shape[0]), "images_sha1": hashlib.sha1(data).hexdigest()}


def _frame_path(folder: Path, frame: int) -> Path:
    return folder / f"frame_{frame:04d}.png"


def _save_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    from gen4d.io import atomic_path

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def load_cached_multiview(folder: str | Path, key: dict | None = None) -> tuple[dict[int, torch.Tensor], dict | None]:
    """Frames already generated in ``folder`` (frame -> (6, 3, v, v)) if its key matches ``key``."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return {}, None
    meta = json.loads(meta_path.read_text())
    if key is not None and meta.get("key") != key:
        return {}, meta
    frames = {}
    for frame in range(int(meta["key"]["frames"])):
        path = _frame_path(folder, frame)
        if path.is_file():
            frames[frame] = split_grid(_load_png(path))
    return frames, meta


def generate_multiview_cached(
    load_model: Callable[[], Zero123Plus],
    images: torch.Tensor,
    config: MultiViewConfig,
    folder: str | Path,
    progress: bool = True,
) -> torch.Tensor:
    """(F, 6, 3, v, v) views for condition images (F, 3, H, W), reusing the frames already in
    ``folder`` (``frame_XXXX.png`` 3x2 grids + ``meta.json``) when the settings and images match;
    the model is loaded (``load_model()``) only when some frame is missing. Each frame is
    written as soon as it is decoded, so an interrupted run resumes where it stopped."""
    from gen4d.io import write_json

    folder = Path(folder)
    key = multiview_key(config, images)
    done, meta = load_cached_multiview(folder, key)
    if meta is not None and meta.get("key") != key:
        for stale in folder.glob("frame_*.png"):
            stale.unlink()
    missing = [f for f in range(images.shape[0]) if f not in done]
    if missing:
        write_json(folder / "meta.json", {"key": key, "layout": "3x2 grid, row-major views, RGB"})
        model = load_model()
        for frame, views in model.iter_generate(images, config, missing, progress):
            _save_png(_frame_path(folder, frame), join_grid(views))
            done[frame] = split_grid(_load_png(_frame_path(folder, frame)))  # exactly what a rerun reads
    return torch.stack([done[f] for f in range(images.shape[0])])
