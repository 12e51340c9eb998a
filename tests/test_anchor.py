"""The reference-only / temporal-anchor attention processors (gen4d.diffusion.anchor) on a tiny
random Zero123++ (diffusers classes, 2 levels, 1 layer per block)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="the Zero123++ processors need diffusers (gen4d[diffusion])")

from gen4d.diffusion.anchor import (  # noqa: E402
    AnchorCache,
    AnchorSpec,
    AttentionContext,
    BatchLayout,
    anchor_cache_bytes,
    fuse_tokens,
)
from gen4d.diffusion.zero123pp import FULL_UNET, MultiViewConfig, Zero123Plus  # noqa: E402

STEPS = 3


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    return Zero123Plus.tiny(seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))


def _unet_inputs(model, rows):
    gen = torch.Generator().manual_seed(3)
    h, w = model.latent_size
    sample = torch.randn(rows, 4, h, w, generator=gen)
    cond = torch.randn(rows, 4, 8, 8, generator=gen)
    text = torch.randn(rows, 77, 16, generator=gen)
    return sample, cond, text


def test_plain_phase_matches_diffusers_default_processor(model):
    from diffusers.models.attention_processor import AttnProcessor2_0

    sample, _, text = _unet_inputs(model, 2)
    layout = BatchLayout.for_frames([0], guidance=True)
    ours = model.unet(
        sample, 10, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": AttentionContext("plain", layout)}
    ).sample
    saved = dict(model.unet.attn_processors)
    try:
        model.unet.set_attn_processor(AttnProcessor2_0())
        reference = model.unet(sample, 10, encoder_hidden_states=text).sample
    finally:
        model.unet.set_attn_processor(saved)
    assert torch.equal(ours, reference)


def _read_pass(model, sample, cond, text, layout, anchor):
    context = AttentionContext("write", layout, step=0, anchor=anchor)
    model.unet(cond, 10, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": context})
    context.phase, context.calls = "read", {}
    return model.unet(sample, 10, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": context}).sample


def test_weight_zero_reproduces_unanchored_pass_exactly(model):
    sample, cond, text = _unet_inputs(model, 6)
    layout = BatchLayout.for_frames([0, 1, 2], guidance=True)
    plain = _read_pass(model, sample, cond, text, layout, None)
    zero = _read_pass(model, sample, cond, text, layout, AnchorSpec(weight=0.0, source="batch"))
    half = _read_pass(model, sample, cond, text, layout, AnchorSpec(weight=0.5, source="batch"))
    assert torch.equal(plain, zero)
    # frame 0's rows are never changed by the anchor; later frames are
    for row in (0, 3):
        assert torch.equal(half[row], plain[row])
    assert not torch.allclose(half[1], plain[1])


def test_reference_attention_uses_condition_tokens(model):
    sample, cond, text = _unet_inputs(model, 2)
    layout = BatchLayout.for_frames([0], guidance=True)
    a = _read_pass(model, sample, cond, text, layout, None)
    b = _read_pass(model, sample, cond * 0.5 + 1.0, text, layout, None)
    assert not torch.allclose(a, b)


def _traced_denoise(model, images, frames, config, spec):
    cond = model.encode_conditions(images)
    trace = {}
    model._denoise(cond, frames, config, spec, trace=trace)
    return trace


def test_weight_one_copies_frame0_kv_per_guidance_half_batch_mode(model, images):
    config = MultiViewConfig(steps=STEPS, anchor_weight=1.0)
    trace = _traced_denoise(model, images, [0, 1, 2], config, AnchorSpec(weight=1.0, source="batch"))
    layout = BatchLayout.for_frames([0, 1, 2], guidance=True)
    assert len(trace) == len(model.self_attention_layers) * STEPS
    u0, c0 = layout.row(0, "uncond"), layout.row(0, "cond")
    for kv in trace.values():
        for frame in (1, 2):
            assert torch.equal(kv[layout.row(frame, "uncond")], kv[u0])
            assert torch.equal(kv[layout.row(frame, "cond")], kv[c0])
    # the two CFG halves stay distinct (after the first cross-attention they see different contexts)
    assert any(not torch.allclose(kv[u0], kv[c0]) for kv in trace.values())


def test_weight_one_copies_recorded_kv_cache_mode(model, images):
    config = MultiViewConfig(steps=STEPS, anchor_weight=1.0, anchor_mode="cache")
    cache = AnchorCache()
    record_trace = _traced_denoise(model, images, [0], config, AnchorSpec(1.0, 0, "cache", cache, record=True))
    assert cache.roles == ("uncond", "cond")
    assert len(cache.tensors) == len(model.self_attention_layers) * STEPS
    later = _traced_denoise(model, images, [1, 2], config, AnchorSpec(1.0, 0, "cache", cache))
    layout = BatchLayout.for_frames([1, 2], guidance=True)
    for key, kv in later.items():
        stored = cache.tensors[key]
        assert torch.equal(stored.float(), record_trace[key].half().float())
        for frame in (1, 2):
            assert torch.equal(kv[layout.row(frame, "uncond")], stored[0].float())
            assert torch.equal(kv[layout.row(frame, "cond")], stored[1].float())


def test_batch_and_cache_modes_and_batch_grouping_agree(model, images):
    base = dict(steps=STEPS, anchor_weight=0.5, dtype="float32")
    batch2 = model.generate(images, MultiViewConfig(**base, frames_per_batch=2))
    batch3 = model.generate(images, MultiViewConfig(**base, frames_per_batch=3))
    cache = model.generate(images, MultiViewConfig(**base, anchor_mode="cache", frames_per_batch=2))
    torch.testing.assert_close(batch2, batch3, atol=1e-5, rtol=0)
    # the cache stores fp16 inputs: agreement within fp16 rounding of the anchor
    torch.testing.assert_close(batch2, cache, atol=2e-3, rtol=0)


def test_anchor_leaves_frame0_and_moves_later_frames(model, images):
    free = model.generate(images, MultiViewConfig(steps=STEPS, anchor_weight=0.0))
    anchored = model.generate(images, MultiViewConfig(steps=STEPS, anchor_weight=1.0))
    torch.testing.assert_close(free[0], anchored[0], atol=1e-5, rtol=0)
    assert (free[1:] - anchored[1:]).abs().max() > 1e-4


def test_repeated_pipeline_calls_are_identical(model, images):
    for mode in ("batch", "cache"):
        config = MultiViewConfig(steps=STEPS, anchor_weight=0.5, anchor_mode=mode, frames_per_batch=2)
        first = model.generate(images, config)
        second = model.generate(images, config)
        assert torch.equal(first, second)
    # a run without the anchor in between does not leave state behind
    model.generate(images[:1], MultiViewConfig(steps=STEPS, anchor_weight=0.0))
    assert torch.equal(model.generate(images, config), first)


def test_context_errors(model):
    sample, cond, text = _unet_inputs(model, 4)
    with pytest.raises(ValueError, match="no gen4d AttentionContext"):
        model.unet(sample, 10, encoder_hidden_states=text)
    wrong = BatchLayout.for_frames([0, 1, 2], guidance=True)  # 6 rows named, 4 given
    with pytest.raises(ValueError, match="batch has 4 rows but the context layout names 6"):
        model.unet(
            sample, 10, encoder_hidden_states=text, cross_attention_kwargs={"gen4d": AttentionContext("plain", wrong)}
        )
    no_anchor_row = BatchLayout.for_frames([1, 2], guidance=True)
    with pytest.raises(ValueError, match="frame 0 has no 'uncond' row"):
        _read_pass(model, sample, cond, text, no_anchor_row, AnchorSpec(0.5, source="batch"))
    with pytest.raises(RuntimeError, match="nothing recorded"):
        _read_pass(model, sample, cond, text, no_anchor_row, AnchorSpec(0.5, source="cache", cache=AnchorCache()))
    with pytest.raises(ValueError, match="repeated"):
        BatchLayout((0, 0), ("cond", "cond"))
    with pytest.raises(ValueError, match="weight must be in"):
        AnchorSpec(weight=1.5)


def test_fuse_tokens():
    own, anchor = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    assert torch.equal(fuse_tokens(own, anchor, 0.0), own)
    assert torch.equal(fuse_tokens(own, anchor, 1.0), anchor)
    torch.testing.assert_close(fuse_tokens(own, anchor, 0.5), (own + anchor) / 2)
    with pytest.raises(ValueError, match="same resolution"):
        fuse_tokens(own, anchor[:, :4], 0.5)


def test_full_size_anchor_cache_estimate():
    """Zero123++ at 75 steps with CFG: 16 self-attention layers on a 120 x 80 latent grid
    (9600 / 2400 / 600 / 150 tokens); an fp16 cache of frame 0 needs ~8.1 GB, hence 'batch' mode."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**FULL_UNET)
    layers = [n for n in unet.attn_processors if n.endswith("attn1.processor")]
    assert len(layers) == 16
    size = anchor_cache_bytes(unet, 120, 80, steps=75, guidance=True)
    per_step_values = 5 * 9600 * 320 + 5 * 2400 * 640 + 5 * 600 * 1280 + 150 * 1280
    assert size == per_step_values * 75 * 2 * 2
    assert 7.9e9 < size < 8.3e9
