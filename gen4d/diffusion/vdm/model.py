"""The Diffusion4D video denoiser: a diffusers video UNet plus the motion-magnitude embedding.

Two architectures, as in the paper (section 3.3):

* ``image`` and ``static3d`` variants: diffusers' ``I2VGenXLUNet`` (I2VGen-XL). The CLIP image
  embedding enters through cross-attention and the condition latents are concatenated with the
  noisy latents. ``image``: the latent of the condition image in frame 0 and I2VGen-XL's frame
  position masks ((i) / (T - 1)) in frames 1..T-1. ``static3d``: the latents of the static orbit
  V-bar, frame by frame.
* ``text`` variant: diffusers' ``UNet3DConditionModel`` (ModelScope T2V) with CLIP text tokens in
  cross-attention.

The motion embedding (:class:`gen4d.diffusion.vdm.motion.MotionEmbedding`) is added to the UNet's
timestep embedding by replacing ``unet.time_embedding`` with :class:`MotionTimestepEmbedding`, which
keeps the original layers under their original names (so a base model's state dict loads
unchanged, and a fine-tuned state dict is the base's keys plus ``time_embedding.motion.*``). The
motion magnitude reaches it through the UNet's documented ``timestep_cond`` argument as a packed
``(B, 2)`` tensor ``[m, present]``; :func:`predict` builds it from an explicit
:class:`VideoCondition`, so callers never touch that packing.

Layout of every video tensor here: diffusers' ``(B, C, T, h, w)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import nn

from gen4d._checks import check_shape
from gen4d.diffusion.vdm.camera import camera_input
from gen4d.diffusion.vdm.motion import MotionEmbedding

__all__ = [
    "Variant",
    "VARIANTS",
    "UNET_CLASSES",
    "MotionTimestepEmbedding",
    "add_motion_embedding",
    "has_motion_embedding",
    "VideoCondition",
    "null_condition",
    "predict",
    "build_unet",
    "image_condition_latents",
    "check_variant",
]

Variant = Literal["image", "static3d", "text"]
VARIANTS: tuple[str, ...] = ("image", "static3d", "text")
UNET_CLASSES = {"image": "I2VGenXLUNet", "static3d": "I2VGenXLUNet", "text": "UNet3DConditionModel"}
"""diffusers class of the denoiser of each variant."""

DIFFUSION_HINT = "pip install 'gen4d[diffusion]'"


def _diffusers():
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(f"the Diffusion4D video model needs diffusers: {DIFFUSION_HINT}") from err
    return diffusers


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown video-model variant {variant!r}; expected one of {list(VARIANTS)}")
    return variant


def build_unet(variant: str, config: dict) -> nn.Module:
    """A randomly initialised diffusers UNet of the variant's class from constructor arguments, its
    attention sliced over the batch (:func:`limit_attention_batch`)."""
    cls = getattr(_diffusers(), UNET_CLASSES[check_variant(variant)])
    config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if not k.startswith("_")}
    return limit_attention_batch(cls(**config))


class MotionTimestepEmbedding(nn.Module):
    """A diffusers ``TimestepEmbedding`` plus a motion-magnitude embedding added to its output.

    ``condition`` (the UNet's ``timestep_cond``) is None (no motion: exactly the base embedding) or
    a ``(B, 2)`` tensor of ``[m, present]``; rows with present = 0 get no motion term.
    """

    def __init__(self, base: nn.Module, motion: MotionEmbedding):
        super().__init__()
        if getattr(base, "cond_proj", None) is not None:
            raise ValueError(
                "this UNet's time embedding already takes a timestep condition (cond_proj); "
                "the motion embedding needs that channel free"
            )
        # The base layers keep their names so state dicts stay compatible with the base model.
        self.linear_1 = base.linear_1
        self.act = base.act
        self.linear_2 = base.linear_2
        self.post_act = base.post_act
        self.cond_proj = None
        self.motion = motion

    def forward(self, sample: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.linear_1(sample)
        if self.act is not None:
            emb = self.act(emb)
        emb = self.linear_2(emb)
        if self.post_act is not None:
            emb = self.post_act(emb)
        if condition is None:
            return emb
        motion, present = condition[:, 0].float(), condition[:, 1]
        return emb + self.motion(motion).to(emb.dtype) * present[:, None].to(emb.dtype)


def add_motion_embedding(unet: nn.Module, freq_dim: int = 256, scale: float = 1000.0) -> nn.Module:
    """Install a zero-initialised motion embedding in ``unet`` (in place; returns it). The output of
    the UNet is unchanged until the embedding's last layer is trained away from zero."""
    if has_motion_embedding(unet):
        return unet
    base = unet.time_embedding
    embed_dim = base.linear_2.out_features
    motion = MotionEmbedding(embed_dim, freq_dim=freq_dim, scale=scale)
    param = base.linear_1.weight
    unet.time_embedding = MotionTimestepEmbedding(base, motion.to(device=param.device, dtype=param.dtype))
    return unet


def has_motion_embedding(unet: nn.Module) -> bool:
    return isinstance(getattr(unet, "time_embedding", None), MotionTimestepEmbedding)


@dataclass
class VideoCondition:
    """The encoded inputs that condition the denoiser, for a batch of B videos."""

    text: torch.Tensor | None = None
    """(B, L, D) text tokens for cross-attention (CLIP text encoder output); None = no text tokens
    (I2VGen-XL variants then get an empty token list; required by the text variant)."""
    image_embeds: torch.Tensor | None = None
    """(B, D) CLIP image embedding of the condition image (image / static3d); None = zeros (models
    trained without an image encoder)."""
    latents: torch.Tensor | None = None
    """(B, 4, T, h, w) latents concatenated with the noisy latents (image / static3d variants)."""
    motion: torch.Tensor | None = None
    """(B,) motion magnitude m (gen4d.metrics.motion units); None = no motion embedding at all."""
    motion_mask: torch.Tensor | None = None
    """(B,) 1 where ``motion`` applies, 0 where the row is motion-free (e.g. the unconditional
    row of a guidance batch); None = all 1."""
    camera: torch.Tensor | None = None
    """(B, T, D) per-frame camera features for a UNet with VideoMV's camera embedding
    (:mod:`gen4d.diffusion.vdm.camera`); None = no camera term. Kept in the unconditional input."""

    @property
    def batch_size(self) -> int | None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                return int(value.shape[0])
        return None

    def to(self, device=None, dtype=None) -> VideoCondition:
        def move(name, value):
            if value is None:
                return None
            keep = name in ("motion", "motion_mask")  # motion stays float32 for the sinusoid
            return value.to(device=device, dtype=None if keep else dtype)

        return VideoCondition(**{f.name: move(f.name, getattr(self, f.name)) for f in fields(self)})

    def without_motion(self) -> VideoCondition:
        return replace(self, motion=None, motion_mask=None)

    def with_motion(self, motion: torch.Tensor | float | None) -> VideoCondition:
        if motion is None:
            return self.without_motion()
        size = self.batch_size or 1
        device = next((getattr(self, f.name).device for f in fields(self) if getattr(self, f.name) is not None), None)
        motion = torch.as_tensor(motion, dtype=torch.float32, device=device).reshape(-1).expand(size).clone()
        return replace(self, motion=motion, motion_mask=None)

    def index(self, index: torch.Tensor | slice | Sequence[int]) -> VideoCondition:
        return VideoCondition(
            **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index] for f in fields(self)}
        )

    def packed_motion(self) -> torch.Tensor | None:
        """(B, 2) ``[m, present]`` for :class:`MotionTimestepEmbedding`, or None."""
        if self.motion is None:
            return None
        check_shape("condition.motion", self.motion, ("B",))
        mask = torch.ones_like(self.motion) if self.motion_mask is None else self.motion_mask.to(self.motion)
        check_shape("condition.motion_mask", mask, (self.motion.shape[0],))
        return torch.stack([self.motion.float(), mask.float()], dim=-1)

    @staticmethod
    def cat(conditions: Sequence[VideoCondition]) -> VideoCondition:
        """Concatenate along the batch; rows of conditions without motion become motion-free rows."""
        sizes = [c.batch_size for c in conditions]
        if any(s is None for s in sizes):
            raise ValueError("VideoCondition.cat: every condition needs at least one tensor to know its batch size")
        out = {}
        for f in fields(VideoCondition):
            if f.name in ("motion", "motion_mask"):
                continue
            values = [getattr(c, f.name) for c in conditions]
            if all(v is None for v in values):
                out[f.name] = None
            elif any(v is None for v in values):
                raise ValueError(f"VideoCondition.cat: {f.name} is set in some conditions and not in others")
            else:
                out[f.name] = torch.cat(values, dim=0)
        if any(c.motion is not None for c in conditions):
            motions, masks = [], []
            for c, size in zip(conditions, sizes):
                if c.motion is None:
                    device = next(v.device for v in out.values() if v is not None)
                    motions.append(torch.zeros(size, device=device))
                    masks.append(torch.zeros(size, device=device))
                else:
                    packed = c.packed_motion()
                    motions.append(packed[:, 0])
                    masks.append(packed[:, 1])
            out["motion"], out["motion_mask"] = torch.cat(motions), torch.cat(masks)
        return VideoCondition(**out)


def null_condition(
    condition: VideoCondition, null_text: torch.Tensor | None = None, keep_latents: bool = False
) -> VideoCondition:
    """The unconditional input eps(z_t, t) of classifier-free guidance for ``condition``: the empty
    prompt's tokens (``null_text`` (1, L, D); zeros when None), a zero image embedding, no motion,
    and zero condition latents unless ``keep_latents`` (I2VGen-XL's own pipeline keeps them); the
    cameras (geometry, not a condition to drop) are kept."""
    size = condition.batch_size
    text = condition.text
    if text is not None:
        if null_text is not None:
            if null_text.shape[-2:] != text.shape[-2:]:
                raise ValueError(
                    f"null_text {tuple(null_text.shape)} does not match the prompt tokens {tuple(text.shape)}"
                )
            text = null_text.to(text).expand(size, -1, -1)
        else:
            text = torch.zeros_like(text)
    image = None if condition.image_embeds is None else torch.zeros_like(condition.image_embeds)
    latents = condition.latents
    if latents is not None and not keep_latents:
        latents = torch.zeros_like(latents)
    return VideoCondition(text=text, image_embeds=image, latents=latents, camera=condition.camera)


class BatchChunkedAttnProcessor:
    """Runs an attention processor on slices of the batch of at most ``max_rows`` rows.

    Video UNets fold space into the batch for temporal attention: I2VGen-XL's ``transformer_in``
    and image-latent temporal encoder attend over ``B * h * w`` sequences of T tokens, 65536 for
    8-16 videos at 64 x 64 (pixel space). CUDA's fused attention kernels put the batch on a grid
    axis limited to 65535: on an H200 (torch 2.11) 32768 rows ran and 65536 failed with "CUDA error:
    invalid argument" (flash / efficient) or a failed cuDNN graph. Rows are independent, so slicing
    gives the same result within the kernels' rounding.
    """

    def __init__(self, inner, max_rows: int):
        self.inner = inner
        self.max_rows = int(max_rows)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        rows = hidden_states.shape[0]
        if rows <= self.max_rows or attention_mask is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        parts = []
        for start in range(0, rows, self.max_rows):
            piece = slice(start, start + self.max_rows)
            context = None if encoder_hidden_states is None else encoder_hidden_states[piece]
            parts.append(self.inner(attn, hidden_states[piece], context, None, **kwargs))
        return torch.cat(parts, 0)


def limit_attention_batch(unet: nn.Module, max_rows: int = 16384) -> nn.Module:
    """Wrap every attention processor of ``unet`` in :class:`BatchChunkedAttnProcessor` (processors
    already wrapped are left alone). :func:`build_unet` and the loaders in
    ``gen4d.diffusion.vdm.components`` do this; call it for a UNet made any other way. Returns ``unet``."""
    inner = getattr(unet, "module", unet)
    inner.set_attn_processor(
        {
            name: p if isinstance(p, BatchChunkedAttnProcessor) else BatchChunkedAttnProcessor(p, max_rows)
            for name, p in inner.attn_processors.items()
        }
    )
    return unet


def predict(
    unet: nn.Module,
    variant: str,
    sample: torch.Tensor,
    timesteps: torch.Tensor,
    condition: VideoCondition,
    fps: int = 16,
) -> torch.Tensor:
    """The raw network output (eps, v or x0 per the schedule) for noisy latents.

    sample: (B, C, T, h, w) noisy latents; timesteps: (B,) long; condition: B rows. Returns
    (B, C, T, h, w). Motion rows are applied only if the UNet has a motion embedding (it is an
    error to pass motion to one without). ``unet`` may be wrapped (DDP / accelerate): the wrapper
    is called, its ``.module`` inspected.
    """
    check_shape("sample", sample, ("B", "C", "T", "h", "w"))
    batch, _, frames, height, width = sample.shape
    timesteps = torch.as_tensor(timesteps, device=sample.device).reshape(-1)
    if timesteps.numel() == 1:
        timesteps = timesteps.expand(batch)
    check_shape("timesteps", timesteps, (batch,))
    if condition.batch_size not in (None, batch):
        raise ValueError(f"condition has {condition.batch_size} rows for a batch of {batch} videos")
    inner = getattr(unet, "module", unet)
    packed = condition.packed_motion()
    if packed is not None and not has_motion_embedding(inner):
        if bool((packed[:, 1] > 0).any()):
            raise ValueError(
                "motion was given but this UNet has no motion embedding; use add_motion_embedding "
                "or drop the motion (the 3D-aware base model takes none)"
            )
        packed = None
    dtype = next(inner.parameters()).dtype
    sample = sample.to(dtype)
    text = None if condition.text is None else condition.text.to(dtype)
    check_variant(variant)
    if variant == "text":
        if text is None:
            raise ValueError("the text variant needs text tokens (VideoCondition.text, (B, L, D)); pass a prompt")
        check_shape("condition.text", text, (batch, None, None))
        with camera_input(inner, condition.camera):
            return unet(sample, timesteps, encoder_hidden_states=text, timestep_cond=packed, return_dict=False)[0]
    cross_dim = inner.config.cross_attention_dim
    if condition.latents is None:
        what = "the condition image's latent" if variant == "image" else "the latents of the static orbit V-bar"
        raise ValueError(
            f"the {variant} variant needs condition latents ({what}, VideoCondition.latents "
            f"(B, 4, T, h, w)); provide the {'image' if variant == 'image' else 'static orbit'}"
        )
    check_shape("condition.latents", condition.latents, (batch, 4, frames, height, width))
    if text is None:
        text = sample.new_zeros(batch, 0, cross_dim)
    check_shape("condition.text", text, (batch, None, cross_dim))
    image = condition.image_embeds
    image = sample.new_zeros(batch, cross_dim) if image is None else image.to(dtype)
    check_shape("condition.image_embeds", image, (batch, cross_dim))
    fps_tensor = torch.full((batch,), int(fps), device=sample.device, dtype=torch.long)
    if condition.camera is not None:
        check_shape("condition.camera", condition.camera, (batch, frames, None))
    with camera_input(inner, condition.camera):
        return unet(
            sample,
            timesteps,
            fps=fps_tensor,
            image_latents=condition.latents.to(dtype),
            image_embeddings=image[:, None, :],
            encoder_hidden_states=text,
            timestep_cond=packed,
            return_dict=False,
        )[0]


def image_condition_latents(image_latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """I2VGen-XL's concatenated condition for an image: (B, 4, h, w) -> (B, 4, T, h, w) with the image
    latent in frame 0 and constant frame-position masks i / (T - 1) in frames i = 1..T-1."""
    check_shape("image_latent", image_latent, ("B", 4, "h", "w"))
    frames = [image_latent[:, :, None]]
    for i in range(1, num_frames):
        frames.append(torch.full_like(image_latent[:, :, None], i / max(num_frames - 1, 1)))
    return torch.cat(frames, dim=2)
