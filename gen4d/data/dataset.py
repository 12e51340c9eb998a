"""Dataset loaders: the Diffusion4D format and :func:`load_dataset`, which reads any format gen4d
knows (dispatching to :mod:`gen4d.data.manifest` for gen4d's own folders).

:class:`MultiViewVideo` and :func:`load_image_rgba` live in :mod:`gen4d.data.multiview` and are
re-exported here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from gen4d.cameras import Cameras, diffusion4d_orbit
from gen4d.data.manifest import load_manifest
from gen4d.data.multiview import MultiViewVideo, load_image_rgba, load_images_rgba

__all__ = ["MultiViewVideo", "load_image_rgba", "load_diffusion4d", "load_dataset"]


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
        for i, (rgb, alpha) in enumerate(load_images_rgba([files[i] for i in range(num)])):
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
