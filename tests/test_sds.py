"""SDS maths (gen4d.diffusion.sds) and the Zero-1-to-3 guidance on a tiny random model."""

from __future__ import annotations

import pytest
import torch

from gen4d.diffusion.schedule import NoiseSchedule
from gen4d.diffusion.sds import (
    TimestepAnneal,
    gradient_loss,
    sample_timesteps,
    sds_step,
    timestep_range,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_timestep_annealing_matches_stag4d():
    anneal = TimestepAnneal()
    assert timestep_range(anneal, 0) == pytest.approx((0.5, 0.95))
    assert timestep_range(anneal, 1500) == pytest.approx((0.26, 0.725))
    assert timestep_range(anneal, 3000) == pytest.approx((0.02, 0.5))
    assert timestep_range(anneal, 8000) == pytest.approx((0.02, 0.5))
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(2000, 0.02, 0.5, 1000, gen)
    assert int(t.min()) == 20 and int(t.max()) == 500
    # A range that would cross over is refused when the config is built, before any optimisation.
    with pytest.raises(ValueError, match="TimestepAnneal.min_start: expected at most max_start = 0.5, got 0.9"):
        TimestepAnneal(min_start=0.9, max_start=0.5)


def test_gradient_trick_has_the_given_gradient():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    grad = torch.randn(2, 4, 3, 3)
    gradient_loss(x, grad).backward()
    torch.testing.assert_close(x.grad, grad, atol=1e-6, rtol=0)  # x - (x - g) up to rounding


def _analytic(schedule: NoiseSchedule, target: torch.Tensor):
    """The exact denoiser of a data distribution concentrated on ``target``."""

    def denoise(z, t):
        a = schedule.alphas_cumprod[t.cpu()].reshape(-1, *([1] * (z.ndim - 1))).to(z)
        eps = (z - a.sqrt() * target) / (1 - a).sqrt()
        if schedule.prediction_type == "v_prediction":
            return a.sqrt() * eps - (1 - a).sqrt() * target
        return eps

    return denoise


def test_prediction_types_give_the_same_sds_gradient():
    target = torch.rand(2, 3, 8, 8)
    x = torch.rand(2, 3, 8, 8)
    t, noise = torch.tensor([100, 800]), torch.randn(2, 3, 8, 8)
    eps_sched = NoiseSchedule.stable_diffusion("epsilon")
    v_sched = NoiseSchedule.stable_diffusion("v_prediction")
    g_eps = sds_step(x, _analytic(eps_sched, target), eps_sched, t, noise).gradient
    g_v = sds_step(x, _analytic(v_sched, target), v_sched, t, noise).gradient
    torch.testing.assert_close(g_eps, g_v, atol=1e-4, rtol=1e-4)
    # for a point-mass data distribution the noise cancels: grad = w sqrt(a / (1 - a)) (x - target)
    a = eps_sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(g_eps, (1 - a) * (a / (1 - a)).sqrt() * (x - target), atol=1e-4, rtol=1e-4)


def test_sds_pulls_a_gaussian_render_toward_the_target():
    """SDS steps with an analytic single-image denoiser move a rendered image toward that image."""
    from gen4d.cameras import orbit
    from gen4d.gaussians import random_in_sphere
    from gen4d.render import RenderOptions, render

    camera = orbit(0.0, 0.0, 2.0, 40.0, 32, 32)
    options = RenderOptions(backend="torch")
    target_set = random_in_sphere(150, radius=0.4, opacity=0.8, seed=1)
    with torch.no_grad():
        target = render(target_set, camera, torch.ones(3), options).rgb.permute(0, 3, 1, 2)
    start = random_in_sphere(150, radius=0.4, opacity=0.8, seed=2)
    params = {k: v.clone().requires_grad_(True) for k, v in start.as_dict().items()}
    optimiser = torch.optim.Adam([params["sh"], params["opacity_logits"], params["means"]], lr=0.02)
    schedule = NoiseSchedule.stable_diffusion()
    denoise = _analytic(schedule, target)
    gen = torch.Generator().manual_seed(0)
    errors = []
    for step in range(40):
        gaussians = type(start)(**params)
        image = render(gaussians, camera, torch.ones(3), options).rgb.permute(0, 3, 1, 2)
        errors.append(float(((image.detach() - target) ** 2).mean()))
        low, high = timestep_range(TimestepAnneal(steps=40), step)
        t = sample_timesteps(1, low, high, generator=gen)
        out = sds_step(image, denoise, schedule, t, generator=gen)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
    assert errors[-1] < 0.3 * errors[0], errors[::8]


def test_sds_step_checks_shapes():
    schedule = NoiseSchedule.stable_diffusion()
    x = torch.zeros(2, 4, 4, 4)
    with pytest.raises(ValueError, match="one per latent"):
        sds_step(x, lambda z, t: z, schedule, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="denoiser returned"):
        sds_step(x, lambda z, t: z[:1], schedule, torch.tensor([1, 2]))


# -- Zero-1-to-3 ---------------------------------------------------------------------------
def test_zero123_guidance_tiny_random_model():
    pytest.importorskip("diffusers", reason="Zero-1-to-3 needs diffusers (gen4d[diffusion])")
    from gen4d.cameras import zero123_pose_embedding
    from gen4d.diffusion.zero123 import Zero123Guidance

    guidance = Zero123Guidance.tiny(seed=0)
    conditions = guidance.encode_condition(torch.rand(2, 3, 40, 40))
    assert conditions.clip.shape == (2, 16) and conditions.latent.shape == (2, 4, 16, 16)
    renders = torch.rand(2, 3, 24, 24, requires_grad=True)
    pose = zero123_pose_embedding(torch.tensor([10.0, -5.0]), torch.tensor([30.0, 120.0]), torch.tensor([2.0, 2.0]))
    out = guidance.sds(renders, conditions, pose, torch.tensor([300, 700]), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert renders.grad is not None and torch.isfinite(renders.grad).all() and renders.grad.abs().sum() > 0
    # the pose and the condition both change the guided prediction; CFG 1 = the conditional branch
    noisy, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    one = conditions.index([0])
    base = guidance.predict(noisy, t, one, pose[:1])
    assert not torch.allclose(base, guidance.predict(noisy, t, one, pose[1:]))
    assert not torch.allclose(base, guidance.predict(noisy, t, conditions.index([1]), pose[:1]))
    # guidance is uncond + s (cond - uncond): linear in s, and s = 1 is the conditional branch alone
    p1, p3 = (guidance.predict(noisy, t, one, pose[:1], guidance_scale=s) for s in (1.0, 3.0))
    torch.testing.assert_close(base - p1, 2 * (p3 - p1), atol=1e-4, rtol=1e-3)
    assert (base - p1).abs().max() > 1e-4
    with pytest.raises(ValueError, match="pose"):
        guidance.predict(noisy, t, one, pose)


def _public_code_clip_input(images, resize_to: int, clip_size: int, mean, std, quantise=None):
    """DreamGaussian's / STAG4D's ``get_img_embeds`` written out independently: bilinear to 256
    (here ``resize_to``), ``to_pil_image`` (x * 255 truncated to uint8), ``CLIPImageProcessor``
    (PIL bicubic to the CLIP size, /255, normalise)."""
    import numpy as np
    from PIL import Image

    small = torch.nn.functional.interpolate(images, (resize_to, resize_to), mode="bilinear", align_corners=False)
    out = []
    for image in small:
        array = (quantise or np.floor)(image.permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)
        resized = np.asarray(Image.fromarray(array).resize((clip_size, clip_size), Image.BICUBIC))
        out.append(torch.from_numpy(resized.copy()).permute(2, 0, 1))
    pixels = torch.stack(out)
    normalised = (pixels.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    return pixels, normalised.float()


def test_condition_pixels_are_pil_bicubic_of_the_uint8_image():
    from PIL import Image

    from gen4d.diffusion.zero123 import condition_clip_pixels

    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 40, 52, generator=generator)
    pixels = condition_clip_pixels(images, 24)
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, 24, 24)
    for image, got in zip(images, pixels):
        truncated = (image.permute(1, 2, 0).numpy() * 255).astype("uint8")  # numpy's cast truncates, as .byte()
        resized = Image.fromarray(truncated).resize((31, 24), Image.BICUBIC)  # shorter side 40 -> 24, 52 -> 31
        expected = torch.from_numpy(__import__("numpy").asarray(resized)[:, 3:27].copy()).permute(
            2, 0, 1
        )  # centre crop
        assert torch.equal(got, expected)


def test_zero123_condition_prep_is_the_public_codes_by_default():
    pytest.importorskip("diffusers", reason="Zero-1-to-3 needs diffusers (gen4d[diffusion])")
    from gen4d.diffusion.zero123 import Zero123Guidance

    guidance = Zero123Guidance.tiny(seed=0, image_size=48)  # renders at 48 px, CLIP at 32 px
    assert guidance.condition_prep == "pil" and guidance.posterior == "mean"
    images = torch.rand(2, 3, 60, 60, generator=torch.Generator().manual_seed(5))
    prep = guidance.clip_prep
    pixels, expected = _public_code_clip_input(images, 48, prep.size, prep.mean, prep.std)
    got = guidance.condition_clip_input(images)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # rounding instead of truncating, or torch's bicubic, would change the pixels
    rounded, _ = _public_code_clip_input(images, 48, prep.size, prep.mean, prep.std, quantise=__import__("numpy").round)
    assert not torch.equal(rounded, pixels)
    condition = guidance.encode_condition(images)
    torch.testing.assert_close(condition.clip, guidance.image_encoder(expected).image_embeds, atol=1e-5, rtol=1e-5)
    guidance.condition_prep = "torch"
    torch.testing.assert_close(guidance.condition_clip_input(images), prep(images))
    assert (guidance.condition_clip_input(images) - expected).abs().max() > 1e-3


def test_zero123_vae_posterior_mean_or_sample():
    pytest.importorskip("diffusers", reason="Zero-1-to-3 needs diffusers (gen4d[diffusion])")
    from gen4d.diffusion.zero123 import Zero123Guidance

    guidance = Zero123Guidance.tiny(seed=0)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    posterior = guidance.vae.encode(images * 2 - 1).latent_dist
    scale = guidance.vae.config.scaling_factor
    torch.testing.assert_close(guidance.encode_images(images), posterior.mean * scale)
    guidance.posterior = "sample"
    first = guidance.encode_images(images, torch.Generator().manual_seed(1))
    again = guidance.encode_images(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, (posterior.mean + posterior.std * noise) * scale)
    assert (first - posterior.mean * scale).abs().max() > 0
