"""One way to render and evaluate a split: used by reconstruct and STAG4D (their metrics.json),
``gen4d eval`` (:mod:`gen4d.eval.core`) and the exporters.

* :func:`render_cameras` - renders in chunks of ``batch`` cameras (RGB in [0, 1] and alpha, on the CPU);
* :func:`silhouette_iou` - IoU of (rendered alpha > 0.5) vs (ground-truth alpha > 0.5), pooled over images;
* :func:`evaluate_splits` - PSNR / SSIM / LPIPS / silhouette IoU per split of a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gen4d.cameras import Cameras
from gen4d.data.dataset import MultiViewVideo

__all__ = ["Renders", "evaluate_splits", "render_cameras", "silhouette_counts", "silhouette_iou"]

SILHOUETTE_THRESHOLD = 0.5


@dataclass
class Renders:
    rgb: torch.Tensor
    """(K, H, W, 3) in [0, 1], CPU."""
    alpha: torch.Tensor | None
    """(K, H, W, 1) accumulated opacity, CPU (None for a model whose renders have no alpha)."""


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


@torch.no_grad()
def render_cameras(
    model: Any, cameras: Cameras, background: float | Sequence[float], options: Any, batch: int = 8
) -> Renders:
    """Render ``cameras`` with ``model.render(cameras, background (3,), options)`` in chunks of ``batch``."""
    device = _device(model)
    values = [float(background)] * 3 if isinstance(background, (int, float)) else [float(v) for v in background]
    bg = torch.tensor(values, dtype=torch.float32, device=device)
    rgb, alpha = [], []
    for start in range(0, len(cameras), batch):
        output = model.render(cameras[list(range(start, min(start + batch, len(cameras))))].to(device), bg, options)
        rgb.append(output.rgb.detach().float().clamp(0, 1).cpu())
        if getattr(output, "alpha", None) is not None:
            alpha.append(output.alpha.detach().float().cpu())
    return Renders(torch.cat(rgb), torch.cat(alpha) if len(alpha) == len(rgb) else None)


def silhouette_counts(pred_alpha: torch.Tensor, gt_alpha: torch.Tensor) -> tuple[int, int]:
    """(intersection, union) pixel counts of the silhouettes alpha > 0.5 of (K, H, W, 1) alphas."""
    if pred_alpha.shape != gt_alpha.shape:
        raise ValueError(f"silhouette_iou: alphas {tuple(pred_alpha.shape)} and {tuple(gt_alpha.shape)} differ")
    pred = pred_alpha > SILHOUETTE_THRESHOLD
    gt = gt_alpha.to(pred_alpha.device) > SILHOUETTE_THRESHOLD
    return int((pred & gt).sum()), int((pred | gt).sum())


def silhouette_iou(pred_alpha: torch.Tensor | None, gt_alpha: torch.Tensor | None) -> float | None:
    """IoU of (rendered alpha > 0.5) vs (ground-truth alpha > 0.5) pooled over all images; None
    without ground-truth (or rendered) alpha; 1.0 when both silhouettes are empty."""
    if gt_alpha is None or pred_alpha is None:
        return None
    inter, union = silhouette_counts(pred_alpha, gt_alpha)
    return inter / union if union else 1.0


@torch.no_grad()
def evaluate_splits(
    model: Any,
    dataset: MultiViewVideo,
    splits: dict[str, torch.Tensor],
    options: Any,
    background: float = 1.0,
    lpips_model=None,
) -> tuple[dict[str, dict[str, Any]], dict[str, torch.Tensor]]:
    """PSNR / SSIM / LPIPS (None without weights) / silhouette IoU (``iou``, None without alpha)
    per split against the images composited over ``background``; returns (metrics, RGB renders)."""
    from gen4d.metrics import psnr, ssim

    metrics, renders = {}, {}
    composited = dataset.composited((background,) * 3)
    for name, index in splits.items():
        out = render_cameras(model, dataset.cameras[index], background, options)
        pred = out.rgb
        target = composited[index].to(pred)
        entry: dict[str, Any] = {
            "images": int(index.numel()),
            "psnr": float(psnr(pred, target)),
            "ssim": float(ssim(pred, target)),
            "lpips": None,
            "iou": silhouette_iou(out.alpha, None if dataset.alphas is None else dataset.alphas[index]),
        }
        if lpips_model is not None and min(pred.shape[1:3]) >= 32:
            device = next(lpips_model.parameters()).device
            values = [
                lpips_model(pred[i : i + 8].to(device), target[i : i + 8].to(device)) for i in range(0, len(pred), 8)
            ]
            entry["lpips"] = float(torch.cat(values).mean())
        metrics[name] = entry
        renders[name] = pred
    return metrics, renders
