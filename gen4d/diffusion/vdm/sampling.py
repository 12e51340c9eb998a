"""3D-aware classifier-free guidance (Diffusion4D eq. 3) and the DDIM sampling loop.

Eq. 3::

    epshat = eps(z, y, m, t) + w1 (eps(z, y, m, t) - eps(z, t)) + w2 (eps(z, y, m, t) - epsbar(z, y, t))

with eps the fine-tuned 4D-aware model, epsbar the frozen 3D-aware base model, w1 = 7.0, w2 = 0.5.

How the three predictions are batched (:func:`guided_output`):

* separate base model (the paper's setting: the fine-tuned model and the base differ in every
  weight): one forward of the fine-tuned UNet on the 2B batch [conditional with m ; unconditional],
  and one forward of the base UNet on the B conditional rows: two forwards per step;
* shared weights (``base_unet is None``: a model whose only difference from its base is the
  motion embedding, e.g. a base loaded without fine-tuned weights): epsbar(z, y, t) is the same UNet
  with the motion embedding switched off, so all three predictions run in ONE forward on a 3B batch
  [y with m ; null ; y without m] (rows without motion skip the embedding via the motion mask).

The combination is applied to the raw network outputs. For eps-, v- and x0-prediction models the
map output -> eps at a given (z_t, t) is affine with the same coefficients for every branch, and the
weights of eq. 3 sum to one (1 + w1 + w2 - w1 - w2), so combining outputs equals combining eps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gen4d._checks import check_shape
from gen4d.diffusion.schedule import NoiseSchedule, ddim_step, inference_timesteps
from gen4d.diffusion.vdm.model import VideoCondition, predict

__all__ = ["combine_guidance", "guided_output", "ddim_sample"]


def combine_guidance(
    cond: torch.Tensor, uncond: torch.Tensor | None, base: torch.Tensor | None, w1: float = 7.0, w2: float = 0.5
) -> torch.Tensor:
    """Eq. 3: cond + w1 (cond - uncond) + w2 (cond - base); a term whose prediction is None (or whose
    weight is 0) is left out."""
    out = cond
    if w1 != 0:
        if uncond is None:
            raise ValueError("combine_guidance: w1 != 0 needs the unconditional prediction")
        out = out + w1 * (cond - uncond)
    if w2 != 0:
        if base is None:
            raise ValueError("combine_guidance: w2 != 0 needs the 3D-aware base model's prediction")
        out = out + w2 * (cond - base)
    return out


def guided_output(
    unet: torch.nn.Module,
    base_unet: torch.nn.Module | None,
    variant: str,
    sample: torch.Tensor,
    timestep: int | torch.Tensor,
    condition: VideoCondition,
    null: VideoCondition,
    w1: float = 7.0,
    w2: float = 0.5,
    fps: int = 16,
) -> torch.Tensor:
    """Eq. 3's guided output at one timestep (see the module docstring for the batching).

    sample: (B, C, T, h, w); condition: B rows with the motion (or without, for a motion-free model);
    null: B unconditional rows (no motion). Returns (B, C, T, h, w).
    """
    check_shape("sample", sample, ("B", "C", "T", "h", "w"))
    batch = sample.shape[0]
    t = torch.as_tensor(timestep, device=sample.device).reshape(-1)
    shared = base_unet is None
    rows = [condition]
    if w1 != 0:
        rows.append(null.without_motion())
    if w2 != 0 and shared:
        rows.append(condition.without_motion())
    batched = VideoCondition.cat(rows) if len(rows) > 1 else condition
    out = predict(unet, variant, torch.cat([sample] * len(rows)), t.expand(batch * len(rows)), batched, fps)
    chunks = list(out.chunk(len(rows)))
    cond = chunks.pop(0)
    uncond = chunks.pop(0) if w1 != 0 else None
    base = None
    if w2 != 0:
        if shared:
            base = chunks.pop(0)
        else:
            base = predict(base_unet, variant, sample, t.expand(batch), condition.without_motion(), fps)
    return combine_guidance(
        cond.float(), None if uncond is None else uncond.float(), None if base is None else base.float(), w1, w2
    )


def ddim_sample(
    output_fn: Callable[[torch.Tensor, int], torch.Tensor],
    schedule: NoiseSchedule,
    noise: torch.Tensor,
    num_steps: int = 50,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM from pure noise: ``output_fn(z_t, t)`` -> the (guided) network output at integer t.

    noise: the initial latents z_T (B, ...), float32. The timesteps and updates are those of
    diffusers' DDIMScheduler (leading / trailing / linspace spacing): each step goes from t to
    ``t - num_train_timesteps // num_steps`` (``final_alpha_cumprod`` below 0), which is the next
    listed timestep only when ``num_steps`` divides the training steps (e.g. 50 of 1000; with
    trailing spacing and 3 or 7 steps it is not). Returns z_0.
    """
    steps = inference_timesteps(schedule, num_steps).tolist()
    stride = schedule.num_train_timesteps // num_steps
    z = noise.float()
    iterator = range(len(steps))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="DDIM", leave=False)
    for i in iterator:
        t = steps[i]
        t_prev = t - stride  # diffusers' DDIMScheduler.step; < 0 lands on final_alpha_cumprod
        output = output_fn(z, t).float()
        step_noise = None
        if eta > 0:
            step_noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        z, _ = ddim_step(schedule, output, z, t, t_prev, eta=eta, noise=step_noise)
    return z
