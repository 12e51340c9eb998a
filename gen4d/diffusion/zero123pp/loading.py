"""Loading Zero123++: the install hint, the published architectures (random-weight models for
benchmarks and tests) and finding a weights folder (local, hub cache, or download)."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DIFFUSION_HINT",
    "FULL_UNET",
    "SD_VAE",
    "FULL_TEXT",
    "FULL_VISION",
    "SCHEDULER",
    "TINY_UNET",
    "TINY_VAE",
    "TINY_TEXT",
    "TINY_VISION",
    "resolve_folder",
    "require_diffusers",
]

DIFFUSION_HINT = "pip install 'gen4d[diffusion]' (diffusers, transformers, accelerate)"


def require_diffusers():
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(f"Zero123++ needs diffusers and transformers: {DIFFUSION_HINT}") from err


# -----------------------------------------------------------------------------------------
# Architectures (random weights): full size for benchmarks, tiny for CPU tests.
# -----------------------------------------------------------------------------------------
FULL_UNET = dict(
    sample_size=96,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
FULL_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=0,
)  # fmt: skip
FULL_VISION = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
    patch_size=14, projection_dim=1024, hidden_act="gelu",
)  # fmt: skip
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    prediction_type="v_prediction", steps_offset=1, timestep_spacing="trailing",
)  # fmt: skip

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    cross_attention_dim=16,
    attention_head_dim=2,
    norm_num_groups=4,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(8, 16),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
    scaling_factor=0.18215,
)
TINY_TEXT = dict(
    vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=2, pad_token_id=1,
)  # fmt: skip
TINY_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    projection_dim=16,
)  # fmt: skip


def resolve_folder(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder not found: {model}")
    from gen4d.metrics.weights import resolve_hub_model

    resolved = resolve_hub_model(model, "model")  # offline: the cached copy, or how to get the weights
    if isinstance(resolved, Path):
        return resolved
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover
        raise ImportError(f"downloading {model!r} needs huggingface_hub: {DIFFUSION_HINT}") from err
    try:
        return Path(snapshot_download(model))
    except Exception as err:  # network / auth / unknown repo
        raise FileNotFoundError(
            f"could not load {model!r}: not a local folder and the hub download failed ({type(err).__name__}: {err}). "
            "Download the weights elsewhere and pass the folder."
        ) from err
