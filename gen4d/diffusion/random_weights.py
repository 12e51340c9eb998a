"""Random-weight SDXL and Stable Video Diffusion pipelines of the real diffusers classes, at full
size (same architecture, hence the same time and memory as the public weights: benchmarks) or
tiny (CPU tests). The full sizes are the configs of ``stabilityai/stable-diffusion-xl-base-1.0``
and ``stabilityai/stable-video-diffusion-img2vid(-xt)``; outputs of random weights are noise.

Tokenizers are built offline from a small byte-level vocabulary (:func:`offline_clip_tokenizer`):
the text encoders keep their real vocabulary size, so the cost is the real one.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "SDXL",
    "SVD",
    "offline_clip_tokenizer",
    "random_sdxl_pipeline",
    "random_svd_pipeline",
]

Size = Literal["tiny", "full"]

_SCALED_LINEAR = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SDXL: dict[str, dict] = {
    "full": dict(
        unet=dict(
            sample_size=128, in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        ),
        vae=dict(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            latent_channels=4, sample_size=1024, scaling_factor=0.13025, force_upcast=True,
        ),
        text=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
        text_2=dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                    num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280),
        scheduler=dict(_SCALED_LINEAR, prediction_type="epsilon", steps_offset=1, timestep_spacing="leading"),
    ),
    "tiny": dict(
        unet=dict(
            sample_size=8, in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
            attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1), cross_attention_dim=32,
            use_linear_projection=True, norm_num_groups=8, addition_embed_type="text_time",
            addition_time_embed_dim=4, projection_class_embeddings_input_dim=40,
        ),
        vae=dict(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.13025,
        ),
        text=dict(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  max_position_embeddings=77, projection_dim=16),
        text_2=dict(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                    max_position_embeddings=77, projection_dim=16),
        scheduler=dict(_SCALED_LINEAR, prediction_type="epsilon", steps_offset=1, timestep_spacing="leading"),
    ),
}  # fmt: skip
"""SDXL base: UNet, VAE, the two CLIP text encoders (ViT-L, OpenCLIP bigG with projection), Euler scheduler."""

SVD: dict[str, dict] = {
    "full": dict(
        unet=dict(sample_size=96, num_frames=25),  # the class defaults are SVD's architecture
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=768,
                 scaling_factor=0.18215, force_upcast=True),
        vision=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu"),
    ),
    "tiny": dict(
        unet=dict(sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
                  up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=16,
                  num_attention_heads=(2, 4), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24,
                  num_frames=4),
        vae=dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, sample_size=16),
        vision=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=224,
                    patch_size=32, projection_dim=16),
    ),
}  # fmt: skip
"""Stable Video Diffusion: spatio-temporal UNet, temporal-decoder VAE, CLIP ViT-H/14 image encoder."""
SVD_SCHEDULER = dict(
    _SCALED_LINEAR, prediction_type="v_prediction", steps_offset=1, timestep_spacing="leading",
    interpolation_type="linear", sigma_max=700.0, sigma_min=0.002, timestep_type="continuous", use_karras_sigmas=True,
)  # fmt: skip


def offline_clip_tokenizer(folder: str | Path | None = None):
    """A CLIPTokenizer over a character vocabulary (printable ASCII, each also with ``</w>``; no
    merges; other characters become the unknown token), saved to ``folder`` when given."""
    from transformers import CLIPTokenizer

    symbols = [chr(code) for code in range(33, 127)]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), pad_token="!", model_max_length=77
        )
    if folder is not None:
        tokenizer.save_pretrained(str(folder))
    return tokenizer


def random_sdxl_pipeline(size: Size = "tiny", device="cpu", dtype=torch.float32, seed: int = 0):
    """A ``StableDiffusionXLPipeline`` with random weights (see the module docstring)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    arch = SDXL[size]
    tokenizer = offline_clip_tokenizer()
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch["unet"])
        vae = AutoencoderKL(**arch["vae"])
        text = CLIPTextModel(CLIPTextConfig(**arch["text"], **ids))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**arch["text_2"], **ids))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text, text_encoder_2=text_2, tokenizer=tokenizer, tokenizer_2=tokenizer,
        unet=unet, scheduler=EulerDiscreteScheduler(**arch["scheduler"]),
    )  # fmt: skip
    return pipe if dtype == torch.float32 else pipe.to(device, dtype)


def random_svd_pipeline(size: Size = "tiny", device="cpu", dtype=torch.float32, seed: int = 0):
    """A ``StableVideoDiffusionPipeline`` with random weights (see the module docstring)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    arch = SVD[size]
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**arch["unet"])
        vae = AutoencoderKLTemporalDecoder(**arch["vae"])
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**arch["vision"]))
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=vision, unet=unet, scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )  # fmt: skip
    return pipe if dtype == torch.float32 else pipe.to(device, dtype)
