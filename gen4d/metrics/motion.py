"""Motion magnitude m(V) (Diffusion4D, eq. 1) - numpy or torch, and importable without torch.

Definition used everywhere in gen4d::

    m(V) = 1/T * sum_i || I_i - Ibar_i ||^2,   ||x||^2 := mean of x^2 over every element of a frame

with ``I_i`` frame i of the orbital video V and ``Ibar_i`` frame i of the static orbit V-bar
(same camera, object frozen at t = 0). The squared norm is normalised by the number of elements
of a frame (pixels x channels), so m is a mean squared difference: independent of resolution,
in [0, 1] for images in [0, 1]. Because 1/T sum_i mean(.) is a mean over all T x H x W x C
elements, the layout of a frame does not matter ((H, W, C), (C, H, W), or a latent (C, h, w)):
the same function gives the latent version m(z0) = 1/T ||z0 - zbar0||^2 of the motion
reconstruction loss. (The paper leaves the norm's normalisation implicit; gen4d fixes it here.)

Images should be composited on a fixed background first (curation uses white); the function
itself does no compositing. Works on numpy arrays and torch tensors alike (differentiable with
torch); nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["motion_magnitude", "motion_from_sum"]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def motion_magnitude(video: Any, static: Any, batch_dims: int = 0) -> Any:
    """m(V) of ``video`` against its static counterpart.

    video, static: arrays or tensors of one shape ``(*batch, T, *frame)`` - ``batch_dims``
    leading batch axes, then time, then any frame layout (e.g. (T, H, W, 3) images in [0, 1] or
    (B, T, C, h, w) latents with ``batch_dims=1``).
    Returns a float (no batch axes) or an array / tensor of shape ``batch``.
    """
    torch_in = _is_torch(video) or _is_torch(static)
    if not torch_in:
        video = np.asarray(video, dtype=np.float64)
        static = np.asarray(static, dtype=np.float64)
    elif not (_is_torch(video) and _is_torch(static)):
        import torch  # one side is already a tensor, so torch is installed

        like = video if _is_torch(video) else static
        video = torch.as_tensor(video, dtype=like.dtype, device=like.device)
        static = torch.as_tensor(static, dtype=like.dtype, device=like.device)
    if tuple(video.shape) != tuple(static.shape):
        raise ValueError(
            f"motion_magnitude: video {tuple(video.shape)} and static {tuple(static.shape)} differ; "
            "expected the same (*batch, T, ...) shape (one static frame per video frame, same size)"
        )
    if video.ndim < batch_dims + 2:
        raise ValueError(
            f"motion_magnitude: expected (*batch, T, ...frame) with {batch_dims} batch axes and at least a "
            f"1-D frame, got shape {tuple(video.shape)}"
        )
    if video.shape[batch_dims] < 1:
        raise ValueError("motion_magnitude: the video has no frames (T = 0)")
    axes = tuple(range(batch_dims, video.ndim))
    value = ((video - static) ** 2).mean(axis=axes)
    if not torch_in and batch_dims == 0:
        return float(value)
    return value


def motion_from_sum(value: float, height: int, width: int, channels: int = 3) -> float:
    """gen4d's m (a mean over a frame's elements) from the paper's literal eq. 1, where ||.||^2 sums
    over the ``height x width x channels`` elements of a frame: ``m = value / (height * width * channels)``
    (images in [0, 1] in both; a 256 x 256 RGB sum of 1966.08 is gen4d's 0.01)."""
    if height <= 0 or width <= 0 or channels <= 0:
        raise ValueError(f"motion_from_sum: expected a positive frame size, got {height} x {width} x {channels}")
    return float(value) / (height * width * channels)
