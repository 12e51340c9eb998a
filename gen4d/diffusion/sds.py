"""Score distillation sampling (SDS): the maths shared by every SDS guidance in gen4d.

SDS (Poole et al. 2022) turns a frozen denoiser into a gradient on an image (or its latent) x:

    grad_x = w(t) * (eps_hat(x_t, t) - eps),   x_t = sqrt(alphabar_t) x + sqrt(1 - alphabar_t) eps

with no backward pass through the denoiser. The "gradient trick" makes that an ordinary loss:
``loss = 0.5 * || x - stopgrad(x - grad) ||^2`` has exactly ``grad`` as its derivative in x.
STAG4D (following DreamGaussian) uses w(t) = 1 - alphabar_t, CFG 5, and a timestep range
annealed from [0.5, 0.95] to [0.02, 0.5] of the training range over the first 3000 steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gen4d.config import ConfigError, check_non_negative, check_range
from gen4d.diffusion.schedule import NoiseSchedule, add_noise, predict_x0_and_eps, sds_weight

__all__ = [
    "TimestepAnneal",
    "timestep_range",
    "sample_timesteps",
    "sds_weight",  # re-exported from gen4d.diffusion.schedule: w(t) = 1 - alphabar_t
    "classifier_free_guidance",
    "sds_gradient",
    "gradient_loss",
    "SDSOutput",
    "sds_step",
]


@dataclass(frozen=True)
class TimestepAnneal:
    """Linear annealing of the SDS timestep range, in fractions of the training timesteps."""

    min_start: float = 0.5
    """Lower bound of t / T at step 0."""
    min_end: float = 0.02
    """Lower bound of t / T once annealing is over."""
    max_start: float = 0.95
    """Upper bound of t / T at step 0."""
    max_end: float = 0.5
    """Upper bound of t / T once annealing is over."""
    steps: int = 3000
    """Optimisation steps over which the bounds move linearly (0: use the end values at once)."""

    def __post_init__(self) -> None:
        for name in ("min_start", "min_end", "max_start", "max_end"):
            check_range(self, name, 0.0, 1.0)
        check_non_negative(self, "steps")
        for low, high in (("min_start", "max_start"), ("min_end", "max_end")):
            if getattr(self, low) > getattr(self, high):
                raise ConfigError(
                    low, f"expected at most {high} = {getattr(self, high)}, got {getattr(self, low)}", "TimestepAnneal"
                )


def timestep_range(anneal: TimestepAnneal, step: int) -> tuple[float, float]:
    """(low, high) fractions of the training timesteps at optimisation ``step``."""
    ratio = 1.0 if anneal.steps <= 0 else min(max(step / anneal.steps, 0.0), 1.0)
    low = anneal.min_start + (anneal.min_end - anneal.min_start) * ratio
    high = anneal.max_start + (anneal.max_end - anneal.max_start) * ratio
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(
            f"timestep range [{low}, {high}] at step {step}: expected 0 <= low <= high <= 1; check TimestepAnneal"
        )
    return low, high


def sample_timesteps(
    count: int,
    low: float,
    high: float,
    num_train_timesteps: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(count,) long timesteps uniform in [int(T low), int(T high)] (both ends included), on the CPU."""
    lo, hi = int(num_train_timesteps * low), int(num_train_timesteps * high)
    hi = min(max(hi, lo), num_train_timesteps - 1)
    lo = min(lo, hi)
    return torch.randint(lo, hi + 1, (count,), generator=generator)


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def sds_gradient(eps_hat: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight * (eps_hat - eps)`` with weight (B,) or (B, 1, ...) broadcast; non-finite values zeroed."""
    weight = weight.to(eps_hat).reshape((-1,) + (1,) * (eps_hat.ndim - 1))
    return torch.nan_to_num(weight * (eps_hat - eps), nan=0.0, posinf=0.0, neginf=0.0)


def gradient_loss(x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The gradient trick: a scalar whose derivative in ``x`` is exactly ``gradient``
    (summed over the batch, as STAG4D / DreamGaussian do)."""
    if gradient.shape != x.shape:
        raise ValueError(f"gradient_loss: gradient {tuple(gradient.shape)} does not match x {tuple(x.shape)}")
    target = (x - gradient).detach()
    return 0.5 * ((x.float() - target.float()) ** 2).sum()


@dataclass
class SDSOutput:
    """One SDS evaluation."""

    loss: torch.Tensor
    """Scalar whose gradient w.r.t. the latents is ``gradient``."""
    gradient: torch.Tensor
    """(B, ...) w(t) (eps_hat - eps)."""
    timesteps: torch.Tensor
    """(B,) long timesteps used."""
    noisy: torch.Tensor
    """(B, ...) the noised latents x_t given to the denoiser."""
    x0_pred: torch.Tensor
    """(B, ...) the denoiser's clean estimate (for logging / previews)."""


def sds_step(
    latents: torch.Tensor,
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: NoiseSchedule,
    timesteps: torch.Tensor,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SDSOutput:
    """SDS on ``latents`` (B, ...) with a frozen ``denoise(x_t, t) -> model output`` (already
    classifier-free guided; epsilon, v or sample prediction as ``schedule.prediction_type`` says).

    ``timesteps`` (B,) long. ``noise`` defaults to a standard normal draw (from ``generator``).
    The denoiser runs without gradients; only ``loss`` carries the graph back to ``latents``.
    """
    timesteps = torch.as_tensor(timesteps, dtype=torch.long).reshape(-1)
    if timesteps.numel() == 1 and latents.shape[0] > 1:
        timesteps = timesteps.expand(latents.shape[0]).clone()
    if timesteps.shape[0] != latents.shape[0]:
        raise ValueError(
            f"sds_step: {timesteps.shape[0]} timesteps for {latents.shape[0]} latents; expected one per latent"
        )
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents)
    elif noise.shape != latents.shape:
        raise ValueError(f"sds_step: noise {tuple(noise.shape)} does not match latents {tuple(latents.shape)}")
    with torch.no_grad():
        clean = latents.detach()
        noisy = add_noise(schedule, clean, noise, timesteps)
        output = denoise(noisy, timesteps.to(latents.device))
        if output.shape != latents.shape:
            raise ValueError(f"sds_step: the denoiser returned {tuple(output.shape)}; expected {tuple(latents.shape)}")
        x0_pred, eps_hat = predict_x0_and_eps(schedule, output.to(noisy), noisy, timesteps)
        gradient = sds_gradient(eps_hat, noise, sds_weight(schedule, timesteps, noise))
    return SDSOutput(gradient_loss(latents, gradient), gradient, timesteps, noisy, x0_pred)
