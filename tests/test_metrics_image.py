"""PSNR / SSIM: known values, agreement with scikit-image, gradients, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from gen4d.metrics import psnr, ssim, ssim_map

skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (dev extra) is the SSIM reference")


def _pair(seed: int, batch: int = 3, height: int = 32, width: int = 40, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, height, width, 3, generator=gen, dtype=dtype)
    # Smooth structure plus noise so SSIM is far from both 0 and 1.
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, height, dtype=dtype), torch.linspace(0, 1, width, dtype=dtype), indexing="ij"
    )
    target = 0.5 * target + 0.5 * (torch.sin(6 * xx) * torch.cos(4 * yy) * 0.5 + 0.5)[None, :, :, None]
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen, dtype=dtype)).clamp(0, 1)
    return pred, target


def test_psnr_known_value():
    target = torch.zeros(2, 8, 8, 3)
    pred = torch.full((2, 8, 8, 3), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    per_image = psnr(pred, target, reduction="none")
    assert per_image.shape == (2,)
    assert torch.isinf(psnr(target, target))


def test_psnr_matches_skimage():
    pred, target = _pair(0)
    ours = psnr(pred, target, reduction="none")
    for b in range(pred.shape[0]):
        ref = skimage_metrics.peak_signal_noise_ratio(target[b].numpy(), pred[b].numpy(), data_range=1.0)
        assert ours[b].item() == pytest.approx(ref, abs=1e-6)


def test_psnr_mask_counts_only_masked_pixels():
    target = torch.zeros(1, 4, 4, 3)
    pred = torch.zeros(1, 4, 4, 3)
    pred[:, :2] = 0.1  # error only in the top half
    mask = torch.zeros(1, 4, 4, 1)
    mask[:, :2] = 1
    assert psnr(pred, target, mask=mask).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(pred, target, mask=mask[..., 0]).item() == pytest.approx(20.0, abs=1e-4)  # (B, H, W) form
    assert psnr(pred, target).item() == pytest.approx(20.0 + 10 * math.log10(2), abs=1e-4)
    with pytest.raises(ValueError, match="all-zero mask"):
        psnr(pred, target, mask=torch.zeros(1, 4, 4, 1))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_ssim_matches_skimage(dtype, tol):
    pred, target = _pair(1, dtype=dtype)
    ours = ssim(pred, target, reduction="none")
    assert ours.shape == (3,)
    for b in range(pred.shape[0]):
        ref = skimage_metrics.structural_similarity(
            target[b].double().numpy(),
            pred[b].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        assert 0.1 < ref < 0.95  # the test images are neither identical nor unrelated
        assert ours[b].item() == pytest.approx(ref, abs=tol)


def test_ssim_known_values():
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(2))
    assert ssim(image, image).item() == pytest.approx(1.0, abs=1e-6)
    # Two constants c1, c2 (no structure): SSIM = (2 c1 c2 + C1) / (c1^2 + c2^2 + C1).
    a, b = 0.2, 0.6
    expected = (2 * a * b + 0.01**2) / (a * a + b * b + 0.01**2)
    value = ssim(torch.full((1, 16, 16, 3), a), torch.full((1, 16, 16, 3), b))
    assert value.item() == pytest.approx(expected, abs=1e-5)
    assert ssim_map(image, image).shape == (1, 6, 6, 3)


def test_single_image_accepted():
    pred, target = _pair(3, batch=1)
    assert ssim(pred[0], target[0]).item() == pytest.approx(ssim(pred, target).item())
    assert psnr(pred[0], target[0]).item() == pytest.approx(psnr(pred, target).item())


def test_ssim_is_differentiable_dssim_loss():
    pred, target = _pair(4, batch=1, height=16, width=16)
    pred = pred.clone().requires_grad_(True)
    loss = 1 - ssim(pred, target)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # gradcheck on a tiny input (float64)
    small_pred = torch.rand(1, 11, 12, 3, dtype=torch.float64, requires_grad=True)
    small_target = torch.rand(1, 11, 12, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: ssim(p, small_target), (small_pred,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda p: psnr(p, small_target), (small_pred,), fast_mode=True)


def test_errors_are_clear():
    a = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="differ"):
        ssim(a, torch.rand(2, 16, 20, 3))
    with pytest.raises(ValueError, match="differ"):
        psnr(a, torch.rand(3, 16, 16, 3))
    with pytest.raises(ValueError, match=r"pred: expected shape \(B, H, W, 3\)"):
        psnr(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3))
    with pytest.raises(TypeError, match="float"):
        psnr(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), torch.zeros(1, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        psnr(torch.full((1, 8, 8, 3), float("nan")), a[:1, :8, :8])
    with pytest.raises(ValueError, match="reduction"):
        ssim(a, a, reduction="sum")


def test_gpu_filter_path_equals_the_cpu_convolution():
    """The banded-matrix filter gen4d runs on a GPU gives the depthwise convolution's values (checked
    here on the CPU, where both run), for non-square images."""
    from gen4d.metrics import image

    x = torch.rand(2, 5, 23, 31, dtype=torch.float64)
    banded = image._filter_banded(x, 11, 1.5)
    conv = image._filter_valid(x, 11, 1.5)  # the CPU path: depthwise convolutions
    assert banded.shape == conv.shape == (2, 5, 13, 21)
    torch.testing.assert_close(banded, conv, rtol=1e-12, atol=1e-12)
