"""Videos of 4D assets: orbit cameras sweeping view and time together, mp4 / gif writers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from gen4d.cameras import Cameras, orbit
from gen4d.io import atomic_path

__all__ = ["orbit_sweep", "to_uint8", "mp4_available", "write_mp4", "write_gif", "write_video"]


def orbit_sweep(
    num_frames: int = 96,
    elevation_deg: float = 15.0,
    radius: float = 2.0,
    fov_deg: float = 39.6,
    size: int = 256,
    time_loops: int = 1,
    start_azimuth_deg: float = 0.0,
) -> Cameras:
    """``num_frames`` cameras circling once around the origin while time goes 0 -> 1
    ``time_loops`` times (a ping-pong would hide the loop seam less honestly: we sweep)."""
    if num_frames < 2:
        raise ValueError(f"orbit_sweep: num_frames must be >= 2, got {num_frames}")
    step = torch.arange(num_frames, dtype=torch.float32) / num_frames
    azimuths = start_azimuth_deg + 360.0 * step
    phase = (step * time_loops) % 1.0
    times = phase * num_frames / max(num_frames - 1, 1) if time_loops == 1 else phase
    return orbit(elevation_deg, azimuths, radius, fov_deg, size, size, times.clamp(0, 1))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(F, H, W, 3) floats in [0, 1] -> uint8 numpy."""
    return (images.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()


def mp4_available() -> bool:
    """Whether an ffmpeg for mp4 writing is installed (imageio-ffmpeg, a core dependency)."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary is missing
        return False
    return True


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 24) -> Path:
    """H.264 mp4 (yuv420p; odd sizes are padded by ffmpeg's macro-block rule) written atomically."""
    import imageio.v2 as imageio

    if not mp4_available():
        raise RuntimeError("writing mp4 needs ffmpeg: pip install imageio-ffmpeg")

    path = Path(path)
    with atomic_path(path) as tmp:
        with imageio.get_writer(
            str(tmp),
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            quality=8,
            pixelformat="yuv420p",
            macro_block_size=16,
            ffmpeg_log_level="error",
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
    return path


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: int = 24) -> Path:
    """Looping gif written atomically (PIL), all frames on one 256-colour palette taken from up to
    eight of them (ten times faster than a palette per frame, and no colour flicker)."""
    from PIL import Image

    path = Path(path)
    sample = np.concatenate(list(frames[:: max(1, len(frames) // 8)]), axis=0)
    palette = Image.fromarray(sample).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0
        )
    return path


def write_video(frames: np.ndarray, folder: str | os.PathLike, name: str, fps: int = 24) -> list[Path]:
    """``folder/name.gif`` and, when ffmpeg is installed, ``folder/name.mp4`` (otherwise a
    warning says how to get it); returns the files written."""
    folder = Path(folder)
    written = [write_gif(frames, folder / f"{name}.gif", fps)]
    if mp4_available():
        written.append(write_mp4(frames, folder / f"{name}.mp4", fps))
    else:
        warnings.warn(
            f"{name}.mp4 skipped: ffmpeg is missing (pip install imageio-ffmpeg); {name}.gif written", stacklevel=2
        )
    return written
