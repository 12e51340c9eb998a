"""The multi-view-video dataset type every gen4d pipeline reads, and the image reader its loaders share.

A :class:`MultiViewVideo` is a flat list of M posed images of one moving object, each with its
camera (in gen4d's convention, :mod:`gen4d.cameras`) and time, plus named splits (index sets),
e.g. ``orbit`` (Diffusion4D's V), ``static_orbit`` (V-bar, all at t = 0), ``front`` (the
monocular video), ``zero123pp`` (six views per frame), ``eval`` (held-out views).

The loaders (:mod:`gen4d.data.dataset` for the Diffusion4D format and the dispatch,
:mod:`gen4d.data.manifest` for gen4d's own format) import this module, never each other's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gen4d._checks import check_finite, check_shape
from gen4d.cameras import Cameras

__all__ = ["MultiViewVideo", "load_image_rgba"]


@dataclass
class MultiViewVideo:
    """M posed RGBA images with times and named splits. Images are on the CPU in [0, 1]."""

    images: torch.Tensor
    """(M, H, W, 3) float colour (not premultiplied by alpha)."""
    alphas: torch.Tensor | None
    """(M, H, W, 1) float coverage, or None for RGB-only data."""
    cameras: Cameras
    """M cameras with their times."""
    splits: dict[str, torch.Tensor] = field(default_factory=dict)
    """split name -> (K,) long indices into the M images."""
    frames: torch.Tensor | None = None
    """(M,) long source animation frame of each image (defaults to round(t * (num_frames - 1)))."""
    num_frames: int = 0
    """Number of distinct animation frames (times) in the video."""
    name: str = "dataset"
    """Human-readable name (asset or folder)."""
    files: list[str] | None = None
    """Optional source file of each image, for error messages and reports."""

    def __post_init__(self) -> None:
        check_shape("dataset.images", self.images, ("M", "H", "W", 3))
        count, height, width = self.images.shape[:3]
        if count == 0:
            raise ValueError(f"{self.name}: no images")
        if self.alphas is not None:
            check_shape("dataset.alphas", self.alphas, (count, height, width, 1))
        # Checked once here, where data enters: training steps do not check values (no host syncs).
        check_finite("dataset.images", self.images)
        if self.alphas is not None:
            check_finite("dataset.alphas", self.alphas)
        if len(self.cameras) != count:
            raise ValueError(
                f"{self.name}: {count} images but {len(self.cameras)} cameras; expected one camera per image"
            )
        if (self.cameras.width, self.cameras.height) != (width, height):
            raise ValueError(
                f"{self.name}: images are {width}x{height} but cameras expect {self.cameras.width}x{self.cameras.height}"
            )
        for split, index in self.splits.items():
            index = torch.as_tensor(index, dtype=torch.long)
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= count):
                raise ValueError(f"{self.name}: split {split!r} indexes outside 0..{count - 1}")
            self.splits[split] = index
        if self.num_frames <= 0:
            self.num_frames = int(torch.unique(self.cameras.times).numel())
        if self.frames is None:
            self.frames = torch.round(self.cameras.times * max(self.num_frames - 1, 0)).long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def has_split(self, name: str) -> bool:
        return name in self.splits and self.splits[name].numel() > 0

    def subset(self, index: torch.Tensor | Sequence[int], name: str | None = None) -> MultiViewVideo:
        """The images at ``index`` as a dataset of their own (splits restricted and renumbered)."""
        index = torch.as_tensor(index, dtype=torch.long)
        position = {int(i): k for k, i in enumerate(index.tolist())}
        splits = {
            s: torch.tensor([position[int(i)] for i in idx.tolist() if int(i) in position], dtype=torch.long)
            for s, idx in self.splits.items()
        }
        return replace(
            self,
            images=self.images[index],
            alphas=None if self.alphas is None else self.alphas[index],
            cameras=self.cameras[index],
            splits={k: v for k, v in splits.items() if v.numel()},
            frames=self.frames[index],
            name=name or self.name,
            files=None if self.files is None else [self.files[i] for i in index.tolist()],
        )

    def split(self, name: str) -> MultiViewVideo:
        if not self.has_split(name):
            raise KeyError(f"{self.name}: no split {name!r}; it has {sorted(self.splits)}")
        return self.subset(self.splits[name], name=f"{self.name}:{name}")

    def composited(self, background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)) -> torch.Tensor:
        """(M, H, W, 3) images over a constant background (RGB data returned as is)."""
        if self.alphas is None:
            return self.images
        bg = torch.as_tensor(background, dtype=self.images.dtype)
        return self.images * self.alphas + bg * (1 - self.alphas)

    def resized(self, size: int | tuple[int, int]) -> MultiViewVideo:
        """Resample every image (area filter) to ``size`` = W = H or (W, H)."""
        width, height = (size, size) if isinstance(size, int) else size
        if (width, height) == (self.width, self.height):
            return self
        resize = lambda x: torch.nn.functional.interpolate(  # noqa: E731
            x.permute(0, 3, 1, 2), size=(height, width), mode="area" if width < self.width else "bilinear"
        ).permute(0, 2, 3, 1)
        if self.alphas is None:
            images, alphas = resize(self.images), None
        else:
            # Resample premultiplied colour so edges do not pick up the unseen background.
            premul = resize(self.images * self.alphas)
            alphas = resize(self.alphas)
            images = torch.where(alphas > 1e-6, premul / alphas.clamp_min(1e-6), torch.zeros_like(premul)).clamp(0, 1)
        return replace(self, images=images, alphas=alphas, cameras=self.cameras.resized(width, height))


def load_images_rgba(paths: Sequence[str | Path]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """:func:`load_image_rgba` of each path, in order, decoded on a few threads (PIL releases the
    GIL while decoding); the first failing path raises its error."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
    if workers == 1:
        return [load_image_rgba(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(load_image_rgba, paths))


def load_image_rgba(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file -> (H, W, 3) float32 colour in [0, 1], (H, W, 1) alpha or None."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
            array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err
    if has_alpha:
        return array[..., :3], array[..., 3:4]
    return array, None
