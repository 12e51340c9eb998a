"""STAG4D's SDS conditions: camera geometry, the Zero-1-to-3 guidance, the encoded conditions
(input frames and anchored views) and the choice of a condition for each random view."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gen4d.cameras import Cameras
from gen4d.data.dataset import MultiViewVideo
from gen4d.recon.stag4d.config import SDSConfig

__all__ = ["Conditions", "choose_conditions", "encode_conditions", "load_guidance", "on_white", "spherical"]


def spherical(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(elevation deg, azimuth deg in (-180, 180], radius) of camera centres (gen4d convention)."""
    centres = cameras.centers
    radius = centres.norm(dim=-1).clamp_min(1e-8)
    elevation = torch.rad2deg(torch.asin((centres[:, 2] / radius).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(centres[:, 0], -centres[:, 1]))
    return elevation, azimuth, radius


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    return (angle + 180.0) % 360.0 - 180.0


def _equivalent_radius(cameras: Cameras, radius: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """Distance at which a ``fov_deg`` camera sees the object as large as ``cameras`` do."""
    fov = torch.deg2rad(cameras.fov_y_deg.to(radius))
    return radius * torch.tan(fov / 2) / math.tan(math.radians(fov_deg) / 2)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_guidance(config: SDSConfig, device: torch.device):
    """The Zero-1-to-3 guidance for ``config.model`` ('random:full' / 'random:tiny' build random weights)."""
    from gen4d.diffusion.zero123 import Zero123Guidance

    dtype = torch_dtype(config.dtype, device)
    if config.model == "random:tiny":
        guidance = Zero123Guidance.tiny().to(device)
    elif config.model == "random:full":
        guidance = Zero123Guidance.full_size(device=device).to(device, dtype)
    else:
        guidance = Zero123Guidance.from_pretrained(config.model, device=device, dtype=dtype)
    guidance.condition_prep, guidance.posterior = config.condition_prep, config.posterior
    return guidance


@dataclass
class Conditions:
    """Zero-1-to-3 conditions of the input frames and the anchored views, with their poses."""

    frames: Any  # Zero123Condition (F)
    frame_pose: torch.Tensor  # (F, 3) elevation, azimuth, radius (equivalent at the render fov)
    views: Any | None  # Zero123Condition (M) or None
    view_pose: torch.Tensor | None  # (M, 3)
    view_frame: torch.Tensor | None  # (M,) frame index of each view


def on_white(video: MultiViewVideo) -> torch.Tensor:
    return video.composited((1.0, 1.0, 1.0))


def encode_conditions(guidance, reference: MultiViewVideo, views: MultiViewVideo | None, fov_deg: float) -> Conditions:
    """Encode every possible SDS condition once (input frames and anchored views, on white)."""
    images = on_white(reference).permute(0, 3, 1, 2)
    frames = guidance.encode_condition(images)
    el, az, r = spherical(reference.cameras)
    frame_pose = torch.stack([el, az, _equivalent_radius(reference.cameras, r, fov_deg)], -1)
    if views is None or len(views) == 0:
        return Conditions(frames, frame_pose, None, None, None)
    view_images = on_white(views).permute(0, 3, 1, 2)
    encoded = [guidance.encode_condition(view_images[i : i + 16]) for i in range(0, len(views), 16)]
    from gen4d.diffusion.zero123 import Zero123Condition

    view_cond = Zero123Condition.cat(encoded)
    vel, vaz, vr = spherical(views.cameras)
    view_pose = torch.stack([vel, vaz, _equivalent_radius(views.cameras, vr, fov_deg)], -1)
    return Conditions(frames, frame_pose, view_cond, view_pose, views.frames.clone())


def choose_conditions(
    conditions: Conditions,
    frames: torch.Tensor,
    azimuth: torch.Tensor,
    use_input: torch.Tensor,
    views_by_frame: dict[int, torch.Tensor],
    counts: dict[str, int],
) -> tuple[Any, torch.Tensor]:
    """The SDS condition of each random view k: the input frame ``frames[k]`` when ``use_input[k]``
    or that frame has no anchored views, else the frame's anchored view nearest in azimuth.
    Returns (the stacked Zero123Condition, (K, 3) condition poses); ``counts`` tallies the sources."""
    from gen4d.diffusion.zero123 import Zero123Condition

    items, poses = [], []
    for k in range(len(frames)):
        f = int(frames[k])
        candidates = views_by_frame.get(f)
        if bool(use_input[k]) or candidates is None:
            items.append(conditions.frames.index([f]))
            poses.append(conditions.frame_pose[f])
            counts["input"] += 1
        else:
            counts["view"] += 1
            pose = conditions.view_pose[candidates]
            nearest = int(candidates[_wrap(pose[:, 1] - azimuth[k]).abs().argmin()])
            items.append(conditions.views.index([nearest]))
            poses.append(conditions.view_pose[nearest])
    return Zero123Condition.cat(items), torch.stack(poses)
