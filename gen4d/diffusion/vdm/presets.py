"""UNet architecture presets (diffusers constructor arguments) and noise schedules for models we
build ourselves: ``tiny`` (CPU tests), ``small`` (the pixel-space model trained from scratch on
gen4d's procedural assets), and the full-size architectures (random weights, for benchmarks)."""

from __future__ import annotations

from gen4d.diffusion.vdm.model import check_variant

__all__ = ["unet_preset", "UNET_PRESETS", "SCHEDULE_PRESETS"]

_I2V_TINY = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=4,
    cross_attention_dim=16,
    attention_head_dim=4,
)

# Pixel space 64 x 64 (RGBA), ~10 M parameters, ~170 GFLOP per 24-frame forward: no spatial attention
# at full resolution; spatial attention at 32 x 32 and 16 x 16; temporal layers at every level.
# attention_head_dim = 8 (diffusers' I2VGen-XL reads it as the head count; it also sizes the input
# temporal transformer: 8 x 8 channels, which at 32 would cost half of the FLOPs at 64 x 64).
_I2V_SMALL = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "UpBlock3D"),
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=1,
    norm_num_groups=16,
    cross_attention_dim=128,
    attention_head_dim=8,
)

# The published architectures (I2VGen-XL's and ModelScope T2V's unet/config.json).
_I2V_FULL = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=1024,
    attention_head_dim=64,
)
_T2V_FULL = dict(
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    norm_num_groups=32,
    cross_attention_dim=1024,
    attention_head_dim=64,
)

UNET_PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {"image": _I2V_TINY, "static3d": _I2V_TINY, "text": _I2V_TINY},
    "small": {"image": _I2V_SMALL, "static3d": _I2V_SMALL, "text": _I2V_SMALL},
    "full": {"image": _I2V_FULL, "static3d": _I2V_FULL, "text": _T2V_FULL},
}

SCHEDULE_PRESETS: dict[str, dict] = {
    # Stable Diffusion / ModelScope latents.
    "stable_diffusion": {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
    },
    # VideoMV's I2VGen-XL fine-tuning (its configs/i2vgen_xl_train.yaml): cosine betas (s = 0.008, as
    # diffusers' squaredcos_cap_v2) rescaled to zero terminal SNR, v-prediction.
    "videomv": {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "rescale_betas_zero_snr": True,
        "clip_sample": False,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
    },
    # Pixel space from scratch: cosine schedule, v-prediction (stable x0 estimates for L_mr at every t),
    # trailing spacing so sampling starts at the last (pure-noise) step.
    "pixel_cosine_v": {
        "num_train_timesteps": 1000,
        "beta_schedule": "squaredcos_cap_v2",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
    },
}


def unet_preset(name: str, variant: str) -> dict:
    """Constructor arguments of a preset UNet for a variant (a fresh dict)."""
    check_variant(variant)
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset {name!r}; expected one of {sorted(UNET_PRESETS)}")
    return dict(UNET_PRESETS[name][variant])
