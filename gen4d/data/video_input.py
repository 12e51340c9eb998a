"""Video input for video-to-4D: frames or a video file -> preprocessed RGBA frames.

Accepted inputs:

* a folder of RGBA frames named ``0_rgba.png, 1_rgba.png, ...`` (STAG4D's layout; natural
  order, so ``10_rgba.png`` follows ``9_rgba.png``);
* a folder of frames (``.png .jpg .jpeg .webp .bmp``, natural order), with or without alpha;
* a video file (``.mp4 .webm .mov .mkv .avi`` through imageio-ffmpeg's ffmpeg, ``.gif`` through
  Pillow, keeping GIF transparency). Videos with an alpha channel keep it: VP8 / VP9 webm with
  alpha (decoded with libvpx, as ffmpeg's own VP8 / VP9 decoders drop alpha) and mov / mkv whose
  stream has an alpha pixel format (ProRes 4444, QuickTime Animation, PNG).

Matting (:mod:`gen4d.data.matting`): ``matting="auto"`` uses the frames' alpha when they have one
that is not opaque everywhere, else rembg with a local model file (``rembg.model``); ``"alpha"``,
``"rembg"`` and ``"color"`` (plain background) force one method.

Preprocessing (one transform for the whole video, so the object does not jitter): the union of
every frame's alpha bounding box gives one square crop centred on it whose side leaves
``border`` of the image free; every frame is cropped with it (transparent padding where the crop
leaves the frame) and resampled to ``size`` x ``size``. Colour is kept un-premultiplied with
its alpha. :func:`load_image_input` applies the same matting and recentring to one image (the
Diffusion4D image condition): the object lands in a square, never stretched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen4d._checks import check_shape
from gen4d.config import check_positive, check_range
from gen4d.data.matting import MattingMethod, RembgConfig, matte
from gen4d.data.video_file import VideoStream, probe_video, read_video
from gen4d.errors import UserError

__all__ = [
    "VideoInputConfig",
    "VideoFrames",
    "read_frames",
    "preprocess_frames",
    "load_video_input",
    "save_frames",
    "load_image_input",
    "probe_video",
    "VideoStream",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")


@dataclass(frozen=True)
class VideoInputConfig:
    """How input frames are read and normalised."""

    size: int = 512
    """Side of the square output frames in pixels."""
    border: float = 0.2
    """Fraction of the output side left free around the object's bounding box (0 <= border < 1)."""
    max_frames: int = 128
    """Refuse videos with more frames than this (after ``stride``)."""
    max_side: int = 4096
    """Refuse frames whose larger side exceeds this many pixels."""
    stride: int = 1
    """Keep every ``stride``-th frame."""
    matting: MattingMethod = "auto"
    """'alpha': frames must carry alpha; 'rembg': always matte with rembg; 'color': key out a plain background; 'auto': alpha if present, else rembg."""
    rembg: RembgConfig = field(default_factory=RembgConfig)
    """rembg's local model file (never downloaded; see gen4d.data.matting)."""
    alpha_threshold: float = 0.5
    """Alpha above which a pixel belongs to the object's bounding box."""

    def __post_init__(self) -> None:
        check_positive(self, "size", "max_frames", "max_side", "stride")
        check_range(self, "border", 0.0, 1.0, high_open=True)
        check_range(self, "alpha_threshold", 0.0, 1.0)


@dataclass
class VideoFrames:
    """A preprocessed video: square RGBA frames with one shared crop."""

    rgba: torch.Tensor
    """(F, S, S, 4) float in [0, 1], colour not premultiplied."""
    names: list[str] = field(default_factory=list)
    """Source of each frame (file name, or ``video.mp4#i``)."""
    crop: tuple[int, int, int] = (0, 0, 0)
    """(x0, y0, side) of the square crop in source pixels (may extend past the source frame)."""
    source_size: tuple[int, int] = (0, 0)
    """(width, height) of the source frames."""

    def __post_init__(self) -> None:
        check_shape("frames.rgba", self.rgba, ("F", "S", "S", 4))

    def __len__(self) -> int:
        return int(self.rgba.shape[0])

    @property
    def size(self) -> int:
        return int(self.rgba.shape[1])

    @property
    def alpha(self) -> torch.Tensor:
        """(F, S, S, 1)."""
        return self.rgba[..., 3:]

    @property
    def rgb(self) -> torch.Tensor:
        """(F, S, S, 3) un-premultiplied colour."""
        return self.rgba[..., :3]

    def times(self) -> torch.Tensor:
        """(F,) normalised times i / (F - 1) (gen4d's convention; 0 for a single frame)."""
        count = len(self)
        return torch.arange(count, dtype=torch.float32) / max(count - 1, 1)


# -----------------------------------------------------------------------------------------
# Reading
# -----------------------------------------------------------------------------------------
def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            return np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def _read_gif(path: Path, limit: int) -> list[np.ndarray]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = []
            for frame in ImageSequence.Iterator(image):
                frames.append(np.asarray(frame.convert("RGBA"), dtype=np.uint8))
                if len(frames) > limit:
                    break
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable GIF ({err})") from err
    if frames and all(int(f[..., 3].min()) == 255 for f in frames):
        frames = [f[..., :3] for f in frames]  # no transparency in this GIF
    return frames


def read_frames(path: str | Path, max_frames: int = 128, stride: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """Raw frames (H, W, 3 or 4) uint8 and their names, in order; see the module docstring."""
    path = Path(path)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    limit = max_frames * stride + stride  # read a little past the limit to report it
    if path.is_dir():
        rgba = sorted((p for p in path.iterdir() if p.name.endswith("_rgba.png")), key=_natural_key)
        files = rgba or sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if not files:
            raise ValueError(
                f"{path}: no frames found; expected 0_rgba.png, 1_rgba.png, ... or images ({', '.join(IMAGE_SUFFIXES)})"
            )
        files = files[::stride]
        if len(files) > max_frames:
            raise ValueError(
                f"{path}: {len(files)} frames, more than max_frames={max_frames}; raise the limit or use a stride"
            )
        return [_read_image(p) for p in files], [p.name for p in files]
    if not path.exists():
        raise FileNotFoundError(f"no such input: {path}")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: a single image is one frame; video-to-4D needs a video (at least 2 frames)")
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(
            f"{path}: unknown input type {suffix!r}; expected a frame folder or a video ({', '.join(VIDEO_SUFFIXES)})"
        )
    frames = _read_gif(path, limit) if suffix == ".gif" else read_video(path, limit)
    frames = frames[::stride]
    if len(frames) > max_frames:
        raise ValueError(
            f"{path}: more than max_frames={max_frames} frames; raise the limit, use a stride or trim the video"
        )
    return frames, [f"{path.name}#{i * stride}" for i in range(len(frames))]


# -----------------------------------------------------------------------------------------
# Normalisation
# -----------------------------------------------------------------------------------------
def _square_crop(alpha: torch.Tensor, threshold: float, border: float) -> tuple[int, int, int]:
    """(x0, y0, side) in whole pixels of the square crop centred on the union bounding box of
    alpha (F, H, W), with ``border`` of its side left free."""
    mask = (alpha > threshold).any(dim=0)
    if not bool(mask.any()):
        raise ValueError(f"the alpha of every frame is empty (no pixel above {threshold}); nothing to reconstruct")
    ys, xs = torch.nonzero(mask, as_tuple=True)
    x_min, x_max = int(xs.min()), int(xs.max()) + 1
    y_min, y_max = int(ys.min()), int(ys.max()) + 1
    side = max(1, round(max(x_max - x_min, y_max - y_min) / (1.0 - border)))
    x0 = round((x_min + x_max) / 2 - side / 2)
    y0 = round((y_min + y_max) / 2 - side / 2)
    return x0, y0, side


def _crop_resample(rgba: torch.Tensor, crop: tuple[int, int, int], size: int) -> torch.Tensor:
    """Crop (F, H, W, 4) to the square ``crop`` (transparent outside the frame) and resample it
    to ``size`` (premultiplied colour, antialiased when shrinking)."""
    x0, y0, side = crop
    height, width = rgba.shape[1:3]
    premul = torch.cat([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], dim=-1).permute(0, 3, 1, 2)
    pad = (max(0, -x0), max(0, x0 + side - width), max(0, -y0), max(0, y0 + side - height))
    padded = F.pad(premul, pad)
    square = padded[..., y0 + pad[2] : y0 + pad[2] + side, x0 + pad[0] : x0 + pad[0] + side]
    out = F.interpolate(square, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    alpha = out[:, 3:].clamp(0, 1)
    colour = torch.where(alpha > 1e-6, out[:, :3] / alpha.clamp_min(1e-6), torch.zeros_like(out[:, :3])).clamp(0, 1)
    return torch.cat([colour, alpha], dim=1).permute(0, 2, 3, 1).contiguous()


def _check_sizes(frames: Sequence[np.ndarray], names: Sequence[str], config: VideoInputConfig) -> None:
    shapes = [f.shape[:2] for f in frames]
    if len(set(shapes)) != 1:
        bad = next(i for i, s in enumerate(shapes) if s != shapes[0])
        raise ValueError(
            f"frames have different sizes: {names[0]} is {shapes[0][1]}x{shapes[0][0]} but {names[bad]} is "
            f"{shapes[bad][1]}x{shapes[bad][0]}; expected one size for the whole video"
        )
    height, width = shapes[0]
    if max(height, width) > config.max_side:
        raise ValueError(
            f"{names[0]}: {width}x{height} pixels, larger than max_side={config.max_side}; downscale it first"
        )
    if min(height, width) < 8:
        raise ValueError(f"{names[0]}: {width}x{height} pixels; expected at least 8 pixels per side")


def _as_float(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 frames -> (F, H, W, 4 or 3) float in [0, 1]; RGB unless every frame has alpha."""
    has_alpha = all(f.ndim == 3 and f.shape[2] == 4 for f in frames)
    return torch.from_numpy(np.stack([f if has_alpha else f[..., :3] for f in frames])).float() / 255.0


def preprocess_frames(
    frames: Sequence[np.ndarray],
    names: Sequence[str],
    config: VideoInputConfig = VideoInputConfig(),
    source: str = "the frames",
) -> VideoFrames:
    """Check, matte, recentre and rescale raw frames (see the module docstring); ``source`` names
    the input in error messages."""
    if len(frames) < 2:
        raise ValueError(f"{len(frames)} frame(s): video-to-4D needs a video of at least 2 frames")
    if len(frames) > config.max_frames:
        raise ValueError(
            f"{len(frames)} frames, more than max_frames={config.max_frames}; raise the limit or use a stride"
        )
    _check_sizes(frames, names, config)
    height, width = frames[0].shape[:2]
    rgba = matte(_as_float(frames), config.matting, config.rembg, source)
    crop = _square_crop(rgba[..., 3], config.alpha_threshold, config.border)
    out = _crop_resample(rgba, crop, config.size)
    return VideoFrames(rgba=out, names=list(names), crop=crop, source_size=(width, height))


def load_image_input(path: str | Path, config: VideoInputConfig = VideoInputConfig()) -> torch.Tensor:
    """One image (e.g. the Diffusion4D image condition) -> (S, S, 4) RGBA in [0, 1], S = ``config.size``:
    matted like video frames, the object recentred in a square with ``config.border`` free, never
    stretched. An image in which matting finds no object is a :class:`UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such image: {path}")
    try:
        frame = _read_image(path)
        _check_sizes([frame], [str(path)], config)
    except ValueError as err:
        raise UserError(str(err)) from None
    rgba = matte(_as_float([frame]), config.matting, config.rembg, str(path))
    try:
        crop = _square_crop(rgba[..., 3], config.alpha_threshold, config.border)
    except ValueError:
        raise UserError(
            f"{path}: no object found (matting '{config.matting}' left no pixel with alpha above "
            f"{config.alpha_threshold}); expected one object on a background, or an RGBA image with the object opaque"
        ) from None
    return _crop_resample(rgba, crop, config.size)[0]


def load_video_input(path: str | Path, config: VideoInputConfig = VideoInputConfig()) -> VideoFrames:
    """:func:`read_frames` + :func:`preprocess_frames`."""
    frames, names = read_frames(path, config.max_frames, config.stride)
    return preprocess_frames(frames, names, config, source=str(path))


def save_frames(video: VideoFrames, folder: str | Path) -> list[Path]:
    """Write ``{i}_rgba.png`` frames (atomic writes); returns the paths."""
    from PIL import Image

    from gen4d.io import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    array = (video.rgba.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for i, frame in enumerate(array):
        path = folder / f"{i}_rgba.png"
        with atomic_path(path) as tmp:
            Image.fromarray(frame, "RGBA").save(tmp, format="PNG")
        paths.append(path)
    return paths
