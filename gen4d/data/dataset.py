"""The multi-view-video dataset type every gen4d pipeline reads, and the Diffusion4D loader.

A :class:`MultiViewVideo` is a flat list of M posed images of one moving object, each with its
camera (in gen4d's convention, :mod:`gen4d.cameras`) and time, plus named splits (index sets),
e.g. ``orbit`` (Diffusion4D's V), ``static_orbit`` (V-bar, all at t = 0), ``front`` (the
monocular video), ``zero123pp`` (six views per frame), ``eval`` (held-out views).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gen4d._checks import check_shape
from gen4d.cameras import Cameras, diffusion4d_orbit

__all__ = ["MultiViewVideo", "load_image_rgba", "load_diffusion4d", "load_dataset"]


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
        if len(self.cameras) != count:
            raise ValueError(f"{self.name}: {count} images but {len(self.cameras)} cameras; expected one camera per image")
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

    def subset(self, index: torch.Tensor | Sequence[int], name: str | None = None) -> "MultiViewVideo":
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

    def split(self, name: str) -> "MultiViewVideo":
        if not self.has_split(name):
            raise KeyError(f"{self.name}: no split {name!r}; it has {sorted(self.splits)}")
        return self.subset(self.splits[name], name=f"{self.name}:{name}")

    def composited(self, background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0)) -> torch.Tensor:
        """(M, H, W, 3) images over a constant background (RGB data returned as is)."""
        if self.alphas is None:
            return self.images
        bg = torch.as_tensor(background, dtype=self.images.dtype)
        return self.images * self.alphas + bg * (1 - self.alphas)

    def resized(self, size: int | tuple[int, int]) -> "MultiViewVideo":
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


_D4D = re.compile(r"^(multi_frame|multi_static_frame|front_frame)(\d+)\.png$")


def load_diffusion4d(folder: str | Path, size: int | None = None) -> MultiViewVideo:
    """Load the Diffusion4D on-disk format (``multi_frame{i}.png``, ``multi_static_frame{i}.png``,
    ``front_frame{i}.png``; RGBA) with its cameras (see the sample's README and
    :func:`gen4d.cameras.diffusion4d_orbit`). Splits: ``orbit``, ``static_orbit``, ``front``.

    ``folder`` may be the object folder or a parent holding exactly one object folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such dataset folder: {folder}")
    if not any(_D4D.match(p.name) for p in folder.iterdir()):
        children = [p for p in folder.iterdir() if p.is_dir() and any(_D4D.match(q.name) for q in p.iterdir())]
        if len(children) != 1:
            raise ValueError(
                f"{folder}: no Diffusion4D images (multi_frame<i>.png, front_frame<i>.png) here"
                + (f" and {len(children)} object folders below; pass one of them" if children else "")
            )
        folder = children[0]
    found: dict[str, dict[int, Path]] = {"multi_frame": {}, "multi_static_frame": {}, "front_frame": {}}
    for path in folder.iterdir():
        match = _D4D.match(path.name)
        if match:
            found[match.group(1)][int(match.group(2))] = path
    orbit_files = found["multi_frame"]
    if not orbit_files:
        raise ValueError(f"{folder}: no multi_frame<i>.png images; the orbit video V is required")
    num = max(orbit_files) + 1
    if num < 2:
        raise ValueError(f"{folder}: only one orbit frame; expected a video of at least 2 frames")
    for kind, files in found.items():
        missing = sorted(set(range(num)) - set(files)) if files else []
        if missing:
            raise ValueError(f"{folder}: {kind} images missing for frames {missing[:10]} (expected 0..{num - 1})")

    orbit_cams = diffusion4d_orbit(num, size=256)
    images, alphas, cams, splits, files_out = [], [], [], {}, []
    front_cam = orbit_cams[0]
    for kind, split in (("multi_frame", "orbit"), ("multi_static_frame", "static_orbit"), ("front_frame", "front")):
        files = found[kind]
        if not files:
            continue
        start = len(images)
        for i in range(num):
            rgb, alpha = load_image_rgba(files[i])
            if alpha is None:
                raise ValueError(f"{files[i]}: expected an RGBA image (Diffusion4D renders have transparent film)")
            images.append(rgb)
            alphas.append(alpha)
            files_out.append(str(files[i]))
            t = i / (num - 1)
            if kind == "multi_frame":
                cams.append(orbit_cams[i])
            elif kind == "multi_static_frame":
                cams.append(orbit_cams[i].with_times(0.0))
            else:
                cams.append(front_cam.with_times(t))
        splits[split] = torch.arange(start, len(images))
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: images have different sizes {sorted(shapes)}; expected one size")
    height, width = images[0].shape[:2]
    if height != width:
        raise ValueError(f"{folder}: expected square renders, got {width}x{height}")
    cameras = Cameras.cat(cams).resized(width, height)
    video = MultiViewVideo(
        images=torch.from_numpy(np.stack(images)),
        alphas=torch.from_numpy(np.stack(alphas)),
        cameras=cameras,
        splits=splits,
        num_frames=num,
        name=folder.name,
        files=files_out,
    )
    return video.resized(size) if size else video


def load_dataset(path: str | Path, size: int | None = None) -> MultiViewVideo:
    """Load any dataset gen4d knows: a gen4d render folder (``manifest.json``) or the
    Diffusion4D format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset: {path}")
    manifest = path / "manifest.json" if path.is_dir() else path
    if manifest.name == "manifest.json" and manifest.is_file():
        from gen4d.data.manifest import load_manifest

        return load_manifest(manifest, size=size)
    try:
        return load_diffusion4d(path, size=size)
    except ValueError as err:
        if "no Diffusion4D images" not in str(err):
            raise
        raise ValueError(
            f"{path}: not a dataset gen4d knows; expected a gen4d dataset folder (manifest.json, as written by "
            "`gen4d render` or `gen4d sample-vdm`) or the Diffusion4D format (multi_frame<i>.png, "
            "multi_static_frame<i>.png, front_frame<i>.png)"
        ) from err
