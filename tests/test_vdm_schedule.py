"""gen4d.diffusion.schedule against diffusers' DDIMScheduler (same numbers, same DDIM update)."""

from __future__ import annotations

import pytest
import torch

from gen4d.diffusion import schedule as S

diffusers = pytest.importorskip(
    "diffusers", reason="diffusers is needed for the reference scheduler (gen4d[diffusion])"
)

CONFIGS = [
    dict(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ),
    dict(
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="trailing",
    ),
    dict(beta_schedule="linear", prediction_type="epsilon", clip_sample=True, set_alpha_to_one=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_schedule_matches_diffusers(config):
    ref = diffusers.DDIMScheduler(**config)
    ours = S.NoiseSchedule.from_diffusers_config(config)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    for steps in (50, 7):
        ref.set_timesteps(steps)
        assert S.inference_timesteps(ours, steps).tolist() == ref.timesteps.tolist()


@pytest.mark.parametrize("config", CONFIGS)
def test_ddim_step_and_noise_match_diffusers(config):
    ref = diffusers.DDIMScheduler(**config)
    ours = S.NoiseSchedule.from_diffusers_config(config)
    ref.set_timesteps(50)
    gen = torch.Generator().manual_seed(0)
    x0, noise, out = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    t = torch.tensor([981, 21])
    torch.testing.assert_close(S.add_noise(ours, x0, noise, t), ref.add_noise(x0, noise, t))
    if ours.prediction_type == "v_prediction":
        torch.testing.assert_close(S.training_target(ours, x0, noise, t), ref.get_velocity(x0, noise, t))
    timesteps = S.inference_timesteps(ours, 50).tolist()
    for i in (0, 10, 49):
        step, prev = timesteps[i], (timesteps[i + 1] if i + 1 < len(timesteps) else -1)
        x_prev, x0_hat = S.ddim_step(ours, out, x0, step, prev)
        expected = ref.step(out, step, x0)
        torch.testing.assert_close(x_prev, expected.prev_sample, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x0_hat, expected.pred_original_sample, rtol=1e-5, atol=1e-6)


def test_prediction_roundtrip_all_types():
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    t = torch.tensor([10, 500, 990])
    for kind in ("epsilon", "v_prediction", "sample"):
        sched = S.NoiseSchedule.from_diffusers_config(
            {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": kind}
        )
        xt = S.add_noise(sched, x0, noise, t)
        x0_hat, eps_hat = S.predict_x0_and_eps(sched, S.training_target(sched, x0, noise, t), xt, t)
        torch.testing.assert_close(x0_hat, x0, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(eps_hat, noise, rtol=1e-3, atol=1e-3)


def test_schedule_errors():
    sched = S.NoiseSchedule.stable_diffusion()
    with pytest.raises(ValueError, match="timesteps must lie"):
        sched.alpha_bar(torch.tensor([1000]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="num_steps"):
        S.inference_timesteps(sched, 0)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        S.make_betas("cubic")


def test_ddim_step_with_eta_matches_diffusers():
    config = CONFIGS[0]
    ref, ours = diffusers.DDIMScheduler(**config), S.NoiseSchedule.from_diffusers_config(config)
    ref.set_timesteps(20)
    gen = torch.Generator().manual_seed(3)
    x, out, noise = (torch.randn(1, 2, 3, 3, generator=gen) for _ in range(3))
    steps = S.inference_timesteps(ours, 20).tolist()
    x_prev, _ = S.ddim_step(ours, out, x, steps[3], steps[4], eta=0.5, noise=noise)
    torch.testing.assert_close(
        x_prev, ref.step(out, steps[3], x, eta=0.5, variance_noise=noise).prev_sample, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="noise"):
        S.ddim_step(ours, out, x, steps[3], steps[4], eta=0.5)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("steps", [3, 7, 50])
def test_ddim_sample_follows_diffusers_whole_loop(config, steps):
    """The whole DDIM loop against DDIMScheduler.step, also where the step count does not divide the
    1000 training steps (3, 7): diffusers then steps from t to t - 1000 // N, not to the next
    listed timestep (with trailing spacing the two differ)."""
    from gen4d.diffusion.vdm.sampling import ddim_sample

    ref = diffusers.DDIMScheduler(**config)
    ours = S.NoiseSchedule.from_diffusers_config(config)
    ref.set_timesteps(steps)
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    def model(z, t):  # any deterministic function of (z, t) stands in for a network
        return 0.3 * z + 0.01 * float(t) / 1000

    z = noise.clone()
    for t in ref.timesteps:
        z = ref.step(model(z, int(t)), t, z).prev_sample
    torch.testing.assert_close(ddim_sample(model, ours, noise, steps), z, rtol=1e-5, atol=1e-6)
