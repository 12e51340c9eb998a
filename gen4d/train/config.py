"""Configs and presets of ``gen4d train-vdm`` (typed dataclasses; every field is a CLI option)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gen4d.config import check_non_negative, check_positive, check_range

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "TRAIN_PRESETS"]


@dataclass
class DataConfig:
    """Where the training clips come from."""

    paths: tuple[str, ...] = ()
    """Dataset folders (manifest.json from `gen4d render`, or Diffusion4D format) or folders holding many."""
    size: int = 64
    """Image side the clips are resampled to (pixels)."""
    num_frames: int = 24
    """Views per orbit T (every clip must have exactly T orbit and T static-orbit views)."""
    cache: str | None = None
    """Folder for cached encodings (latents, CLIP embeddings), shared by runs and processes; None: in memory only."""
    captions: str | None = None
    """JSON file {dataset name: caption} (text variant)."""
    shards: str | None = None
    """A latent cache from `gen4d cache-latents` (index.json + safetensors shards), streamed: every process
    reads a disjoint share of the shards per epoch; replaces paths (image / static3d variants)."""

    def __post_init__(self) -> None:
        check_positive(self, "size", "num_frames")


@dataclass
class ModelConfig:
    """What is trained."""

    variant: str = "image"
    """Condition type: image, static3d (I2VGen-XL architecture) or text (ModelScope T2V architecture)."""
    base: str | None = None
    """diffusers folder or hub id of the pretrained 3D-aware model to fine-tune (e.g. VideoMV weights in
    I2VGen-XL layout); None: train a UNet from scratch (arch) or from `init`."""
    init: str | None = None
    """A gen4d model folder (e.g. a task=static run's model/) to start from; it also becomes the frozen
    3D-aware base model of eq. 3."""
    arch: str = "small"
    """UNet preset for training from scratch: tiny, small or full (gen4d.diffusion.vdm.presets)."""
    codec: str = "pixel"
    """Latent space: 'pixel' (RGBA, from scratch) or 'vae' (the base model's VAE)."""
    schedule: str = "pixel_cosine_v"
    """Noise schedule preset for training from scratch (a base / init model brings its own)."""
    motion_scale: float = 1000.0
    """m is multiplied by this before the motion embedding's sinusoid."""
    motion_freq_dim: int = 256
    """Sinusoidal feature size of the motion embedding."""
    null_condition: str = "drop_all"
    """Condition dropout / unconditional input: drop_all (eq. 3's eps(z, t)) or keep_latents (I2VGen-XL's)."""
    fps: int = 8
    """I2VGen-XL fps micro-condition (constant)."""
    dropout: float | None = None
    """Set every dropout layer of the UNet to this rate (None: the architecture's own, e.g. 0.1 in the
    temporal convolutions; 0 makes N-process runs match 1-process runs exactly)."""

    def __post_init__(self) -> None:
        check_positive(self, "motion_scale", "motion_freq_dim", "fps")
        if self.dropout is not None:
            check_range(self, "dropout", 0.0, 1.0, high_open=True)


@dataclass
class OptimConfig:
    """Optimisation and the accelerate setup."""

    steps: int = 6000
    """Optimiser steps (the paper: 6k)."""
    minutes: float = 0.0
    """Stop (with a checkpoint and the exported model) after this many minutes of training; 0: no limit."""
    batch_size: int = 128
    """Global batch: per-process batch x processes x grad_accum (the paper: 128)."""
    grad_accum: int = 1
    """Gradient accumulation steps per optimiser step."""
    lr: float = 3e-5
    """Learning rate (constant after warm-up; the paper: 3e-5)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0: off)."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, fp16 or bf16."""
    ema_decay: float = 0.999
    """EMA decay of the exported weights (0: export the raw weights)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower; where the UNet supports it)."""

    def __post_init__(self) -> None:
        check_positive(self, "steps", "batch_size", "grad_accum", "lr")
        check_non_negative(self, "minutes", "warmup_steps", "weight_decay", "grad_clip")
        check_range(self, "ema_decay", 0.0, 1.0, high_open=True)


@dataclass
class TrainConfig:
    """gen4d train-vdm: fine-tune (or train) the Diffusion4D video model with L = L_ldm + omega L_mr."""

    out: str = "runs/vdm"
    """Run folder: config.json, checkpoints/, metrics.jsonl, tb/ (tensorboard), model/ (exported)."""
    task: str = "4d"
    """4d: orbits V with motion embedding and L_mr (Diffusion4D); static: static orbits V-bar without
    motion (trains a 3D-aware base model, the role VideoMV plays in the paper)."""
    mr_weight: float = 1.0
    """omega, the weight of the motion reconstruction loss L_mr (0: off)."""
    uncond_prob: float = 0.1
    """Probability of dropping the condition (and motion) of a sample, for classifier-free guidance."""
    seed: int = 0
    """Seed of the data order, noise, timesteps and condition dropout."""
    log_every: int = 10
    """Log to metrics.jsonl / tensorboard every N steps."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Number of newest checkpoints kept."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimisation."""

    def __post_init__(self) -> None:
        check_non_negative(self, "mr_weight")
        check_range(self, "uncond_prob", 0.0, 1.0, high_open=True)
        check_positive(self, "log_every", "checkpoint_every", "keep_checkpoints")

    def validate(self) -> TrainConfig:
        from gen4d.diffusion.vdm.model import check_variant

        check_variant(self.model.variant)
        if self.task not in ("4d", "static"):
            raise ValueError(f"task must be '4d' or 'static', got {self.task!r}")
        if self.task == "static" and self.model.variant == "static3d":
            raise ValueError(
                "task=static with the static3d variant would condition on its own target; "
                "train the static base model with variant image or text"
            )
        if self.model.codec not in ("pixel", "vae"):
            raise ValueError(f"model.codec must be 'pixel' or 'vae', got {self.model.codec!r}")
        if self.model.codec == "vae" and not (self.model.base or self.model.init):
            raise ValueError("model.codec=vae needs a base model (--model.base) to take the VAE from")
        if self.optim.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"optim.mixed_precision must be no, fp16 or bf16, got {self.optim.mixed_precision!r}")
        if not self.data.paths and not self.data.shards:
            raise ValueError(
                "no training data: pass dataset folders with --data.paths (or positional DATA), or a latent cache "
                "with --data.shards"
            )
        if self.data.shards and self.model.variant == "text":
            raise ValueError("--data.shards: the latent cache holds no captions; train the text variant from folders")
        if self.optim.batch_size < 1 or self.optim.grad_accum < 1 or self.optim.steps < 1:
            raise ValueError("optim.batch_size, optim.grad_accum and optim.steps must be >= 1")
        if not 0 <= self.uncond_prob < 1:
            raise ValueError(f"uncond_prob must lie in [0, 1), got {self.uncond_prob}")
        return self


_PAPER = TrainConfig(
    model=ModelConfig(variant="image", base="ali-vilab/i2vgen-xl", codec="vae", null_condition="keep_latents", fps=16),
    data=DataConfig(size=256, num_frames=24),
    optim=OptimConfig(steps=6000, batch_size=128, lr=3e-5, mixed_precision="bf16", ema_decay=0.0),
)

TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The paper's fine-tuning: I2VGen-XL-architecture 3D-aware base (swap in VideoMV weights), 6k steps,
    # batch 128, lr 3e-5, 24 x 256 x 256.
    "paper": _PAPER,
    # Our small pixel-space model trained from scratch (24 x 64 x 64 RGBA).
    "small": TrainConfig(
        model=ModelConfig(variant="image", arch="small", codec="pixel", schedule="pixel_cosine_v"),
        data=DataConfig(size=64, num_frames=24),
        optim=OptimConfig(
            steps=100000, batch_size=16, lr=2e-4, warmup_steps=200, ema_decay=0.995, mixed_precision="bf16"
        ),
        mr_weight=1.0,
        checkpoint_every=1000,
    ),
    # CPU tests: a 2-level UNet, 4 frames, 16 x 16.
    "tiny": TrainConfig(
        model=ModelConfig(variant="image", arch="tiny", codec="pixel", schedule="pixel_cosine_v"),
        data=DataConfig(size=16, num_frames=4),
        optim=OptimConfig(steps=6, batch_size=2, lr=1e-3, ema_decay=0.9),
        log_every=1,
        checkpoint_every=3,
    ),
}


def preset(name: str) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(TRAIN_PRESETS)}")
    return replace(TRAIN_PRESETS[name])
