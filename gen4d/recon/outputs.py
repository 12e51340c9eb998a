"""What a 4D construction run writes besides its checkpoint, and the held-out evaluation.

Run directory layout (the contract other parts of gen4d read):

* ``RUN/config.json`` - the resolved config;
* ``RUN/.gen4d-run.json`` - the run marker (:mod:`gen4d.run.folder`);
* ``RUN/checkpoint/`` - model (safetensors + json) and training state (:mod:`gen4d.recon.checkpoint`);
* ``RUN/ply/frame_XXXX.ply`` - the Gaussians at each frame time, standard 3DGS layout;
* ``RUN/videos/orbit.mp4``, ``orbit.gif`` - a camera circling once while time runs 0 -> 1;
* ``RUN/renders/<split>/*.png`` - renders at the dataset's held-out cameras (white background);
* ``RUN/metrics.json`` - PSNR / SSIM / LPIPS (if its weights are available) / silhouette IoU
  per split (:func:`gen4d.eval.split.evaluate_splits`), wall time, peak memory;
* ``RUN/log.txt``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from gen4d.data.dataset import MultiViewVideo
from gen4d.eval.split import render_cameras
from gen4d.export import frame_times, orbit_sweep, to_uint8, write_ply_sequence, write_video
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.io import atomic_path
from gen4d.render import RenderOptions

__all__ = [
    "heldout_splits",
    "write_renders",
    "write_orbit_video",
    "write_plys",
    "LpipsLoader",
]


def _same_pose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(A, B) bool: camera matrices (A, 4, 4) vs (B, 4, 4) equal to 1e-4."""
    return (a[:, None] - b[None]).abs().flatten(2).amax(-1) < 1e-4


def heldout_splits(dataset: MultiViewVideo, training: torch.Tensor) -> dict[str, torch.Tensor]:
    """Held-out evaluation sets: the ``eval`` split if there is one, and the ``front`` split when it
    is not trained on, without the images whose (pose, time) a training image has (for the
    Diffusion4D format, front_frame0 = orbit pose 0 at t = 0)."""
    out: dict[str, torch.Tensor] = {}
    train = set(training.tolist())
    for name in ("eval", "front"):
        if not dataset.has_split(name):
            continue
        index = dataset.splits[name]
        if set(index.tolist()) & train:
            continue
        w2c = dataset.cameras.world_to_camera
        same = _same_pose(w2c[index], w2c[training]) & (
            (dataset.cameras.times[index][:, None] - dataset.cameras.times[training][None]).abs() < 1e-6
        )
        keep = index[~same.any(-1)]
        if keep.numel():
            out[name] = keep
    return out


class LpipsLoader:
    """Loads pretrained LPIPS once; remembers why it is unavailable (logged once by the caller)."""

    def __init__(self, net: str = "vgg"):
        self.net = net
        self.model = None
        self.error: str | None = None
        self._tried = False

    def get(self, device: torch.device):
        if not self._tried:
            self._tried = True
            try:
                from gen4d.metrics import load_lpips

                self.model = load_lpips(self.net, device=device)
            except (FileNotFoundError, ImportError, OSError, ValueError) as err:
                self.error = str(err)
        return self.model


def write_renders(folder: str | os.PathLike, renders: torch.Tensor, names: list[str]) -> list[Path]:
    """PNG per render (atomically); ``names`` without extension."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(to_uint8(renders), names):
        path = folder / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        paths.append(path)
    return paths


def image_names(dataset: MultiViewVideo, index: torch.Tensor) -> list[str]:
    if dataset.files is not None:
        names = [Path(dataset.files[i]).stem for i in index.tolist()]
        if len(set(names)) == len(names):
            return names
    return [f"{i:04d}" for i in index.tolist()]


def write_orbit_video(
    model: DynamicGaussians,
    folder: str | os.PathLike,
    options: RenderOptions,
    frames: int = 96,
    size: int = 256,
    elevation_deg: float = 15.0,
    radius: float = 2.0,
    fov_deg: float = 39.6,
    fps: int = 24,
    background: float = 1.0,
) -> tuple[Path | None, Path]:
    """``orbit.mp4`` and ``orbit.gif``: one circle around the object while time runs 0 -> 1.
    Without ffmpeg the mp4 is skipped with a warning (None) and the gif is still written."""
    cams = orbit_sweep(frames, elevation_deg, radius, fov_deg, size)
    images = to_uint8(render_cameras(model, cams, background, options).rgb)
    written = write_video(images, folder, "orbit", fps)
    return (written[1] if len(written) > 1 else None), written[0]


def write_plys(model: DynamicGaussians, folder: str | os.PathLike, num_frames: int) -> list[Path]:
    """``frame_XXXX.ply`` at the dataset's frame times (i / (F - 1))."""
    return write_ply_sequence(model.at, frame_times(num_frames), folder)


def camera_layout(dataset: MultiViewVideo, index: torch.Tensor) -> tuple[float, float]:
    """(mean distance from the origin, vertical FOV in degrees) of the cameras ``index``."""
    cams = dataset.cameras[index]
    radius = float(cams.centers.norm(dim=-1).mean())
    fov = float(cams.fov_y_deg.mean())
    return (radius if math.isfinite(radius) and radius > 0 else 2.0), fov
