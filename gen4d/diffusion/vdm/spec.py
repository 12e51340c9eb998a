"""The video model's description, stored as ``model.json`` next to its weights: :class:`VDMSpec`,
and the orbit cameras it generates (:func:`orbit_cameras`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gen4d.diffusion.vdm.model import check_variant
from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS

__all__ = ["VDMSpec", "orbit_cameras", "orbit_record"]


@dataclass
class VDMSpec:
    """How a Diffusion4D video model is built and used (stored as model.json next to its weights)."""

    variant: str = "image"
    """Condition type: image or static3d (I2VGen-XL architecture) or text (ModelScope T2V architecture)."""
    unet_config: dict = field(default_factory=dict)
    """diffusers constructor arguments of the UNet (empty: the base model's own config)."""
    scheduler: dict = field(default_factory=lambda: dict(SCHEDULE_PRESETS["stable_diffusion"]))
    """diffusers scheduler config of the noise schedule the model was trained with."""
    codec: str = "vae"
    """Latent space: 'vae' (the base model's AutoencoderKL) or 'pixel' (RGBA pixels, 4 channels)."""
    base: str | None = None
    """diffusers folder or hub id providing the base weights, the VAE and the CLIP encoders (None: none)."""
    num_frames: int = 24
    """Frames (orbit views) per video T."""
    size: int = 256
    """Image side in pixels (square videos)."""
    fps: int = 16
    """I2VGen-XL's fps micro-condition (a constant here)."""
    motion_freq_dim: int = 256
    """Size of the sinusoidal features of the motion magnitude."""
    motion_scale: float = 1000.0
    """m is multiplied by this before the sinusoid (m is a mean squared difference, typically < 0.1)."""
    null_condition: str = "drop_all"
    """Unconditional input of guidance and of training's condition dropout: 'drop_all' (eq. 3's eps(z, t))
    or 'keep_latents' (I2VGen-XL's pipeline: concatenated latents kept)."""
    base_null_condition: str = "keep_latents"
    """The same for the 3D-aware base model when it generates the static orbit."""
    camera_dim: int = 0
    """Size of the per-frame camera input of VideoMV's camera embedding (16: a flattened 4x4 camera-to-world
    matrix; gen4d.diffusion.vdm.camera); 0: the UNet takes no cameras."""
    motion_stats: dict = field(default_factory=dict)
    """Motion magnitudes m(V) of the training set (min, quantiles, max), to choose m at sampling."""
    orbit_cameras: dict = field(default_factory=dict)
    """Cameras of the training orbits (world_to_camera, fx, fy, cx, cy, width, height); empty: Diffusion4D's orbit."""
    notes: str = ""
    """Free text: how the weights were made."""

    def validate(self) -> VDMSpec:
        check_variant(self.variant)
        if self.codec not in ("vae", "pixel"):
            raise ValueError(f"unknown codec {self.codec!r}; expected 'vae' or 'pixel'")
        for name in ("null_condition", "base_null_condition"):
            if getattr(self, name) not in ("drop_all", "keep_latents"):
                raise ValueError(f"{name} must be 'drop_all' or 'keep_latents', got {getattr(self, name)!r}")
        if self.camera_dim < 0:
            raise ValueError(f"camera_dim must be >= 0, got {self.camera_dim}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        return self


def orbit_record(cameras) -> dict:
    return {
        "world_to_camera": cameras.world_to_camera.tolist(),
        "fx": cameras.fx.tolist(),
        "fy": cameras.fy.tolist(),
        "cx": cameras.cx.tolist(),
        "cy": cameras.cy.tolist(),
        "width": cameras.width,
        "height": cameras.height,
    }


def orbit_cameras(spec: VDMSpec):
    """The T orbit cameras of generated videos (times i / (T - 1)): the training orbit when recorded,
    else Diffusion4D's orbit (elevation 0, radius 2, fov 39.6 deg)."""
    from gen4d.cameras import Cameras, diffusion4d_orbit

    count = spec.num_frames
    times = torch.linspace(0, 1, count)
    record = spec.orbit_cameras
    if not record:
        return diffusion4d_orbit(count, size=spec.size).with_times(times)
    cams = Cameras(
        world_to_camera=torch.tensor(record["world_to_camera"], dtype=torch.float32),
        fx=torch.tensor(record["fx"]),
        fy=torch.tensor(record["fy"]),
        cx=torch.tensor(record["cx"]),
        cy=torch.tensor(record["cy"]),
        width=int(record["width"]),
        height=int(record["height"]),
        times=times,
    )
    if len(cams) != count:
        raise ValueError(f"model.json records {len(cams)} orbit cameras for {count} frames")
    return cams.resized(spec.size, spec.size)
