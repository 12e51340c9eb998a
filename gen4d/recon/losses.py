"""Losses of 4D construction: photometric (L1, D-SSIM, LPIPS), alpha/mask, depth smoothness,
plus the weighting of the deformation field's regularisers.

Images are channels-last (C, H, W, 3) / (C, H, W, 1), as :class:`gen4d.render.RenderOutput`.
D-SSIM and LPIPS come from :mod:`gen4d.metrics` (one implementation of each in gen4d).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from gen4d.config import check_non_negative

__all__ = ["LossWeights", "l1", "dssim", "alpha_loss", "depth_smoothness", "image_losses", "weighted_regularizers"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (0 disables a term)."""

    l1: float = 0.8
    """L1 on composited RGB."""
    dssim: float = 0.2
    """1 - SSIM on composited RGB (gen4d.metrics.ssim)."""
    lpips: float = 0.0
    """LPIPS-VGG on composited RGB (needs its weights; skipped with a log line when absent)."""
    alpha: float = 0.5
    """L1 between rendered alpha and the mask (RGBA data only)."""
    depth_smoothness: float = 0.0
    """Edge-aware first-order smoothness of the rendered depth inside the mask."""
    plane_tv: float = 1e-4
    """HexPlane spatial-plane TV (4DGS D-NeRF: 1e-4; STAG4D: 0.05)."""
    time_smoothness: float = 1e-2
    """HexPlane second difference along time (4DGS: 1e-2; STAG4D: 5)."""
    time_l1: float = 1e-4
    """HexPlane |1 - time planes| (4DGS: 1e-4; STAG4D: 0.05)."""
    arap: float = 1e-2
    """Control-point ARAP regulariser (SC-GS field)."""
    rigidity: float = 0.0
    """Local rigidity of neighbouring Gaussians' motion (needs deform.rigidity.samples > 0)."""
    isometry: float = 0.0
    """Distances between neighbouring Gaussians kept over time (needs deform.rigidity.samples > 0)."""
    displacement: float = 0.0
    """Squared displacement by the deformation field (needs deform.rigidity.displacement)."""

    def __post_init__(self) -> None:
        check_non_negative(self, *(f.name for f in fields(self)))


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).abs().mean()


def dssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM of (C, H, W, 3) images; no value checks (no host syncs inside a training step)."""
    from gen4d.metrics import ssim

    return 1.0 - ssim(pred, target, check_values=False)


def alpha_loss(pred_alpha: torch.Tensor, target_alpha: torch.Tensor) -> torch.Tensor:
    return (pred_alpha - target_alpha).abs().mean()


def depth_smoothness(depth: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Edge-aware smoothness: mean |d depth| * exp(-|d image|) over neighbouring pixel pairs
    (both inside ``mask`` when given). depth (C, H, W, 1), image (C, H, W, 3), mask (C, H, W, 1)."""
    dx = (depth[:, :, 1:] - depth[:, :, :-1]).abs()
    dy = (depth[:, 1:] - depth[:, :-1]).abs()
    wx = torch.exp(-(image[:, :, 1:] - image[:, :, :-1]).abs().mean(-1, keepdim=True))
    wy = torch.exp(-(image[:, 1:] - image[:, :-1]).abs().mean(-1, keepdim=True))
    if mask is not None:
        wx = wx * mask[:, :, 1:] * mask[:, :, :-1]
        wy = wy * mask[:, 1:] * mask[:, :-1]
    return (dx * wx).mean() + (dy * wy).mean()


def image_losses(
    output, target: torch.Tensor, alpha: torch.Tensor | None, weights: LossWeights, lpips_model=None
) -> dict[str, torch.Tensor]:
    """Weighted photometric / mask / depth terms of a render against its targets."""
    terms: dict[str, torch.Tensor] = {}
    if weights.l1:
        terms["l1"] = weights.l1 * l1(output.rgb, target)
    if weights.dssim:
        terms["dssim"] = weights.dssim * dssim(output.rgb, target)
    if weights.lpips and lpips_model is not None:
        terms["lpips"] = weights.lpips * lpips_model(output.rgb, target).mean()
    if alpha is not None and weights.alpha:
        terms["alpha"] = weights.alpha * alpha_loss(output.alpha, alpha)
    if weights.depth_smoothness:
        terms["depth_smoothness"] = weights.depth_smoothness * depth_smoothness(output.depth, target, alpha)
    return terms


def weighted_regularizers(regs: dict[str, torch.Tensor], weights: LossWeights) -> dict[str, torch.Tensor]:
    """Each named regulariser times its weight (unknown names are an error, so none is dropped)."""
    out = {}
    for name, value in regs.items():
        if not hasattr(weights, name):
            raise ValueError(f"regulariser {name!r} has no weight in LossWeights; add one")
        weight = getattr(weights, name)
        if weight:
            out[name] = weight * value
    return out
