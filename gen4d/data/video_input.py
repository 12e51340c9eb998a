"""Video input for video-to-4D: frames or a video file -> preprocessed RGBA frames.

Accepted inputs:

* a folder of RGBA frames named ``0_rgba.png, 1_rgba.png, ...`` (STAG4D's layout; natural
  order, so ``10_rgba.png`` follows ``9_rgba.png``);
* a folder of frames (``.png .jpg .jpeg .webp .bmp``, natural order), with or without alpha;
* a video file (``.mp4 .webm .mov .mkv .avi`` through imageio-ffmpeg, ``.gif`` through Pillow,
  keeping GIF transparency).

Alpha is used when the frames have it. Without alpha (or with an alpha that is opaque
everywhere) the object is matted with ``rembg`` when it is installed with its model
(``matting="rembg"`` or ``"auto"``); otherwise a clear error says how to provide RGBA frames.

Preprocessing (one transform for the whole video, so the object does not jitter): the union of
every frame's alpha bounding box gives one square crop centred on it whose side leaves
``border`` of the image free; every frame is cropped with it (transparent padding where the crop
leaves the frame) and resampled to ``size`` x ``size``. Colour is kept un-premultiplied with
its alpha.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from gen4d._checks import check_shape
from gen4d.config import check_positive, check_range

__all__ = [
    "VideoInputConfig",
    "VideoFrames",
    "read_frames",
    "preprocess_frames",
    "load_video_input",
    "save_frames",
    "matte_constant_background",
    "remove_background",
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
REMBG_HINT = "pip install rembg onnxruntime (its u2net model is downloaded on first use into ~/.u2net)"


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
    matting: Literal["auto", "alpha", "rembg"] = "auto"
    """'alpha': frames must carry alpha; 'rembg': always matte with rembg; 'auto': alpha if present, else rembg."""
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


def _read_video(path: Path, limit: int) -> list[np.ndarray]:
    try:
        import imageio.v2 as imageio
    except ImportError as err:  # pragma: no cover - imageio is a core dependency
        raise ImportError(
            "reading videos needs imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg"
        ) from err
    frames = []
    try:
        reader = imageio.get_reader(str(path), format="FFMPEG", input_params=["-hide_banner"])
        with reader:
            for frame in reader:
                frames.append(np.asarray(frame, dtype=np.uint8))
                if len(frames) > limit:
                    break
    except Exception as err:  # imageio raises several types for unreadable files
        raise ValueError(
            f"{path}: not a readable video (ffmpeg: {_ffmpeg_reason(err)}); check the file, convert it to an "
            "H.264 .mp4, or pass a folder of frames"
        ) from None
    return frames


def _ffmpeg_reason(err: Exception) -> str:
    """The line that matters of an imageio-ffmpeg error, without ffmpeg's version / build banner."""
    message = str(err)
    head, _, stderr = message.partition("=== stderr ===")
    banner = ("ffmpeg version", "built with", "configuration:", "lib")
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line) for line in lines if line and not line.startswith(banner)]
    errors = [line for line in lines if "rror" in line or "nvalid" in line or "not found" in line]
    reason = (errors or lines or [head.strip() or type(err).__name__])[-1]
    return reason.rstrip(").").strip()[:300]


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
    frames = _read_gif(path, limit) if suffix == ".gif" else _read_video(path, limit)
    frames = frames[::stride]
    if len(frames) > max_frames:
        raise ValueError(
            f"{path}: more than max_frames={max_frames} frames; raise the limit, use a stride or trim the video"
        )
    return frames, [f"{path.name}#{i * stride}" for i in range(len(frames))]


# -----------------------------------------------------------------------------------------
# Matting
# -----------------------------------------------------------------------------------------
def remove_background(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """RGBA uint8 frames from RGB(A) uint8 frames with rembg (lazily imported)."""
    try:
        import rembg
    except ImportError as err:
        raise ValueError(
            "the frames have no alpha and no background remover is installed. Provide RGBA frames "
            f"(e.g. 0_rgba.png, 1_rgba.png, ...) or install one: {REMBG_HINT}"
        ) from err
    try:
        session = rembg.new_session()
    except Exception as err:  # missing model file and no network, onnxruntime errors ...
        raise RuntimeError(f"rembg could not load its model ({type(err).__name__}: {err}); {REMBG_HINT}") from err
    return [np.asarray(rembg.remove(image[..., :3], session=session), dtype=np.uint8) for image in images]


def matte_constant_background(images: torch.Tensor, tolerance: float = 0.08, softness: float = 0.04) -> torch.Tensor:
    """Alpha (N, 1, H, W) for images (N, 3, H, W) in [0, 1] on a constant background, e.g.
    Zero123++'s generated views: the background colour is the median of the border pixels and
    alpha ramps from 0 to 1 as the colour distance goes from ``tolerance`` to
    ``tolerance + softness``. A heuristic; use rembg for natural images."""
    check_shape("images", images, (None, 3, None, None))
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # (N, 3, 1, 1)
    distance = (images - background).abs().amax(dim=1, keepdim=True)
    return ((distance - tolerance) / max(softness, 1e-6)).clamp(0, 1)


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


def preprocess_frames(
    frames: Sequence[np.ndarray], names: Sequence[str], config: VideoInputConfig = VideoInputConfig()
) -> VideoFrames:
    """Check, matte, recentre and rescale raw frames (see the module docstring)."""
    if not 0.0 <= config.border < 1.0:
        raise ValueError(f"border must be in [0, 1), got {config.border}")
    if len(frames) < 2:
        raise ValueError(f"{len(frames)} frame(s): video-to-4D needs a video of at least 2 frames")
    if len(frames) > config.max_frames:
        raise ValueError(
            f"{len(frames)} frames, more than max_frames={config.max_frames}; raise the limit or use a stride"
        )
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
            f"frames are {width}x{height}, larger than max_side={config.max_side}; downscale the video first"
        )
    if min(height, width) < 8:
        raise ValueError(f"frames are {width}x{height}; expected at least 8 pixels per side")
    has_alpha = all(f.ndim == 3 and f.shape[2] == 4 for f in frames)
    opaque = has_alpha and all(int(f[..., 3].min()) >= 250 for f in frames)
    if config.matting == "rembg" or (config.matting == "auto" and (not has_alpha or opaque)):
        frames = remove_background(frames)
    elif not has_alpha or opaque:
        raise ValueError(
            "the frames have no usable alpha ("
            + ("opaque everywhere" if opaque else "RGB only")
            + ") and matting='alpha'; "
            f"provide RGBA frames (0_rgba.png, 1_rgba.png, ...) or set matting to 'auto' / 'rembg' ({REMBG_HINT})"
        )
    rgba = torch.from_numpy(np.stack(frames)).float() / 255.0
    crop = _square_crop(rgba[..., 3], config.alpha_threshold, config.border)
    out = _crop_resample(rgba, crop, config.size)
    return VideoFrames(rgba=out, names=list(names), crop=crop, source_size=(width, height))


def load_video_input(path: str | Path, config: VideoInputConfig = VideoInputConfig()) -> VideoFrames:
    """:func:`read_frames` + :func:`preprocess_frames`."""
    frames, names = read_frames(path, config.max_frames, config.stride)
    return preprocess_frames(frames, names, config)


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
