"""Latent codecs and CLIP encoders of the video model.

* :class:`PixelCodec` - RGBA pixels as 4-channel 'latents' (small models trained from scratch);
* :class:`VAECodec` - a diffusers ``AutoencoderKL`` frame by frame (I2VGen-XL / ModelScope latents);
* :class:`TextEncoder` / :class:`ImageEncoder` - CLIP text tokens and image embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gen4d._checks import check_shape

__all__ = ["PixelCodec", "VAECodec", "TextEncoder", "ImageEncoder", "composite_white"]

# --------------------------------------------------------------------------------------------- codecs


def _check_rgba_video(name: str, video: torch.Tensor) -> None:
    check_shape(name, video, ("B", "T", "H", "W", None))
    if video.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected 3 (RGB) or 4 (RGBA) channels last, got {video.shape[-1]}")


def composite_white(video: torch.Tensor) -> torch.Tensor:
    """(..., 3|4) colour in [0, 1] -> (..., 3) over a white background."""
    if video.shape[-1] == 3:
        return video
    rgb, alpha = video[..., :3], video[..., 3:4]
    return rgb * alpha + (1 - alpha)


class PixelCodec:
    """Pixel space as 'latents': RGB composited on white and alpha, mapped to [-1, 1] (4 channels).
    For small models trained from scratch; needs RGBA inputs, and decodes alpha too."""

    channels = 4
    downsample = 1
    kind = "pixel"

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, 4) RGBA in [0, 1] -> (B, 4, T, H, W)."""
        _check_rgba_video("video", video)
        if video.shape[-1] != 4:
            raise ValueError(
                "the pixel-space model needs RGBA input (an alpha channel / transparent background); "
                "got RGB. Cut the object out first (e.g. with a matting tool)."
            )
        rgb = composite_white(video)
        x = torch.cat([rgb, video[..., 3:4]], dim=-1) * 2 - 1
        return x.permute(0, 4, 1, 2, 3).contiguous()

    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 4, T, H, W) -> colour (B, T, H, W, 3) (not premultiplied) and alpha (B, T, H, W, 1)."""
        check_shape("latents", latents, ("B", 4, "T", "H", "W"))
        y = ((latents.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)
        white, alpha = y[..., :3], y[..., 3:4]
        # white = rgb * a + (1 - a)  =>  rgb = (white - 1 + a) / a where a is not ~0
        rgb = torch.where(alpha > 1e-3, (white - 1 + alpha) / alpha.clamp_min(1e-3), white).clamp(0, 1)
        return rgb, alpha


class VAECodec:
    """A diffusers ``AutoencoderKL`` applied frame by frame on RGB composited on white. Decoding gives
    no alpha (None). Encoding uses the posterior mean (deterministic, so latents can be cached)."""

    channels = 4
    kind = "vae"

    def __init__(self, vae: nn.Module, chunk: int = 8):
        self.vae = vae
        self.chunk = int(chunk)
        self.scaling = float(vae.config.scaling_factor)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        if int(vae.config.latent_channels) != 4:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels; I2VGen-XL / ModelScope need 4")

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        _check_rgba_video("video", video)
        batch, frames = video.shape[:2]
        param = next(self.vae.parameters())
        x = (composite_white(video) * 2 - 1).flatten(0, 1).permute(0, 3, 1, 2).to(param)
        parts = [self.vae.encode(x[i : i + self.chunk]).latent_dist.mean for i in range(0, x.shape[0], self.chunk)]
        z = torch.cat(parts) * self.scaling
        return z.reshape(batch, frames, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> tuple[torch.Tensor, None]:
        check_shape("latents", latents, ("B", 4, "T", "h", "w"))
        batch, _, frames = latents.shape[:3]
        param = next(self.vae.parameters())
        z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1).to(param) / self.scaling
        parts = [self.vae.decode(z[i : i + self.chunk]).sample for i in range(0, z.shape[0], self.chunk)]
        x = ((torch.cat(parts).float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
        return x.reshape(batch, frames, *x.shape[1:]), None


# ------------------------------------------------------------------------------------------- encoders


class TextEncoder:
    """CLIP text encoder + tokenizer: prompts -> (B, 77, D) hidden states.

    ``skip_layers`` follows diffusers' ``clip_skip``: 0 gives the last layer's states (ModelScope's
    ``TextToVideoSDPipeline``); 1 gives the penultimate layer's states through the model's final
    layer norm, which is what ``I2VGenXLPipeline`` feeds I2VGen-XL (its ``clip_skip`` defaults to 1)."""

    def __init__(self, model: nn.Module, tokenizer: Any, skip_layers: int = 0):
        if skip_layers < 0:
            raise ValueError(f"TextEncoder: skip_layers must be >= 0, got {skip_layers}")
        self.model = model
        self.tokenizer = tokenizer
        self.skip_layers = int(skip_layers)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        param = next(self.model.parameters())
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tokens.input_ids.to(param.device)
        if not self.skip_layers:
            return self.model(ids)[0]
        hidden = self.model(ids, output_hidden_states=True).hidden_states[-(self.skip_layers + 1)]
        # transformers < 5 nests the layers under .text_model; 5 keeps them on the model itself.
        return getattr(self.model, "text_model", self.model).final_layer_norm(hidden)


class ImageEncoder:
    """CLIP vision model with projection: (B, H, W, 3) images in [0, 1] -> (B, D) image embeddings.
    Preprocessing (resize, CLIP mean / std) is done here in torch, without the processor class."""

    def __init__(
        self,
        model: nn.Module,
        size: int = 224,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
    ):
        self.model = model
        self.size = int(size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_shape("images", images, ("B", "H", "W", 3))
        param = next(self.model.parameters())
        x = images.permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(
            x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0, 1)
        x = ((x - self.mean.to(x)) / self.std.to(x)).to(param)
        return self.model(pixel_values=x).image_embeds
