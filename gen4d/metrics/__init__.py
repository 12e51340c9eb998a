"""Evaluation metrics as pure functions (see docs/evaluation.md).

Images are channels-last ``(B, H, W, 3)`` tensors in ``[0, 1]``.
"""

from gen4d.metrics.image import mse, psnr, ssim, ssim_map

__all__ = ["mse", "psnr", "ssim", "ssim_map"]
