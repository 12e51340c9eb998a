"""The Zero123++ sampler: its config and :class:`Zero123Plus` (components, loading, the denoising
loop with reference attention and the temporal anchor, decoding, batching of frames)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from gen4d._checks import check_shape
from gen4d.config import check_non_negative, check_positive, check_range
from gen4d.diffusion.anchor import (
    AnchorCache,
    AnchorSpec,
    AttentionContext,
    BatchLayout,
    anchor_cache_bytes,
    install_processors,
)
from gen4d.diffusion.zero123pp.conditioning import (
    CLIP_MEAN,
    CLIP_STD,
    ImagePrep,
    encode_latent,
    noised_condition,
    ramped_embedding,
)
from gen4d.diffusion.zero123pp.loading import (
    FULL_TEXT,
    FULL_UNET,
    FULL_VISION,
    SCHEDULER,
    SD_VAE,
    TINY_TEXT,
    TINY_UNET,
    TINY_VAE,
    TINY_VISION,
    require_diffusers,
    resolve_folder,
)
from gen4d.diffusion.zero123pp.views import split_grid

__all__ = ["MultiViewConfig", "Zero123Plus"]

LATENT_SHIFT, LATENT_SCALE, IMAGE_SCALE = 0.22, 0.75, 0.8 / 0.5


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
        require_diffusers()
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
        require_diffusers()
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
        require_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

        folder = resolve_folder(model)
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
        latent = encode_latent(self.vae, vae_in)
        neg_latent = encode_latent(self.vae, torch.zeros_like(vae_in[:1]))
        clip = self.vision_encoder(self.clip_prep(images).to(dtype)).image_embeds  # (F, D)
        empty = self.empty_prompt()
        text = ramped_embedding(empty, clip, self.ramping.to(device=device, dtype=dtype))
        return dict(latent=latent, text=text, neg_latent=neg_latent, neg_text=empty)

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
            # The condition latent noised to this step, from each frame's own generator.
            draws = [torch.randn((2 if guidance else 1,) + cond_shape, generator=g) for g in generators]
            noise = torch.cat([d[0:1] for d in draws] + ([d[1:2] for d in draws] if guidance else [])).to(device)
            noisy_cond = noised_condition(cond_lat, noise, scheduler.sigmas[step].to(device), dtype)
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
