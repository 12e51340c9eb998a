"""VideoMV's per-frame camera embedding for gen4d's video UNets (optional; ``VDMSpec.camera_dim``).

VideoMV (the 3D-aware base model Diffusion4D starts from) adds to I2VGen-XL a 2-layer MLP of each
frame's camera (16 numbers: a flattened 4x4 matrix), whose output is added to the timestep
embedding of that frame, after the per-video embedding is repeated over the frames, so every
ResNet block of the UNet sees time + fps + camera(frame).

diffusers' video UNets compute one embedding per video and repeat it over the frames inside their
``forward``. Rather than fork that ``forward``, :func:`add_camera_embedding` installs a
:class:`CameraEmbedding` as ``unet.camera_embedding`` (its own keys in the state dict) and a
forward pre-hook on every down, mid and up block that adds the per-frame camera embedding to the
``temb`` those blocks receive (the only consumers of the embedding). The cameras of a call reach
the hooks through :func:`camera_input`, a context manager that :func:`gen4d.diffusion.vdm.model.predict`
enters around the UNet call when ``VideoCondition.camera`` is set; outside it the hooks add
nothing (the base UNet's output is unchanged, as in VideoMV without ``camera_data``).

Camera features (:func:`camera_features`): VideoMV's data loader reads each view's camera as an
OpenCV-style camera-to-world matrix (x right, y down, z forward) and flattens it row-major; gen4d's
cameras are OpenCV too, so the features are ``camera_to_world.reshape(T, 16)``. The world frame
and scale of VideoMV's own renders (their Objaverse renders' axes and camera distance) were read
from their code, not verified against released weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from gen4d._checks import check_shape

__all__ = [
    "CameraEmbedding",
    "add_camera_embedding",
    "has_camera_embedding",
    "camera_input",
    "camera_features",
    "VIDEOMV_CAMERA_DIM",
]

VIDEOMV_CAMERA_DIM = 16
"""VideoMV's camera input: a flattened 4x4 camera-to-world matrix."""


class CameraEmbedding(nn.Module):
    """camera (N, camera_dim) -> (N, embed_dim): Linear, SiLU, Linear (last layer zero-initialised,
    so a freshly added embedding leaves the UNet's output unchanged)."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)
        self.active: torch.Tensor | None = None  # (B * T, embed_dim) while inside camera_input()

    @property
    def camera_dim(self) -> int:
        return self.linear_1.in_features

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(camera)))

    def add_to_temb(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook of a UNet block: temb (B * T, E) += the active camera embedding."""
        if self.active is None:
            return None
        if "temb" in kwargs:
            kwargs["temb"] = self._added(kwargs["temb"])
            return args, kwargs
        if len(args) >= 2:  # diffusers calls the mid block as mid_block(sample, emb, ...)
            return (args[0], self._added(args[1]), *args[2:]), kwargs
        raise RuntimeError(f"{type(module).__name__} was called without a timestep embedding (temb)")

    def _added(self, temb: torch.Tensor) -> torch.Tensor:
        if temb.shape != self.active.shape:
            raise ValueError(
                f"camera embedding {tuple(self.active.shape)} does not match the UNet's per-frame timestep "
                f"embedding {tuple(temb.shape)}; pass one camera per frame (VideoCondition.camera (B, T, D))"
            )
        return temb + self.active.to(temb.dtype)


def _blocks(unet: nn.Module) -> list[nn.Module]:
    return [*unet.down_blocks, unet.mid_block, *unet.up_blocks]


def add_camera_embedding(unet: nn.Module, camera_dim: int = VIDEOMV_CAMERA_DIM) -> nn.Module:
    """Install a zero-initialised per-frame camera embedding in ``unet`` (in place; returns it)."""
    if camera_dim < 1:
        raise ValueError(f"camera_dim must be >= 1, got {camera_dim}")
    if has_camera_embedding(unet):
        if unet.camera_embedding.camera_dim != camera_dim:
            raise ValueError(f"the UNet already has a {unet.camera_embedding.camera_dim}-d camera embedding")
        return unet
    embed_dim = unet.time_embedding.linear_2.out_features
    param = unet.time_embedding.linear_1.weight
    embedding = CameraEmbedding(camera_dim, embed_dim).to(device=param.device, dtype=param.dtype)
    unet.camera_embedding = embedding
    # A bound method: copy.deepcopy(unet) rebinds the copied hooks to the copied embedding.
    for block in _blocks(unet):
        block.register_forward_pre_hook(embedding.add_to_temb, with_kwargs=True)
    return unet


def has_camera_embedding(unet: nn.Module) -> bool:
    return isinstance(getattr(unet, "camera_embedding", None), CameraEmbedding)


@contextlib.contextmanager
def camera_input(unet: nn.Module, camera: torch.Tensor | None) -> Iterator[None]:
    """Within the block, calls of ``unet`` add the embedding of ``camera`` (B, T, camera_dim) to
    each frame's timestep embedding. ``camera`` None: nothing is added."""
    if camera is None:
        yield
        return
    if not has_camera_embedding(unet):
        raise ValueError(
            "cameras were given but this UNet has no camera embedding (VDMSpec.camera_dim = 0); "
            "drop VideoCondition.camera or use a model converted from VideoMV"
        )
    embedding: CameraEmbedding = unet.camera_embedding
    check_shape("condition.camera", camera, ("B", "T", embedding.camera_dim))
    param = embedding.linear_1.weight
    embedding.active = embedding(camera.reshape(-1, camera.shape[-1]).to(param))
    try:
        yield
    finally:
        embedding.active = None


def camera_features(cameras) -> torch.Tensor:
    """(T, 16) VideoMV camera input of gen4d cameras: OpenCV camera-to-world, flattened row-major."""
    return cameras.camera_to_world.reshape(len(cameras), 16).float()
