"""``.splat4d``: a compact file for a 4D Gaussian asset (canonical appearance + quantised per-frame motion).

A per-frame PLY sequence stores every attribute of every Gaussian as float32 in every frame (about
68 bytes per Gaussian per frame at SH degree 0). Most of that does not change over time: colours and
opacity are canonical in gen4d's fields, and scales change only when the field deforms them. A
``.splat4d`` file stores the static attributes once and, per frame, 16-bit positions and 8-bit
rotations (plus scales / opacities only when they vary). Layout (little-endian; offsets in bytes;
docs/export.md has the same table):

====== =========================== =====================================================================
offset type                        content
====== =========================== =====================================================================
0      8 bytes                     magic ``b"SPLAT4D\\0"``
8      uint32                      format version (1)
12     uint32                      N, Gaussians
16     uint32                      F, frames (frame f is at time f / (F - 1), 0 when F = 1)
20     uint32                      K, SH coefficients per colour channel ((degree + 1)^2)
24     uint32                      flags: bit 0 = scales vary per frame, bit 1 = opacities vary
28     float32                     frames per second (playback hint)
32     float32 x 3, float32 x 3    position box: min xyz, max xyz over all frames
56     float32 x 2                 log-scale range: min, max (over all frames)
64     N x K x 3 float16           SH coefficients (canonical)
...    N x uint8 (or F x N)        opacity, sigmoid quantised to 0..255 (per frame if flag bit 1)
...    N x 3 x uint8 (or F x ...)  log-scales, quantised linearly in the log-scale range (per frame if bit 0)
...    F x N x 3 x uint16          positions, quantised linearly in the position box
...    F x N x 4 x int8            unit quaternions (w, x, y, z) x 127, sign chosen so that w >= 0
====== =========================== =====================================================================

Quantisation: positions to 1/65535 of the box side, rotations to 1/127 per component, log-scales to
1/255 of their range. :func:`read_splat4d` returns the decoded frames as :class:`Gaussians`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen4d.export.ply_sequence import frame_times
from gen4d.gaussians.core import Gaussians
from gen4d.io import atomic_path

__all__ = ["MAGIC", "Splat4D", "encode_splat4d", "write_splat4d", "read_splat4d", "decode_splat4d", "is_splat4d"]

MAGIC = b"SPLAT4D\0"
VERSION = 1
_HEADER = struct.Struct("<8sIIIIIf3f3f2f")  # 64 bytes


@dataclass(frozen=True)
class Splat4D:
    """A decoded ``.splat4d`` file: ``frame(f) -> Gaussians (N, ...)``."""

    sh: torch.Tensor  # (N, K, 3)
    opacity_logits: torch.Tensor  # (N,) or (F, N)
    log_scales: torch.Tensor  # (N, 3) or (F, N, 3)
    means: torch.Tensor  # (F, N, 3)
    quats: torch.Tensor  # (F, N, 4)
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.means.shape[0])

    @property
    def times(self) -> torch.Tensor:
        return frame_times(self.num_frames)

    def at(self, times: torch.Tensor) -> Gaussians:
        """Gaussians (B, N, ...) of the stored frames nearest to ``times`` (B,) in [0, 1]."""
        last = self.num_frames - 1
        index = (torch.as_tensor(times, dtype=torch.float32).reshape(-1).clamp(0, 1) * last).round().long().cpu()
        frames = [self.frame(int(i)) for i in index]
        return Gaussians(
            **{name: torch.stack([getattr(f, name) for f in frames]) for name in Gaussians.__dataclass_fields__}
        )

    def render(self, cameras, background: torch.Tensor | None = None, options=None):
        """Render every camera at its own time (nearest stored frame), as ``DynamicGaussians.render``."""
        from gen4d.render import RenderOptions, render

        return render(self.at(cameras.times), cameras, background, options or RenderOptions())

    def frame(self, index: int) -> Gaussians:
        pick = lambda x, per_point_dims: x[index] if x.dim() > per_point_dims else x  # noqa: E731
        return Gaussians(
            means=self.means[index],
            log_scales=pick(self.log_scales, 2),
            quats=self.quats[index],
            opacity_logits=pick(self.opacity_logits, 1),
            sh=self.sh,
        )


def is_splat4d(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the ``.splat4d`` magic."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def _quantise(values: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int) -> np.ndarray:
    span = np.where(high > low, high - low, 1.0)
    return np.clip(np.rint((values - low) / span * levels), 0, levels)


def _dequantise(codes: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int) -> np.ndarray:
    return low + codes.astype(np.float32) / levels * (high - low)


@torch.no_grad()
def encode_splat4d(frames: Gaussians, fps: float = 24.0) -> bytes:
    """The ``.splat4d`` bytes of ``frames`` (Gaussians (F, N, ...), e.g. ``model.at(frame_times(F))``,
    frame f at time f / (F - 1)). SH colours and (when constant over the frames) scales and
    opacities are taken from frame 0."""
    if not frames.batched:
        raise ValueError("write_splat4d: expected Gaussians with a frame dimension (F, N, ...)")
    frames = frames.detach().to("cpu", torch.float32)
    count_frames, count = frames.means.shape[:2]
    if count_frames < 1 or count < 1:
        raise ValueError(f"write_splat4d: nothing to write ({count_frames} frames, {count} Gaussians)")
    if not torch.equal(frames.sh, frames.sh[:1].expand_as(frames.sh)):
        raise ValueError("write_splat4d: the colours change over time; splat4d v1 stores canonical colours only")
    scales_vary = not torch.equal(frames.log_scales, frames.log_scales[:1].expand_as(frames.log_scales))
    opacity_vary = not torch.equal(frames.opacity_logits, frames.opacity_logits[:1].expand_as(frames.opacity_logits))
    means = frames.means.numpy()
    box_low, box_high = means.reshape(-1, 3).min(0), means.reshape(-1, 3).max(0)
    log_scales = frames.log_scales if scales_vary else frames.log_scales[:1]
    scale_low, scale_high = float(log_scales.min()), float(log_scales.max())
    quats = F.normalize(frames.quats, dim=-1)
    quats = torch.where(quats[..., :1] < 0, -quats, quats)
    sh = frames.sh[0]
    opacity = torch.sigmoid(frames.opacity_logits if opacity_vary else frames.opacity_logits[:1])
    header = _HEADER.pack(
        MAGIC, VERSION, count, count_frames, sh.shape[1], int(scales_vary) | (int(opacity_vary) << 1), float(fps),
        *box_low.tolist(), *box_high.tolist(), scale_low, scale_high,
    )  # fmt: skip
    parts = [
        header,
        sh.numpy().astype("<f2").tobytes(),
        np.rint(opacity.numpy() * 255).astype(np.uint8).tobytes(),
        _quantise(log_scales.numpy(), np.float32(scale_low), np.float32(scale_high), 255).astype(np.uint8).tobytes(),
        _quantise(means, box_low, box_high, 65535).astype("<u2").tobytes(),
        np.clip(np.rint(quats.numpy() * 127), -127, 127).astype(np.int8).tobytes(),
    ]
    return b"".join(parts)


def write_splat4d(frames: Gaussians, path: str | os.PathLike, fps: float = 24.0) -> Path:
    """Write :func:`encode_splat4d` of ``frames`` to ``path`` atomically."""
    data = encode_splat4d(frames, fps)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_splat4d(path: str | os.PathLike) -> Splat4D:
    """Decode a file written by :func:`write_splat4d` (sizes checked against the header)."""
    path = Path(path)
    return decode_splat4d(path.read_bytes(), str(path))


def decode_splat4d(data: bytes, path: str = "splat4d data") -> Splat4D:
    """Decode the bytes of a ``.splat4d`` file; ``path`` names them in errors."""
    if len(data) < _HEADER.size or data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{path}: not a .splat4d file (it does not start with {MAGIC!r})")
    fields = _HEADER.unpack_from(data)
    _, version, count, count_frames, coeffs, flags, fps = fields[:7]
    box_low, box_high = np.array(fields[7:10], np.float32), np.array(fields[10:13], np.float32)
    scale_low, scale_high = np.float32(fields[13]), np.float32(fields[14])
    if version != VERSION:
        raise ValueError(f"{path}: splat4d version {version}; this gen4d reads version {VERSION}")
    scale_frames = count_frames if flags & 1 else 1
    opacity_frames = count_frames if flags & 2 else 1
    sizes = [
        count * coeffs * 3 * 2,
        opacity_frames * count,
        scale_frames * count * 3,
        count_frames * count * 3 * 2,
        count_frames * count * 4,
    ]
    if len(data) != _HEADER.size + sum(sizes):
        raise ValueError(
            f"{path}: {len(data)} bytes, the header implies {_HEADER.size + sum(sizes)}: truncated or damaged"
        )
    offsets = np.cumsum([_HEADER.size] + sizes)
    chunk = lambda i, dtype: np.frombuffer(data, dtype, sizes[i] // np.dtype(dtype).itemsize, offsets[i])  # noqa: E731
    sh = chunk(0, "<f2").astype(np.float32).reshape(count, coeffs, 3)
    opacity = chunk(1, np.uint8).astype(np.float32).reshape(opacity_frames, count) / 255
    log_scales = _dequantise(chunk(2, np.uint8).reshape(scale_frames, count, 3), scale_low, scale_high, 255)
    means = _dequantise(chunk(3, "<u2").reshape(count_frames, count, 3), box_low, box_high, 65535)
    quats = chunk(4, np.int8).astype(np.float32).reshape(count_frames, count, 4) / 127
    opacity_logits = torch.logit(torch.from_numpy(opacity).clamp(1e-4, 1 - 1e-4))
    log_scales = torch.from_numpy(log_scales)
    return Splat4D(
        sh=torch.from_numpy(sh),
        opacity_logits=opacity_logits if flags & 2 else opacity_logits[0],
        log_scales=log_scales if flags & 1 else log_scales[0],
        means=torch.from_numpy(means),
        quats=F.normalize(torch.from_numpy(quats), dim=-1),
        fps=float(fps),
    )
