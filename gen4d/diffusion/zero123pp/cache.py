"""On-disk cache of generated views (rerunning the 4D stage does not regenerate them)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gen4d.diffusion.zero123pp.pipeline import MultiViewConfig, Zero123Plus
from gen4d.diffusion.zero123pp.views import join_grid, split_grid

__all__ = ["multiview_key", "load_cached_multiview", "generate_multiview_cached"]


def multiview_key(config: MultiViewConfig, images: torch.Tensor) -> dict:
    """What determines the generated views: sampling settings + a hash of the condition images."""
    data = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().tobytes()
    settings = asdict(config)
    for unrelated in ("frames_per_batch", "max_cache_gb", "anchor_mode"):
        settings.pop(unrelated)  # change speed / memory, not the result
    return {"settings": settings, "frames": int(images.shape[0]), "images_sha1": hashlib.sha1(data).hexdigest()}


def _frame_path(folder: Path, frame: int) -> Path:
    return folder / f"frame_{frame:04d}.png"


def _save_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    from gen4d.io import atomic_path

    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def load_cached_multiview(folder: str | Path, key: dict | None = None) -> tuple[dict[int, torch.Tensor], dict | None]:
    """Frames already generated in ``folder`` (frame -> (6, 3, v, v)) if its key matches ``key``."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return {}, None
    meta = json.loads(meta_path.read_text())
    if key is not None and meta.get("key") != key:
        return {}, meta
    frames = {}
    for frame in range(int(meta["key"]["frames"])):
        path = _frame_path(folder, frame)
        if path.is_file():
            frames[frame] = split_grid(_load_png(path))
    return frames, meta


def generate_multiview_cached(
    load_model: Callable[[], Zero123Plus],
    images: torch.Tensor,
    config: MultiViewConfig,
    folder: str | Path,
    progress: bool = True,
) -> torch.Tensor:
    """(F, 6, 3, v, v) views for condition images (F, 3, H, W), reusing the frames already in
    ``folder`` (``frame_XXXX.png`` 3x2 grids + ``meta.json``) when the settings and images match;
    the model is loaded (``load_model()``) only when some frame is missing. Each frame is
    written as soon as it is decoded, so an interrupted run resumes where it stopped."""
    from gen4d.io import write_json

    folder = Path(folder)
    key = multiview_key(config, images)
    done, meta = load_cached_multiview(folder, key)
    if meta is not None and meta.get("key") != key:
        for stale in folder.glob("frame_*.png"):
            stale.unlink()
    missing = [f for f in range(images.shape[0]) if f not in done]
    if missing:
        write_json(folder / "meta.json", {"key": key, "layout": "3x2 grid, row-major views, RGB"})
        model = load_model()
        for frame, views in model.iter_generate(images, config, missing, progress):
            _save_png(_frame_path(folder, frame), join_grid(views))
            done[frame] = split_grid(_load_png(_frame_path(folder, frame)))  # exactly what a rerun reads
    return torch.stack([done[f] for f in range(images.shape[0])])
