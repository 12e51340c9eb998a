"""The maths of one video-model training step: the loss L = L_ldm + omega * L_mr
(:func:`vdm_loss`), the batch's condition with dropout (:func:`batch_condition`) and the
per-sample randomness drawn from (seed, step, position) (see :mod:`gen4d.train.vdm` for the loop).
"""

from __future__ import annotations

import torch

from gen4d.diffusion.schedule import NoiseSchedule, add_noise, predict_x0_and_eps, training_target
from gen4d.diffusion.vdm.model import VideoCondition, image_condition_latents, predict
from gen4d.diffusion.vdm.motion import motion_reconstruction_loss
from gen4d.train.data import ClipSet, sample_seed

__all__ = ["vdm_loss", "batch_condition", "per_sample_randomness"]


def vdm_loss(
    unet: torch.nn.Module,
    variant: str,
    schedule: NoiseSchedule,
    latents: torch.Tensor,
    static_latents: torch.Tensor | None,
    condition: VideoCondition,
    timesteps: torch.Tensor,
    noise: torch.Tensor,
    mr_weight: float = 1.0,
    fps: int = 16,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = L_ldm + omega * L_mr for one batch.

    latents z0 and static_latents zbar0: (B, C, T, h, w); timesteps (B,); noise like latents.
    L_ldm = MSE(network output, its target (eps / v / x0)); L_mr = mean_b (m(z0) - m(zhat0))^2 with
    zhat0 recovered from the output at z_t (:func:`gen4d.diffusion.schedule.predict_x0_and_eps`).
    Returns the loss and its detached parts {'ldm', 'mr'}.
    """
    noisy = add_noise(schedule, latents, noise, timesteps)
    output = predict(unet, variant, noisy, timesteps, condition, fps).float()
    target = training_target(schedule, latents.float(), noise.float(), timesteps)
    ldm = torch.nn.functional.mse_loss(output, target)
    loss = ldm
    mr = torch.zeros((), device=ldm.device)
    if mr_weight > 0 and static_latents is not None:
        x0_hat, _ = predict_x0_and_eps(schedule, output, noisy.float(), timesteps)
        mr = motion_reconstruction_loss(latents.float(), x0_hat, static_latents.float())
        loss = loss + mr_weight * mr
    return loss, {"ldm": ldm.detach(), "mr": mr.detach()}


def batch_condition(
    clips: ClipSet,
    index: torch.Tensor,
    variant: str,
    task: str,
    drop: torch.Tensor,
    null_text: torch.Tensor | None,
    keep_latents: bool,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None, VideoCondition]:
    """(z0, zbar0 or None, condition) of the clips at ``index``; rows where ``drop`` get the
    unconditional input (null text, zero image embedding, zero latents unless keep_latents, no motion)."""
    static = clips.static_latents[index].to(device).float()
    target = clips.latents[index].to(device).float() if task == "4d" else static
    rows = drop.to(device).float()
    keep = 1 - rows
    latents = None
    if variant == "image":
        latents = image_condition_latents(target[:, :, 0], target.shape[2])
    elif variant == "static3d":
        latents = static
    if latents is not None and not keep_latents:
        latents = latents * keep.view(-1, 1, 1, 1, 1)
    embeds = None
    if clips.image_embeds is not None and variant != "text":
        embeds = clips.image_embeds[index].to(device).float() * keep.view(-1, 1)
    text = None
    if clips.text is not None:
        text = clips.text[index].to(device).float()
        null = torch.zeros_like(text[:1]) if null_text is None else null_text.to(device).float()
        text = torch.where(rows.view(-1, 1, 1) > 0, null.expand_as(text), text)
    elif variant == "text":
        raise ValueError("the text variant needs captions for the training clips (--data.captions)")
    motion = mask = None
    if task == "4d":
        motion = clips.motion[index].to(device).float()
        mask = keep
    condition = VideoCondition(text=text, image_embeds=embeds, latents=latents, motion=motion, motion_mask=mask)
    return target, (static if task == "4d" else None), condition


def per_sample_randomness(
    step: int,
    positions: range,
    seed: int,
    shape: tuple[int, ...],
    num_timesteps: int,
    uncond_prob: float,
    device: torch.device,
):
    """Timesteps (b,), noise (b, *shape) and dropout flags (b,) of the given global batch positions."""
    ts, noises, drops = [], [], []
    for position in positions:
        gen = torch.Generator(device=device).manual_seed(sample_seed(seed, step, position))
        ts.append(torch.randint(0, num_timesteps, (1,), generator=gen, device=device))
        drops.append(torch.rand(1, generator=gen, device=device) < uncond_prob)
        noises.append(torch.randn(shape, generator=gen, device=device))
    return torch.cat(ts), torch.stack(noises), torch.cat(drops)
