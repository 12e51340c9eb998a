"""Image metrics as pure, differentiable torch functions: PSNR and SSIM.

Layout: images are **channels-last** ``(B, H, W, 3)`` float tensors in ``[0, 1]`` (the layout of
:class:`gen4d.render.RenderOutput.rgb` and :class:`gen4d.data.dataset.MultiViewVideo.images`).
A single image ``(H, W, 3)`` is accepted and treated as ``B = 1``. Values are not clamped (a
render may overshoot slightly during training); the data range is fixed to 1.

SSIM follows Wang et al. (2004) exactly as scikit-image's
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=-1)`` and torchmetrics' default
``StructuralSimilarityIndexMeasure(data_range=1)`` compute it: an 11-tap normalised Gaussian
window with sigma 1.5 (separable), ``K1 = 0.01``, ``K2 = 0.03``, population (biased) local
variances, the SSIM map averaged over the pixels whose whole window lies inside the image (both
references pad and then crop a 5-pixel border; here the filter is applied "valid" directly,
which gives the same numbers), then over the 3 channels. Use ``1 - ssim(pred, target)`` as the
D-SSIM loss.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F

from gen4d._checks import check_finite, check_shape

__all__ = ["psnr", "ssim", "ssim_map", "mse", "gaussian_window"]

Reduction = Literal["mean", "none"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_batch(name: str, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, H, W, 3), got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    check_shape(name, image, ("B", "H", "W", 3))
    if not image.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0, 1], got dtype {image.dtype} (divide uint8 by 255)")
    return image


def _pair(pred: torch.Tensor, target: torch.Tensor, check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    pred = _as_batch("pred", pred)
    target = _as_batch("target", target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ; expected the same (B, H, W, 3) "
            "(render at the ground truth's resolution, or resize one of them first)"
        )
    if check_values:
        check_finite("pred", pred)
        check_finite("target", target)
    target = target.to(pred.dtype)
    return pred, target


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) mean squared error per image (over pixels and channels; weighted by ``mask``)."""
    pred, target = _pair(pred, target)
    err = (pred - target) ** 2
    if mask is None:
        return err.mean(dim=(1, 2, 3))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a torch.Tensor of shape (B, H, W, 1), got {type(mask).__name__}")
    if mask.ndim == 3:
        mask = mask.unsqueeze(-1)
    check_shape("mask", mask, (None, pred.shape[1], pred.shape[2], 1))
    if mask.shape[0] not in (1, pred.shape[0]):
        raise ValueError(
            f"mask: expected (B, H, W, 1) or (1, H, W, 1) with B = {pred.shape[0]}, got {tuple(mask.shape)}"
        )
    mask = mask.to(pred.dtype).expand(pred.shape[0], -1, -1, 1)
    if (mask < 0).any():
        raise ValueError("mask: expected non-negative weights (0 = ignore, 1 = count)")
    weight = mask.sum(dim=(1, 2, 3)) * pred.shape[-1]
    if (weight <= 0).any():
        raise ValueError("mask: an image has an all-zero mask; PSNR over no pixels is undefined")
    return (err * mask).sum(dim=(1, 2, 3)) / weight


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, data range 1: ``10 log10(1 / MSE)`` per image.

    pred, target: (B, H, W, 3) (or (H, W, 3)) in [0, 1].
    mask: optional (B, H, W, 1) or (B, H, W) weights in [0, 1] (B may be 1 to share one mask);
    the MSE is taken over the weighted pixels only (all 3 channels).
    reduction: ``"mean"`` -> scalar mean of the per-image PSNRs (how papers report it);
    ``"none"`` -> (B,).
    Identical images give ``inf`` (as scikit-image does).
    """
    err = mse(pred, target, mask)
    return _reduce(-10.0 * torch.log10(err), reduction)


@functools.lru_cache(maxsize=16)
def _window_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    # Cached per device: a copy to the GPU on every call would be a host-device synchronisation.
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(coords**2) / (2 * sigma**2))
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def gaussian_window(
    size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(size,) normalised 1D Gaussian taps (the SSIM window is its outer product)."""
    return _window_1d(size, float(sigma), dtype).clone()


def _filter_valid(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of (N, C, H, W): banded matrix products on a GPU (far
    faster there than depthwise convolutions, above all backward; bench/bench_ssim.py), depthwise
    convolutions on a CPU (faster there). Both give the same values."""
    return (_filter_depthwise if x.device.type == "cpu" else _filter_banded)(x, window, sigma)


def _filter_banded(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """The filter as two products with banded matrices."""
    height, width = x.shape[-2:]
    return _band(height, window, sigma, x.dtype, x.device) @ x @ _band(width, window, sigma, x.dtype, x.device).T


def _filter_depthwise(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """The filter as a 1 x window then a window x 1 depthwise convolution."""
    channels, taps = x.shape[1], _window_1d(window, sigma, x.dtype, x.device)
    kx = taps.view(1, 1, 1, window).expand(channels, 1, 1, window)
    ky = taps.view(1, 1, window, 1).expand(channels, 1, window, 1)
    return F.conv2d(F.conv2d(x, kx, groups=channels), ky, groups=channels)


@functools.lru_cache(maxsize=32)
def _band(length: int, window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(length - window + 1, length) matrix whose row i holds the Gaussian taps at columns
    i .. i + window - 1 (cached: built once per size and device)."""
    taps = _window_1d(window, sigma, dtype, device)
    rows = length - window + 1
    columns = torch.arange(rows, device=device)[:, None] + torch.arange(window, device=device)[None]
    return torch.zeros(rows, length, dtype=dtype, device=device).scatter_(1, columns, taps.expand(rows, window))


def ssim_map(
    pred: torch.Tensor,
    target: torch.Tensor,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    check_values: bool = True,
) -> torch.Tensor:
    """(B, H - window + 1, W - window + 1, 3) local SSIM of each valid window position and channel.

    ``check_values=False`` skips the finite checks of the inputs (host-device syncs), for losses
    inside a training step; shapes are always checked."""
    pred, target = _pair(pred, target, check_values)
    height, width = pred.shape[1:3]
    if height < window or width < window:
        raise ValueError(
            f"ssim: images are {width}x{height}; expected at least {window}x{window} (the Gaussian window)"
        )
    x = pred.permute(0, 3, 1, 2)
    y = target.permute(0, 3, 1, 2)
    channels = x.shape[1]
    # Local (co)variances are shift-invariant: take them of images centred on their global
    # means (a constant, hence detached) so E[x^2] - E[x]^2 cancels far less in float32.
    shift_x = x.mean(dim=(2, 3), keepdim=True).detach()
    shift_y = y.mean(dim=(2, 3), keepdim=True).detach()
    xc, yc = x - shift_x, y - shift_y
    # One filter call over [x, y, x^2, y^2, xy] (centred) stacked along channels.
    stats = _filter_valid(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1), window, float(sigma))
    mu_xc, mu_yc, xx, yy, xy = stats.split(channels, dim=1)
    var_x = xx - mu_xc * mu_xc
    var_y = yy - mu_yc * mu_yc
    cov = xy - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + shift_x, mu_yc + shift_y
    c1 = SSIM_K1**2
    c2 = SSIM_K2**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).permute(0, 2, 3, 1)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    reduction: Reduction = "mean",
    check_values: bool = True,
) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5, data range 1), differentiable.

    pred, target: (B, H, W, 3) (or (H, W, 3)) in [0, 1], H and W >= 11.
    reduction: ``"mean"`` -> scalar mean over images; ``"none"`` -> (B,) per image.
    check_values: check that the inputs are finite (a host-device sync each); a training loss
    whose inputs are known to be finite passes False.
    Matches scikit-image / torchmetrics (see the module docstring) to ~1e-6 in float64.
    """
    return _reduce(ssim_map(pred, target, check_values=check_values).mean(dim=(1, 2, 3)), reduction)
