"""Video files through imageio-ffmpeg's ffmpeg binary, keeping alpha where the stream has it.

``ffmpeg -i`` tells the first video stream's codec and pixel format. A stream carries alpha when
its pixel format does (ProRes 4444 ``yuva444p12le``, QuickTime Animation ``argb``, PNG ``rgba``
...) or, for VP8 / VP9 in webm / mkv, when the container marks it with ``alpha_mode=1``: the alpha
is then a second stream inside the blocks, which ffmpeg's own VP8 / VP9 decoders drop and libvpx's
decode, so those streams are read with ``-c:v libvpx`` / ``-c:v libvpx-vp9``. Frames with alpha are
read as ``rgba``, others as ``rgb24``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VideoStream", "probe_video", "read_video", "ffmpeg_reason"]

# ffmpeg pixel formats that carry alpha (the stream's own format, as `ffmpeg -i` prints it).
_ALPHA_PIX_FMT = re.compile(r"^(yuva|gbrap|ya\d|rgba|bgra|argb|abgr)")
# ffmpeg's own VP8 / VP9 decoders drop the alpha that webm stores beside the colour; libvpx keeps it.
_LIBVPX_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


@dataclass(frozen=True)
class VideoStream:
    """The first video stream of a file, as ``ffmpeg -i`` describes it."""

    codec: str
    """Codec name (h264, vp9, prores, qtrle, ...)."""
    pix_fmt: str
    """The stream's pixel format (yuv420p, yuva444p12le, argb, rgba, ...)."""
    alpha: bool
    """The stream carries alpha (an alpha pixel format, or webm's alpha_mode=1 side channel)."""

    @property
    def decoder(self) -> list[str]:
        """ffmpeg input options that choose a decoder keeping alpha (libvpx for VP8 / VP9 with alpha)."""
        return ["-c:v", _LIBVPX_DECODERS[self.codec]] if self.alpha and self.codec in _LIBVPX_DECODERS else []


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def probe_video(path: str | Path) -> VideoStream:
    """Codec, pixel format and alpha of the first video stream, from ``ffmpeg -i`` (imageio-ffmpeg's binary)."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)]
    try:
        stderr = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=120).stderr
    except subprocess.TimeoutExpired:
        raise ValueError(f"{path}: ffmpeg did not describe the file within 120 s; is it a video file?") from None
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if re.search(r"Stream #\S+.*: Video: ", line)), None)
    if start is None:
        reason = ffmpeg_reason(stderr) if "rror" in stderr or "nvalid" in stderr else "no video stream"
        raise ValueError(
            f"{path}: not a readable video (ffmpeg: {reason}); check the file, convert it to an H.264 .mp4, "
            "or pass a folder of frames"
        )
    fields = _split_top_level(lines[start].split(": Video: ", 1)[1])
    codec = fields[0].split()[0]
    pix_fmt = re.split(r"[(\s]", fields[1], maxsplit=1)[0] if len(fields) > 1 else ""
    block = []
    for line in lines[start + 1 :]:
        if "Stream #" in line:
            break
        block.append(line)
    side_alpha = any(re.match(r"\s*alpha_mode\s*:\s*1\s*$", line) for line in block)
    return VideoStream(codec=codec, pix_fmt=pix_fmt, alpha=side_alpha or bool(_ALPHA_PIX_FMT.match(pix_fmt)))


def read_video(path: Path, limit: int) -> list[np.ndarray]:
    """Frames (H, W, 4) when the stream carries alpha, else (H, W, 3), as uint8."""
    import imageio_ffmpeg

    stream = probe_video(path)
    channels = 4 if stream.alpha else 3
    frames = []
    reader = imageio_ffmpeg.read_frames(
        str(path),
        pix_fmt="rgba" if stream.alpha else "rgb24",
        bpp=channels,
        input_params=["-hide_banner", *stream.decoder],
    )
    try:
        width, height = next(reader)["size"]
        for raw in reader:
            frames.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, channels))
            if len(frames) > limit:
                break
    except Exception as err:  # imageio-ffmpeg raises several types for streams that fail to decode
        raise ValueError(
            f"{path}: not a readable video (ffmpeg: {ffmpeg_reason(str(err))}); check the file, convert it to an "
            "H.264 .mp4, or pass a folder of frames"
        ) from None
    finally:
        reader.close()
    return frames


def ffmpeg_reason(message: str) -> str:
    """The line that matters of ffmpeg's stderr (or an imageio-ffmpeg error holding it), without
    ffmpeg's version / build banner."""
    head, _, stderr = message.partition("=== stderr ===")
    stderr = stderr or message
    banner = ("ffmpeg version", "built with", "configuration:", "lib")
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line) for line in lines if line and not line.startswith(banner)]
    errors = [line for line in lines if "rror" in line or "nvalid" in line or "not found" in line]
    reason = (errors or lines or [head.strip() or "unknown error"])[-1]
    return reason.rstrip(").").strip()[:300]
