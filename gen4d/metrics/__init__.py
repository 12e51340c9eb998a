"""Evaluation metrics as pure functions (see docs/evaluation.md).

Images are channels-last ``(B, H, W, 3)`` tensors in ``[0, 1]``; videos ``(T, H, W, 3)``.

Exports are loaded lazily, so ``gen4d.metrics.motion`` (numpy only) can be imported where torch
is not installed (dataset curation).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "mse": "image",
    "psnr": "image",
    "ssim": "image",
    "ssim_map": "image",
    "lpips": "perceptual",
    "LPIPS": "perceptual",
    "load_lpips": "perceptual",
    "MissingWeightsError": "weights",
    "find_weights": "weights",
    "motion_magnitude": "motion",
    "CLIPScorer": "clip",
    "load_clip": "clip",
    "clip_similarity": "clip",
    "clip_reference_similarity": "clip",
    "InceptionI3d": "fvd",
    "load_i3d": "fvd",
    "fvd": "fvd",
    "fvd_from_features": "fvd",
    "frechet_distance": "fvd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"gen4d.metrics.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'gen4d.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
