"""Zero-1-to-3 (XL) as an SDS guidance: the model wrapper and its score distillation step.

Zero-1-to-3 (Liu et al. 2023) is an SD1.x-style ``UNet2DConditionModel`` with 8 input channels:
the 4-channel noisy latent concatenated with the condition image's VAE latent (unscaled). Its cross-attention context is one token: the CLIP ViT-L/14 image
embedding (768) of the condition image concatenated with the relative pose
``[delta polar (rad), sin(delta azimuth), cos(delta azimuth), delta radius]`` and projected
772 -> 768 (``cc_projection``). The unconditional half of classifier-free guidance zeroes both
the projected token and the condition latent.

Condition images as DreamGaussian's / STAG4D's ``get_img_embeds`` prepares them (the default,
``condition_prep="pil"``): bilinear resize to 256 (torch, no antialias); for CLIP, conversion to
uint8 by truncation (torchvision's ``to_pil_image``: ``x.mul(255).byte()``), PIL bicubic resize to
224 and centre crop (``CLIPImageProcessor``), then /255 and the CLIP normalisation; the VAE
encodes the 256 px float image. ``condition_prep="torch"`` resizes the float image for CLIP with
torch's antialiased bicubic instead (differentiable, no uint8 step; the SDS gradient differs by
~1.7e-4 relative).

VAE posterior: the public code draws ``posterior.sample()`` for both the condition latent and the
render latents; gen4d uses the posterior *mean* by default (``posterior="mean"``, DreamGaussian's
``mode=True``), so that encoding is deterministic and a resumed run re-encodes exactly the
conditions of an uninterrupted one (the public code's condition latent depends on the global
RNG state at start-up). ``posterior="sample"`` draws as the public code does (render latents from
the SDS step's generator).

Weights: ``ashawkey/zero123-xl-diffusers`` (the diffusers conversion DreamGaussian / STAG4D use)
from a local folder or a hub id: ``unet/ vae/ image_encoder/ clip_camera_projection/
scheduler/``. Tested here with random weights only.

SDS (see :mod:`gen4d.diffusion.sds`): renders are resized to 256 x 256 (32 x 32 latents), encoded
with gradients through the VAE encoder, noised at t ~ U[t_min, t_max], denoised with CFG 5, and
the gradient w(t) (eps_hat - eps), w = 1 - alphabar_t, is applied with the gradient trick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gen4d._checks import check_shape
from gen4d.diffusion.schedule import NoiseSchedule
from gen4d.diffusion.sds import SDSOutput, classifier_free_guidance, sds_step
from gen4d.diffusion.zero123pp.conditioning import CLIP_MEAN, CLIP_STD, ImagePrep
from gen4d.diffusion.zero123pp.loading import SD_VAE, TINY_VAE, TINY_VISION, require_diffusers, resolve_folder

__all__ = ["Zero123Condition", "Zero123Guidance", "FULL_UNET", "FULL_VISION", "condition_clip_pixels"]

FULL_UNET = dict(
    sample_size=32,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
FULL_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu",
)  # fmt: skip
TINY_UNET = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    cross_attention_dim=16,
    attention_head_dim=2,
    norm_num_groups=4,
)
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", set_alpha_to_one=False, steps_offset=1, clip_sample=False,
)  # fmt: skip


@dataclass
class Zero123Condition:
    """Encoded condition images (one per SDS sample, or one shared)."""

    clip: torch.Tensor
    """(B, D) CLIP image embeddings."""
    latent: torch.Tensor
    """(B, 4, h, w) unscaled VAE latents."""

    def __len__(self) -> int:
        return int(self.clip.shape[0])

    def index(self, idx) -> Zero123Condition:
        return Zero123Condition(self.clip[idx], self.latent[idx])

    @staticmethod
    def cat(items: list[Zero123Condition]) -> Zero123Condition:
        return Zero123Condition(torch.cat([c.clip for c in items]), torch.cat([c.latent for c in items]))


class Zero123Guidance:
    """A frozen Zero-1-to-3 model that scores renders (SDS)."""

    def __init__(
        self,
        unet,
        vae,
        image_encoder,
        projection: torch.nn.Linear,
        scheduler_config: dict | None = None,
        image_size: int = 256,
        condition_prep: Literal["pil", "torch"] = "pil",
        posterior: Literal["mean", "sample"] = "mean",
    ):
        require_diffusers()
        if condition_prep not in ("pil", "torch"):
            raise ValueError(f"Zero123Guidance: condition_prep must be 'pil' or 'torch', got {condition_prep!r}")
        if posterior not in ("mean", "sample"):
            raise ValueError(f"Zero123Guidance: posterior must be 'mean' or 'sample', got {posterior!r}")
        if unet.config.in_channels != 2 * vae.config.latent_channels:
            raise ValueError(
                f"Zero-1-to-3 UNet must take {2 * vae.config.latent_channels} channels (noisy + condition latent), "
                f"got {unet.config.in_channels}"
            )
        if projection.in_features != image_encoder.config.projection_dim + 4:
            raise ValueError(
                f"cc_projection takes {projection.in_features} features; expected CLIP dim "
                f"{image_encoder.config.projection_dim} + 4 pose values"
            )
        self.unet, self.vae, self.image_encoder, self.projection = unet, vae, image_encoder, projection
        for module in (unet, vae, image_encoder, projection):
            module.eval().requires_grad_(False)
        self.schedule = NoiseSchedule.from_diffusers_config(scheduler_config or SCHEDULER)
        self.image_size = int(image_size)
        self.clip_prep = ImagePrep(int(image_encoder.config.image_size), CLIP_MEAN, CLIP_STD)
        self.condition_prep = condition_prep
        """'pil' (the public code's uint8 + PIL bicubic CLIP input, module docstring) or 'torch'."""
        self.posterior = posterior
        """'mean' or 'sample' of the VAE posterior (module docstring)."""

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        unet_config: dict,
        vae_config: dict,
        vision_config: dict,
        image_size: int = 256,
        seed: int = 0,
        device="cpu",
    ) -> Zero123Guidance:
        """Random-weight model of the given architecture (built on ``device``)."""
        require_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(seed)
        with torch.device(device):
            unet = UNet2DConditionModel(**unet_config)
            vae = AutoencoderKL(**vae_config)
            vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config))
            dim = vision_config["projection_dim"]
            projection = torch.nn.Linear(dim + 4, unet_config["cross_attention_dim"])
        return cls(unet, vae, vision, projection, SCHEDULER, image_size)

    @classmethod
    def tiny(cls, seed: int = 0, image_size: int = 32) -> Zero123Guidance:
        """2-level random model for CPU tests (renders resized to ``image_size``)."""
        return cls.build(TINY_UNET, TINY_VAE, TINY_VISION, image_size, seed)

    @classmethod
    def full_size(cls, device="cpu", seed: int = 0) -> Zero123Guidance:
        """Zero-1-to-3 XL's architecture with random weights (benchmarks)."""
        return cls.build(FULL_UNET, SD_VAE, FULL_VISION, 256, seed, device)

    @classmethod
    def from_pretrained(
        cls, model: str = "ashawkey/zero123-xl-diffusers", device="cpu", dtype: torch.dtype = torch.float32
    ) -> Zero123Guidance:
        """Load a diffusers-format Zero-1-to-3 (XL) from a local folder or a hub id."""
        require_diffusers()
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPVisionModelWithProjection

        folder = resolve_folder(model)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        vision = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", torch_dtype=dtype)
        projection = _load_projection(folder, vision.config.projection_dim, unet.config.cross_attention_dim)
        scheduler_path = folder / "scheduler" / "scheduler_config.json"
        scheduler = json.loads(scheduler_path.read_text()) if scheduler_path.is_file() else SCHEDULER
        out = cls(unet, vae, vision, projection.to(dtype), scheduler, 256)
        return out.to(device)

    def to(self, device=None, dtype=None) -> Zero123Guidance:
        for module in (self.unet, self.vae, self.image_encoder, self.projection):
            module.to(device) if dtype is None else module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # -- encoding -------------------------------------------------------------------------
    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] == self.image_size and images.shape[-2] == self.image_size:
            return images
        return F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def _latent(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        posterior = self.vae.encode(pixels).latent_dist
        if self.posterior == "mean":
            return posterior.mean
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32).to(posterior.mean)
        return posterior.mean + posterior.std * noise

    def condition_clip_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the CLIP encoder's normalised input (B, 3, S, S), as ``condition_prep`` says."""
        if self.condition_prep == "torch":
            return self.clip_prep(images)
        pixels = condition_clip_pixels(self._resize(images), self.clip_prep.size).to(images.device)
        mean = torch.tensor(self.clip_prep.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.clip_prep.std, device=images.device).view(1, 3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std

    @torch.no_grad()
    def encode_condition(self, images: torch.Tensor) -> Zero123Condition:
        """(B, 3, H, W) RGB in [0, 1] (on white, as Zero-1-to-3 was trained) -> condition."""
        check_shape("images", images, (None, 3, None, None))
        images = images.to(self.device, torch.float32)
        clip = self.image_encoder(self.condition_clip_input(images).to(self.dtype)).image_embeds
        pixels = (self._resize(images) * 2 - 1).to(self.dtype)
        latent = self._latent(pixels)
        return Zero123Condition(clip.float(), latent.float())

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) renders in [0, 1] -> (B, 4, h, w) scaled latents, differentiable."""
        check_shape("images", images, (None, 3, None, None))
        pixels = (self._resize(images) * 2 - 1).to(self.dtype)
        return self._latent(pixels, generator) * self.vae.config.scaling_factor

    # -- denoising ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Zero123Condition,
        pose: torch.Tensor,
        guidance_scale: float = 5.0,
    ) -> torch.Tensor:
        """Guided model output for noisy latents (B, 4, h, w), timesteps (B,), poses (B, 4)."""
        batch = noisy.shape[0]
        check_shape("pose", pose, (batch, 4))
        if len(condition) not in (1, batch):
            raise ValueError(f"predict: {len(condition)} conditions for {batch} latents; expected 1 or {batch}")
        clip = condition.clip.to(self.device).expand(batch, -1)
        cond_latent = condition.latent.to(self.device).expand(batch, -1, -1, -1)
        if cond_latent.shape[-2:] != noisy.shape[-2:]:
            raise ValueError(
                f"predict: condition latent {tuple(cond_latent.shape[-2:])} vs noisy latent {tuple(noisy.shape[-2:])}"
            )
        token = self.projection(torch.cat([clip, pose.to(clip)], dim=-1).to(self.dtype))[:, None, :]
        guidance = guidance_scale != 1.0
        if guidance:
            model_in = torch.cat(
                [torch.cat([noisy, cond_latent], 1), torch.cat([noisy, torch.zeros_like(cond_latent)], 1)]
            )
            tokens = torch.cat([token, torch.zeros_like(token)])
            t_in = torch.cat([timesteps, timesteps])
        else:
            model_in, tokens, t_in = torch.cat([noisy, cond_latent], 1), token, timesteps
        out = self.unet(model_in.to(self.dtype), t_in.to(self.device), encoder_hidden_states=tokens).sample.float()
        if guidance:
            cond_out, uncond_out = out.chunk(2)
            out = classifier_free_guidance(uncond_out, cond_out, guidance_scale)
        return out

    def sds(
        self,
        images: torch.Tensor,
        condition: Zero123Condition,
        pose: torch.Tensor,
        timesteps: torch.Tensor,
        guidance_scale: float = 5.0,
        generator: torch.Generator | None = None,
    ) -> SDSOutput:
        """SDS on renders (B, 3, H, W) in [0, 1] seen from ``pose`` (B, 4) relative to their
        condition images; the loss back-propagates into ``images``."""
        latents = self.encode_images(images, generator).float()
        denoise = lambda z, t: self.predict(z, t, condition, pose, guidance_scale)  # noqa: E731
        return sds_step(latents, denoise, self.schedule, timesteps, generator=generator)


def condition_clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """The public code's CLIP input before normalisation: (B, 3, H, W) floats in [0, 1] -> uint8
    (B, 3, size, size). Each image is converted to uint8 by truncation (torchvision's
    ``to_pil_image``: ``x.mul(255).byte()``), its shorter side resized to ``size`` with PIL bicubic
    and centre-cropped (``CLIPImageProcessor``)."""
    from PIL import Image

    check_shape("images", images, (None, 3, None, None))
    arrays = (images.detach().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for array in arrays:
        height, width = array.shape[:2]
        short, long = (height, width) if height <= width else (width, height)
        new_long = int(size * long / short)
        new_height, new_width = (size, new_long) if height <= width else (new_long, size)
        resized = np.asarray(Image.fromarray(array).resize((new_width, new_height), Image.BICUBIC))
        top, left = (new_height - size) // 2, (new_width - size) // 2
        out.append(resized[top : top + size, left : left + size])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _load_projection(folder: Path, clip_dim: int, out_dim: int) -> torch.nn.Linear:
    candidates = [folder / sub for sub in ("clip_camera_projection", "cc_projection")]
    sub = next((c for c in candidates if c.is_dir()), None)
    if sub is None:
        raise FileNotFoundError(
            f"{folder}: no clip_camera_projection/ (or cc_projection/) folder; is this Zero-1-to-3?"
        )
    state = None
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"):
        if (sub / name).is_file():
            from safetensors.torch import load_file

            state = load_file(str(sub / name))
            break
    if state is None:
        for name in ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin"):
            if (sub / name).is_file():
                state = torch.load(sub / name, map_location="cpu", weights_only=True)
                break
    if state is None:
        raise FileNotFoundError(f"{sub}: no diffusion_pytorch_model.safetensors / .bin weights")
    weight = next((v for k, v in state.items() if k.endswith("weight")), None)
    bias = next((v for k, v in state.items() if k.endswith("bias")), None)
    if weight is None or tuple(weight.shape) != (out_dim, clip_dim + 4):
        raise ValueError(f"{sub}: expected a {out_dim}x{clip_dim + 4} projection weight, got keys {sorted(state)}")
    layer = torch.nn.Linear(clip_dim + 4, out_dim, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        if bias is not None:
            layer.bias.copy_(bias.float())
    return layer
