"""Noise-schedule maths shared by every diffusion model in gen4d (small, pure functions).

Conventions (DDPM, variance preserving): ``alphabar_t`` is the cumulative product of
``1 - beta``; ``x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) eps``; timesteps are integer
indices in [0, num_train_timesteps). A :class:`NoiseSchedule` is a model's whole schedule as read
from its diffusers ``scheduler_config.json``; the functions take it first. Numbers follow
diffusers' DDIMScheduler exactly (float32 betas, the same timestep spacings, the same DDIM update;
tests/test_vdm_schedule.py checks that). No diffusers import here.

Used by the STAG4D SDS code (``NoiseSchedule``, ``add_noise``, ``predict_x0_and_eps``) and the
Diffusion4D video model (training targets, L_mr's x0 estimate, DDIM sampling).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "NoiseSchedule",
    "make_betas",
    "rescale_zero_terminal_snr",
    "inference_timesteps",
    "add_noise",
    "training_target",
    "predict_x0_and_eps",
    "ddim_step",
    "sds_weight",
]


def make_betas(
    beta_schedule: str = "scaled_linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> torch.Tensor:
    """(T,) float32 betas, computed as diffusers does ('linear', 'scaled_linear', 'squaredcos_cap_v2')."""
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        values = [
            min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), 0.999)
            for i in range(num_train_timesteps)
        ]
        return torch.tensor(values, dtype=torch.float32)
    raise ValueError(
        f"unknown beta schedule {beta_schedule!r}; expected 'linear', 'scaled_linear' or 'squaredcos_cap_v2'"
    )


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so the last timestep has zero SNR (Lin et al. 2023), as diffusers does."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete DDPM noise schedule and the settings that define its inference timesteps."""

    alphas_cumprod: torch.Tensor
    """(T,) float32 cumulative products alphabar_t."""
    prediction_type: str = "epsilon"
    """What the model predicts: 'epsilon', 'v_prediction' or 'sample'."""
    final_alpha_cumprod: float = 1.0
    """alphabar used before t = 0 (1.0 with set_alpha_to_one, else alphabar_0)."""
    timestep_spacing: str = "leading"
    """How inference timesteps are spread: 'leading', 'trailing' or 'linspace'."""
    steps_offset: int = 0
    """Offset added to 'leading' inference timesteps."""
    clip_sample: bool = False
    """Clamp predicted x0 to [-clip_sample_range, clip_sample_range] in ddim_step."""
    clip_sample_range: float = 1.0
    """Range of clip_sample."""

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any]) -> NoiseSchedule:
        """From a diffusers scheduler config dict (unknown keys are ignored: they belong to the
        scheduler class, not to the schedule)."""
        betas = make_betas(
            config.get("beta_schedule", "linear"),
            int(config.get("num_train_timesteps", 1000)),
            float(config.get("beta_start", 0.0001)),
            float(config.get("beta_end", 0.02)),
        )
        if config.get("trained_betas") is not None:
            betas = torch.tensor(config["trained_betas"], dtype=torch.float32)
        if config.get("rescale_betas_zero_snr", False):
            betas = rescale_zero_terminal_snr(betas)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        final = 1.0 if config.get("set_alpha_to_one", True) else float(alphas_cumprod[0])
        return cls(
            alphas_cumprod=alphas_cumprod,
            prediction_type=config.get("prediction_type", "epsilon"),
            final_alpha_cumprod=final,
            timestep_spacing=config.get("timestep_spacing", "leading"),
            steps_offset=int(config.get("steps_offset", 0)),
            clip_sample=bool(config.get("clip_sample", True)),
            clip_sample_range=float(config.get("clip_sample_range", 1.0)),
        )

    def alpha_bar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """alphabar at timesteps t ((B,) or one) shaped (B, 1, ..., 1) against ``like`` (B, ...)."""
        return _alphabar(self, torch.as_tensor(t).reshape(-1), like)

    @classmethod
    def stable_diffusion(cls, prediction_type: str = "epsilon") -> NoiseSchedule:
        """Stable Diffusion 1.x / 2.x (and Zero-1-to-3): scaled linear 0.00085 -> 0.012, 1000 steps."""
        return cls.from_diffusers_config(
            dict(
                beta_schedule="scaled_linear",
                beta_start=0.00085,
                beta_end=0.012,
                prediction_type=prediction_type,
                set_alpha_to_one=False,
                steps_offset=1,
                clip_sample=False,
            )
        )


def _check_timesteps(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {schedule.num_train_timesteps}), got {t.tolist()}")
    return t


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = values.to(device=like.device, dtype=like.dtype)
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def _alphabar(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = _check_timesteps(schedule, t)
    return _per_sample(schedule.alphas_cumprod[t.cpu()], like)


def inference_timesteps(schedule: NoiseSchedule, num_steps: int) -> torch.Tensor:
    """(num_steps,) long timesteps from noisy to clean, as diffusers' DDIMScheduler.set_timesteps."""
    total = schedule.num_train_timesteps
    if not 1 <= int(num_steps) <= total:
        raise ValueError(f"num_steps must be in [1, {total}], got {num_steps}")
    if schedule.timestep_spacing == "leading":
        ratio = total // num_steps
        steps = (np.arange(0, num_steps) * ratio).round()[::-1].copy().astype(np.int64) + schedule.steps_offset
    elif schedule.timestep_spacing == "trailing":
        ratio = total / num_steps
        steps = np.round(np.arange(total, 0, -ratio)).astype(np.int64) - 1
    elif schedule.timestep_spacing == "linspace":
        steps = np.linspace(0, total - 1, num_steps).round()[::-1].copy().astype(np.int64)
    else:
        raise ValueError(
            f"unknown timestep_spacing {schedule.timestep_spacing!r}; expected 'leading', 'trailing' or 'linspace'"
        )
    return torch.from_numpy(steps)


def add_noise(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise`` for per-sample timesteps t (B,)."""
    a = _alphabar(schedule, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def training_target(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the model is trained to output: noise, v = sqrt(a) noise - sqrt(1 - a) x0, or x0."""
    if schedule.prediction_type == "epsilon":
        return noise
    if schedule.prediction_type == "sample":
        return x0
    if schedule.prediction_type == "v_prediction":
        a = _alphabar(schedule, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0
    raise ValueError(f"unknown prediction_type {schedule.prediction_type!r}")


def predict_x0_and_eps(
    schedule: NoiseSchedule, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) implied by a model output at timesteps t (B,) for the schedule's prediction type."""
    a = _alphabar(schedule, t, x_t)
    if schedule.prediction_type == "epsilon":
        eps = model_output
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    elif schedule.prediction_type == "sample":
        x0 = model_output
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    elif schedule.prediction_type == "v_prediction":
        x0 = a.sqrt() * x_t - (1 - a).sqrt() * model_output
        eps = a.sqrt() * model_output + (1 - a).sqrt() * x_t
    else:
        raise ValueError(f"unknown prediction_type {schedule.prediction_type!r}")
    return x0, eps


def ddim_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update from t to t_prev (< 0: the final step, landing on ``final_alpha_cumprod``).
    Returns (x_prev, predicted x0). With eta > 0, pass ``noise`` shaped like ``x_t`` (the caller
    owns the randomness)."""
    t_tensor = torch.tensor([int(t)])
    x0, eps = predict_x0_and_eps(schedule, model_output, x_t, t_tensor)
    if schedule.clip_sample:
        x0 = x0.clamp(-schedule.clip_sample_range, schedule.clip_sample_range)
    a_t = schedule.alphas_cumprod[int(t)]
    a_prev = schedule.alphas_cumprod[int(t_prev)] if t_prev >= 0 else torch.tensor(schedule.final_alpha_cumprod)
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    x_prev = a_prev.sqrt().to(x_t) * x0 + (1 - a_prev - std**2).sqrt().to(x_t) * eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step: eta > 0 needs a noise tensor shaped like x_t")
        x_prev = x_prev + std.to(x_t) * noise
    return x_prev, x0


def sds_weight(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The usual score-distillation weight w(t) = 1 - alphabar_t, shaped against ``like``."""
    return 1 - schedule.alpha_bar(t, like)
