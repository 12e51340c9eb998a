"""Zero123++'s conditioning inputs: image preprocessing, the seeded condition latent, the ramped
global embedding, and the condition latent noised to a sampling step (reference attention itself is
:mod:`gen4d.diffusion.anchor`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["CLIP_MEAN", "CLIP_STD", "ImagePrep", "encode_latent", "ramped_embedding", "noised_condition"]


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


def encode_latent(vae, pixels: torch.Tensor) -> torch.Tensor:
    """``latent_dist.sample()`` as Zero123++ does, but with the same seeded draw for every
    frame (so identical frames get identical conditions)."""
    dist = vae.encode(pixels).latent_dist
    shape = (1,) + tuple(dist.mean.shape[1:])
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(0)) for _ in range(pixels.shape[0])])
    return dist.mean + dist.std * noise.to(dist.mean)


def ramped_embedding(empty: torch.Tensor, clip: torch.Tensor, ramping: torch.Tensor) -> torch.Tensor:
    """(F, 77, D) global condition: the empty prompt's embedding (1, 77, D) plus the CLIP image
    embedding (F, D) times the 77 ramping coefficients (both in ``empty``'s dtype)."""
    return empty + clip[:, None, :].to(empty.dtype) * ramping[None, :, None]


def noised_condition(
    latent: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The condition latent noised to a step of noise level ``sigma`` (Euler: x + sigma * eps,
    scaled by 1 / sqrt(sigma^2 + 1)), in the model's ``dtype``."""
    return ((latent.float() + sigma * noise) / (sigma**2 + 1) ** 0.5).to(dtype)
