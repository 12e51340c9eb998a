"""Motion magnitude on latents, the motion-magnitude embedding, and the L_mr loss (Diffusion4D 3.3).

* :func:`latent_motion_magnitude` ``m(z) = 1/T ||z - zbar||^2`` of a video latent against the latent
  of its static orbit. gen4d normalises the squared norm by the number of elements of a frame
  (see :mod:`gen4d.metrics.motion`, which defines the image-space m(V) the same way), so m is a mean
  squared difference; the paper's literal sum differs by the constant factor C*h*w (and L_mr by its
  square, which the weight omega absorbs).
* :func:`motion_reconstruction_loss` ``L_mr = (m(z0) - m(zhat0))^2`` averaged over the batch.
* :class:`MotionEmbedding`: sinusoidal embedding of ``m * scale`` through a 2-layer MLP whose last
  layer is zero-initialised, so adding it to a pretrained UNet's timestep embedding leaves the model
  unchanged at the start of fine-tuning.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gen4d._checks import check_shape

__all__ = [
    "sinusoidal_embedding",
    "latent_motion_magnitude",
    "motion_reconstruction_loss",
    "MotionEmbedding",
]


def sinusoidal_embedding(values: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) real values -> (B, dim) [cos | sin] features at geometric frequencies 1 .. 1/max_period
    (the transformer / DDPM timestep embedding, cos first as in diffusers' flip_sin_to_cos=True)."""
    check_shape("values", values, ("B",))
    if dim < 2 or dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim must be even and >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def latent_motion_magnitude(latents: torch.Tensor, static_latents: torch.Tensor) -> torch.Tensor:
    """m(z) per video: mean over frames of the mean squared difference per frame element.

    latents, static_latents: (B, C, T, h, w) (diffusers' video layout; any layout with the batch
    first gives the same value, since m is a mean over all non-batch elements). Returns (B,).
    Differentiable in both arguments.
    """
    if latents.shape != static_latents.shape:
        raise ValueError(
            f"latent_motion_magnitude: latents {tuple(latents.shape)} and static_latents "
            f"{tuple(static_latents.shape)} differ; expected the latent of the static orbit with the same shape"
        )
    if latents.ndim < 2:
        raise ValueError(f"latent_motion_magnitude: expected (B, ...) latents, got {tuple(latents.shape)}")
    return (latents - static_latents).pow(2).flatten(1).mean(dim=1)


def motion_reconstruction_loss(
    clean_latents: torch.Tensor, predicted_latents: torch.Tensor, static_latents: torch.Tensor
) -> torch.Tensor:
    """L_mr = mean over the batch of (m(z0) - m(zhat0))^2, m relative to the static-orbit latent.

    clean_latents z0, predicted_latents zhat0 (recovered from the network's output), static_latents
    zbar0: (B, C, T, h, w). The target m(z0) is a constant (no gradient flows into z0 or zbar0
    through it)."""
    target = latent_motion_magnitude(clean_latents, static_latents).detach()
    predicted = latent_motion_magnitude(predicted_latents, static_latents.detach())
    return (target - predicted).pow(2).mean()


class MotionEmbedding(nn.Module):
    """m (B,) -> (B, embed_dim): sinusoid(m * scale) -> Linear -> SiLU -> Linear (zero-initialised)."""

    def __init__(self, embed_dim: int, freq_dim: int = 256, scale: float = 1000.0, hidden_dim: int | None = None):
        super().__init__()
        self.freq_dim = int(freq_dim)
        self.scale = float(scale)
        hidden = int(hidden_dim or embed_dim)
        self.linear_1 = nn.Linear(self.freq_dim, hidden)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        check_shape("motion", motion, ("B",))
        features = sinusoidal_embedding(motion * self.scale, self.freq_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(features)))
