"""The Diffusion4D video model on tiny random diffusers UNets (CPU): condition shapes, the motion
embedding, L_mr, eq. 3's guidance, DDIM against diffusers, generation and errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="the video model needs diffusers (pip install 'gen4d[diffusion]')")
transformers = pytest.importorskip("transformers", reason="the CLIP encoders need transformers")

from gen4d.diffusion import schedule as S  # noqa: E402
from gen4d.diffusion.vdm import (  # noqa: E402
    VideoCondition,
    add_motion_embedding,
    build_unet,
    combine_guidance,
    ddim_sample,
    guided_output,
    latent_motion_magnitude,
    motion_reconstruction_loss,
    null_condition,
    predict,
)
from gen4d.diffusion.vdm.components import (  # noqa: E402
    ImageEncoder,
    PixelCodec,
    TextEncoder,
    VDMSpec,
    VideoModel,
    load_unet_weights,
    load_video_model,
    save_video_model,
)
from gen4d.diffusion.vdm.pipeline import SampleConfig, encode_condition, generate, orbit_dataset  # noqa: E402
from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS, unet_preset  # noqa: E402

T, SIZE = 4, 8


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyTokenizer:
    """Stands in for CLIPTokenizer (which needs vocabulary files): deterministic ids per prompt."""

    model_max_length = 6

    def __call__(self, prompts, padding, max_length, truncation, return_tensors):
        ids = [[(sum(map(ord, p)) * (i + 1) + i) % 50 for i in range(max_length)] for p in prompts]
        return SimpleNamespace(input_ids=torch.tensor(ids))


def tiny_unet(variant: str, seed: int = 0, motion: bool = True):
    torch.manual_seed(seed)
    unet = build_unet(variant, unet_preset("tiny", variant)).eval()
    if motion:
        add_motion_embedding(unet)
    return unet


def tiny_model(variant: str = "image", separate_base: bool = True, encoders: bool = True) -> VideoModel:
    unet = tiny_unet(variant, 0)
    base = tiny_unet(variant, 1, motion=False) if separate_base else None
    text = image = None
    if encoders:
        torch.manual_seed(2)
        text_model = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                vocab_size=50,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=8,
                projection_dim=16,
            )
        ).eval()
        text = TextEncoder(text_model, TinyTokenizer())
        vision = transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(
                image_size=16,
                patch_size=8,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                projection_dim=16,
            )
        ).eval()
        image = ImageEncoder(vision, size=16)
    spec = VDMSpec(
        variant=variant,
        unet_config=unet_preset("tiny", variant),
        scheduler=SCHEDULE_PRESETS["pixel_cosine_v"],
        codec="pixel",
        num_frames=T,
        size=SIZE,
        motion_stats={"median": 0.01},
    )
    return VideoModel(
        spec=spec,
        unet=unet,
        base_unet=base,
        schedule=S.NoiseSchedule.from_diffusers_config(spec.scheduler),
        codec=PixelCodec(),
        text_encoder=text,
        image_encoder=image,
    )


def rgba_video(frames: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(frames, size, size, 4, generator=gen)


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", ["image", "static3d", "text"])
def test_condition_and_output_shapes(variant):
    model = tiny_model(variant)
    cond = encode_condition(
        model, image=rgba_video(1)[0], static_video=rgba_video(T), prompt="a cat" if variant == "text" else None
    )
    assert cond.text.shape == (1, 6, 16)  # CLIP text tokens (the empty prompt for image variants)
    if variant == "text":
        assert cond.latents is None and cond.image_embeds is None
    else:
        assert cond.latents.shape == (1, 4, T, SIZE, SIZE) and cond.image_embeds.shape == (1, 16)
    if variant == "image":  # I2VGen-XL: image latent in frame 0, frame-position masks i / (T - 1) after it
        for i in range(1, T):
            assert torch.allclose(cond.latents[:, :, i], torch.full_like(cond.latents[:, :, i], i / (T - 1)))
    if variant == "static3d":  # the static orbit's latents, frame by frame
        torch.testing.assert_close(cond.latents[0], PixelCodec().encode(rgba_video(T)[None])[0])
    z = torch.randn(2, 4, T, SIZE, SIZE)
    batch = VideoCondition.cat([cond.with_motion(0.02), null_condition(cond)])
    out = predict(model.unet, variant, z, torch.tensor([10, 900]), batch)
    assert out.shape == z.shape and torch.isfinite(out).all()


# --------------------------------------------------------------------------------- motion embedding


@pytest.mark.parametrize("variant", ["image", "text"])
def test_motion_embedding_leaves_base_output_unchanged_at_init(variant):
    base = tiny_unet(variant, 0, motion=False)
    cond = VideoCondition(
        text=torch.randn(2, 3, 16),
        image_embeds=None if variant == "text" else torch.randn(2, 16),
        latents=None if variant == "text" else torch.randn(2, 4, T, SIZE, SIZE),
    )
    z, t = torch.randn(2, 4, T, SIZE, SIZE), torch.tensor([3, 700])
    with torch.no_grad():
        before = predict(base, variant, z, t, cond)
        state_before = set(base.state_dict())
        add_motion_embedding(base)
        assert state_before < set(base.state_dict())  # only motion keys were added
        assert all(".motion." in k for k in set(base.state_dict()) - state_before)
        after = predict(base, variant, z, t, cond.with_motion(torch.tensor([0.0, 0.05])))
        torch.testing.assert_close(after, before, rtol=0, atol=0)
        # Once trained (non-zero last layer) m changes the output, except in rows masked out.
        torch.nn.init.normal_(base.time_embedding.motion.linear_2.weight, std=1.0)
        moved = predict(base, variant, z, t, cond.with_motion(torch.tensor([0.0, 0.05])))
        assert (moved - before).abs().max() > 1e-4
        masked = cond.with_motion(torch.tensor([0.0, 0.05]))
        masked.motion_mask = torch.tensor([0.0, 0.0])
        torch.testing.assert_close(predict(base, variant, z, t, masked), before, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- L_mr


def test_motion_reconstruction_loss_and_gradient_by_hand():
    gen = torch.Generator().manual_seed(0)
    z0, zbar = torch.randn(2, 3, 4, 2, 2, generator=gen), torch.randn(2, 3, 4, 2, 2, generator=gen)
    zhat = torch.randn(2, 3, 4, 2, 2, generator=gen, requires_grad=True)
    loss = motion_reconstruction_loss(z0, zhat, zbar)
    loss.backward()
    n = 3 * 4 * 2 * 2  # elements per video; m = 1/T sum_i mean_frame(.) = mean over all of them
    m0 = [float(((z0[b] - zbar[b]) ** 2).sum()) / n for b in range(2)]
    mh = [float(((zhat[b].detach() - zbar[b]) ** 2).sum()) / n for b in range(2)]
    expected = sum((a - b) ** 2 for a, b in zip(m0, mh)) / 2
    assert abs(float(loss.detach()) - expected) < 1e-6
    for b in range(2):  # dL/dzhat_b = 1/B * 2 (mh_b - m0_b) * 2 (zhat_b - zbar_b) / n
        grad = 2 * (mh[b] - m0[b]) * 2 * (zhat[b].detach() - zbar[b]) / n / 2
        torch.testing.assert_close(zhat.grad[b], grad, rtol=1e-5, atol=1e-7)


def test_latent_motion_magnitude_is_the_metrics_definition():
    from gen4d.metrics.motion import motion_magnitude

    gen = torch.Generator().manual_seed(1)
    z, zbar = torch.randn(3, 4, T, 5, 5, generator=gen), torch.randn(3, 4, T, 5, 5, generator=gen)
    # metrics' m(V) takes (B, T, ...frame); ours (B, C, T, h, w): the same mean over elements.
    ref = motion_magnitude(z.transpose(1, 2), zbar.transpose(1, 2), batch_dims=1)
    torch.testing.assert_close(latent_motion_magnitude(z, zbar), ref)
    with pytest.raises(ValueError, match="static_latents"):
        latent_motion_magnitude(z, zbar[:, :, :2])


def test_training_loss_is_ldm_plus_omega_mr():
    from gen4d.train.step import vdm_loss

    unet = tiny_unet("image")
    torch.nn.init.normal_(unet.time_embedding.motion.linear_2.weight, std=0.1)
    sched = S.NoiseSchedule.from_diffusers_config(SCHEDULE_PRESETS["pixel_cosine_v"])
    gen = torch.Generator().manual_seed(3)
    z0, zbar, noise = (torch.randn(2, 4, T, SIZE, SIZE, generator=gen) for _ in range(3))
    t = torch.tensor([100, 800])
    cond = VideoCondition(latents=torch.randn(2, 4, T, SIZE, SIZE, generator=gen), motion=torch.tensor([0.01, 0.03]))
    loss, parts = vdm_loss(unet, "image", sched, z0, zbar, cond, t, noise, mr_weight=0.7)
    with torch.no_grad():
        zt = S.add_noise(sched, z0, noise, t)
        out = predict(unet, "image", zt, t, cond)
        a = sched.alpha_bar(t, z0)
        v_target = a.sqrt() * noise - (1 - a).sqrt() * z0
        x0_hat = a.sqrt() * zt - (1 - a).sqrt() * out
        m = lambda x: ((x - zbar) ** 2).flatten(1).mean(1)  # noqa: E731
        ldm = ((out - v_target) ** 2).mean()
        mr = ((m(z0) - m(x0_hat)) ** 2).mean()
    torch.testing.assert_close(parts["ldm"], ldm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts["mr"], mr, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss.detach(), ldm + 0.7 * mr, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- guidance


def test_combine_guidance_is_eq3_term_by_term():
    gen = torch.Generator().manual_seed(4)
    cond, uncond, base = (torch.randn(2, 3, generator=gen) for _ in range(3))
    w1, w2 = 7.0, 0.5
    out = combine_guidance(cond, uncond, base, w1, w2)
    for i in range(2):
        for j in range(3):
            c, u, b = float(cond[i, j]), float(uncond[i, j]), float(base[i, j])
            assert abs(float(out[i, j]) - (c + w1 * (c - u) + w2 * (c - b))) < 1e-5
    torch.testing.assert_close(combine_guidance(cond, None, None, 0.0, 0.0), cond)
    with pytest.raises(ValueError, match="3D-aware"):
        combine_guidance(cond, uncond, None, w1, w2)


def _count_forwards(module):
    calls = []
    handle = module.register_forward_hook(lambda m, args, kwargs_or_out: calls.append(args[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("separate_base", [True, False])
def test_guided_output_batches_the_three_predictions(separate_base):
    model = tiny_model("image", separate_base=separate_base, encoders=False)
    torch.nn.init.normal_(model.unet.time_embedding.motion.linear_2.weight, std=0.5)  # m matters
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1, 4, T, SIZE, SIZE, generator=gen)
    cond = VideoCondition(
        latents=torch.randn(1, 4, T, SIZE, SIZE, generator=gen), image_embeds=torch.randn(1, 16, generator=gen)
    ).with_motion(0.03)
    null = null_condition(cond)
    calls, handle = _count_forwards(model.unet)
    base_calls, base_handle = _count_forwards(model.base_unet) if separate_base else ([], None)
    with torch.no_grad():
        out = guided_output(model.unet, model.base_unet, "image", z, 500, cond, null, w1=7.0, w2=0.5)
    handle.remove()
    if base_handle:
        base_handle.remove()
    if separate_base:  # [cond with m ; uncond] in one forward of the fine-tuned model, base once
        assert calls == [2] and base_calls == [1]
    else:  # shared weights: all three rows in ONE forward
        assert calls == [3]
    t = torch.tensor([500])
    with torch.no_grad():
        e_cond = predict(model.unet, "image", z, t, cond)
        e_uncond = predict(model.unet, "image", z, t, null)
        base = model.base_unet if separate_base else model.unet
        e_base = predict(base, "image", z, t, cond.without_motion())
    assert (e_cond - e_base).abs().max() > 1e-4  # the 3D-aware term is not trivially zero
    torch.testing.assert_close(out, e_cond + 7.0 * (e_cond - e_uncond) + 0.5 * (e_cond - e_base), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- DDIM


@pytest.mark.parametrize("preset", ["pixel_cosine_v", "stable_diffusion"])
def test_ddim_loop_matches_diffusers_scheduler(preset):
    model = tiny_model("image", encoders=False)
    sched_config = SCHEDULE_PRESETS[preset]
    schedule = S.NoiseSchedule.from_diffusers_config(sched_config)
    gen = torch.Generator().manual_seed(6)
    cond = VideoCondition(latents=torch.randn(1, 4, T, SIZE, SIZE, generator=gen)).with_motion(0.02)
    null = null_condition(cond)
    noise = torch.randn(1, 4, T, SIZE, SIZE, generator=gen)

    def fn(z, t):
        with torch.no_grad():
            return guided_output(model.unet, model.base_unet, "image", z, t, cond, null, 7.0, 0.5)

    ours = ddim_sample(fn, schedule, noise, num_steps=4)
    ref = diffusers.DDIMScheduler(**sched_config)
    ref.set_timesteps(4)
    z = noise.clone()
    for t in ref.timesteps:
        z = ref.step(fn(z, int(t)), t, z).prev_sample
    torch.testing.assert_close(ours, z, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- generation and errors


def test_generate_writes_a_reconstructable_dataset(tmp_path):
    from gen4d.data.dataset import load_dataset
    from gen4d.data.manifest import save_dataset

    model = tiny_model("image")
    result = generate(model, image=rgba_video(1, size=12)[0], config=SampleConfig(steps=2, motion=0.02))
    assert result.rgb.shape == (T, SIZE, SIZE, 3) and result.alpha.shape == (T, SIZE, SIZE, 1)
    assert result.static_rgb.shape == (T, SIZE, SIZE, 3) and result.measured_motion is not None
    video = orbit_dataset(result, model, name="gen")
    save_dataset(video, tmp_path / "gen")
    back = load_dataset(tmp_path / "gen")
    assert set(back.splits) == {"orbit", "static_orbit"} and back.num_frames == T
    orbit, static = back.split("orbit"), back.split("static_orbit")
    torch.testing.assert_close(orbit.cameras.times, torch.linspace(0, 1, T))
    assert float(static.cameras.times.abs().max()) == 0.0
    torch.testing.assert_close(orbit.cameras.world_to_camera, static.cameras.world_to_camera)
    torch.testing.assert_close(orbit.images, result.rgb, atol=1 / 255 + 1e-6, rtol=0)


def test_save_and_load_model_folder(tmp_path):
    model = tiny_model("image", encoders=False)
    torch.nn.init.normal_(model.unet.time_embedding.motion.linear_2.weight, std=0.1)
    save_video_model(tmp_path / "m", model.spec, model.unet, model.base_unet)
    back = load_video_model(tmp_path / "m")
    for (name, a), (_, b) in zip(model.unet.state_dict().items(), back.unet.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert back.base_unet is not None and not any(".motion." in k for k in back.base_unet.state_dict())
    assert back.spec.variant == "image" and back.schedule.prediction_type == "v_prediction"


def test_bad_inputs_get_clear_errors(tmp_path):
    model = tiny_model("static3d")
    with pytest.raises(ValueError, match="static orbit V-bar"):
        encode_condition(model)
    with pytest.raises(ValueError, match="needs 4"):
        encode_condition(model, static_video=rgba_video(T + 2))
    with pytest.raises(ValueError, match="needs a prompt"):
        encode_condition(tiny_model("text"))
    with pytest.raises(ValueError, match="condition image"):
        encode_condition(tiny_model("image"))
    with pytest.raises(ValueError, match="RGBA"):
        PixelCodec().encode(torch.rand(1, T, SIZE, SIZE, 3))
    image = tiny_unet("image")
    with pytest.raises(ValueError, match="condition latents"):
        predict(image, "image", torch.randn(1, 4, T, SIZE, SIZE), torch.tensor([1]), VideoCondition())
    with pytest.raises(ValueError, match="condition.latents"):  # frame count of the condition != the video's
        predict(
            image,
            "image",
            torch.randn(1, 4, T, SIZE, SIZE),
            torch.tensor([1]),
            VideoCondition(latents=torch.randn(1, 4, T + 1, SIZE, SIZE)),
        )
    with pytest.raises(ValueError, match="no motion embedding"):
        predict(
            tiny_unet("image", motion=False),
            "image",
            torch.randn(1, 4, T, SIZE, SIZE),
            torch.tensor([1]),
            VideoCondition(latents=torch.randn(1, 4, T, SIZE, SIZE)).with_motion(0.1),
        )
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        load_unet_weights(image, tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="no model at"):
        load_video_model(str(tmp_path / "nowhere"))
    save_video_model(tmp_path / "m", model.spec, model.unet)
    (tmp_path / "m" / "unet.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="train-vdm"):
        load_video_model(tmp_path / "m")


def test_batch_chunked_attention_matches_unchunked():
    """Every attention layer sliced over the batch (self- and cross-attention) gives the same output."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from gen4d.diffusion.vdm.model import BatchChunkedAttnProcessor, build_unet, limit_attention_batch
    from gen4d.diffusion.vdm.presets import unet_preset

    unet = build_unet("image", unet_preset("tiny", "image")).eval()
    assert all(isinstance(p, BatchChunkedAttnProcessor) for p in unet.attn_processors.values())  # built sliced
    unet.set_attn_processor(AttnProcessor2_0())
    temporal = unet.image_latents_temporal_encoder.attn1
    cross = next(m for name, m in unet.named_modules() if name.endswith("attn2"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(37, 6, temporal.query_dim, generator=gen)
    y = torch.randn(37, 5, cross.query_dim, generator=gen)
    context = torch.randn(37, 3, cross.cross_attention_dim, generator=gen)
    with torch.no_grad():
        whole_x, whole_y = temporal(x), cross(y, encoder_hidden_states=context)
        limit_attention_batch(unet, max_rows=8)
        assert all(isinstance(p, BatchChunkedAttnProcessor) and p.max_rows == 8 for p in unet.attn_processors.values())
        sliced_x, sliced_y = temporal(x), cross(y, encoder_hidden_states=context)
        limit_attention_batch(unet)  # idempotent: no processor nesting
        assert not any(isinstance(p.inner, BatchChunkedAttnProcessor) for p in unet.attn_processors.values())
    assert torch.allclose(whole_x, sliced_x, atol=1e-6)
    assert torch.allclose(whole_y, sliced_y, atol=1e-6)


def test_text_encoder_penultimate_layer_as_i2vgen_xl_pipeline():
    """skip_layers=1 (diffusers' clip_skip=1, I2VGenXLPipeline's default) = the penultimate layer's
    states through the final layer norm: the same as a copy of the model cut after that layer."""
    config = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_attention_heads=2, max_position_embeddings=8)
    torch.manual_seed(4)
    two = transformers.CLIPTextModel(transformers.CLIPTextConfig(num_hidden_layers=2, **config)).eval()
    one = transformers.CLIPTextModel(transformers.CLIPTextConfig(num_hidden_layers=1, **config)).eval()
    missing, _ = one.load_state_dict(two.state_dict(), strict=False)
    assert not missing  # the 1-layer model is the 2-layer one without its last layer
    prompts = ["a fox", "a cat walking"]
    cut = TextEncoder(one, TinyTokenizer())(prompts)
    penultimate = TextEncoder(two, TinyTokenizer(), skip_layers=1)(prompts)
    last = TextEncoder(two, TinyTokenizer())(prompts)
    torch.testing.assert_close(penultimate, cut)
    assert not torch.allclose(penultimate, last, atol=1e-3)
    with pytest.raises(ValueError, match="skip_layers"):
        TextEncoder(two, TinyTokenizer(), skip_layers=-1)


def test_generate_converts_the_papers_motion_units():
    model = tiny_model("image")
    image = rgba_video(1, size=12)[0]
    by_sum = generate(
        model, image=image, config=SampleConfig(steps=1, static_orbit=False, motion_sum=0.06 * SIZE * SIZE * 3)
    )
    assert by_sum.motion == pytest.approx(0.06)
    by_mean = generate(model, image=image, config=SampleConfig(steps=1, static_orbit=False, motion=0.06))
    torch.testing.assert_close(by_sum.rgb, by_mean.rgb)
