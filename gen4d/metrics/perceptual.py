"""LPIPS (Zhang et al. 2018) with VGG16 or AlexNet trunks, written without torchvision.

``lpips(pred, target, net="vgg")`` is differentiable with respect to both images (the networks
are frozen), so the reconstruction loop can use it as a loss.

Weights (two parts, neither downloaded by gen4d):

* **Trunk**: torchvision's ImageNet files ``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``.
  :class:`VGG16Features` and :class:`AlexNetFeatures` reproduce torchvision's ``features``
  layer layout (``features.<i>.weight``), so those files load by key. Found as described in
  :mod:`gen4d.metrics.weights` (explicit path, ``$GEN4D_WEIGHTS_DIR``, torch hub's cache).
* **Linear heads** (the 1x1 convolutions calibrated on human judgements): the ``lpips`` package
  ships them as ``lpips/weights/v0.1/{vgg,alex}.pth``; they are read from its folder without
  importing it (``import lpips`` imports torchvision). Install with ``pip install --no-deps lpips``.

The computation is the ``lpips`` package's ``LPIPS(net, version="0.1")(x, y, normalize=True)``
(which torchmetrics' ``LearnedPerceptualImagePatchSimilarity(normalize=True)`` wraps): inputs in
[0, 1] mapped to [-1, 1], the fixed ScalingLayer shift/scale, five ReLU taps, unit-normalised
channels, squared differences weighted by the heads, spatial mean, summed over taps.
Agreement with the reference on real weights is not tested here (no weights on the CI machine);
the layer layout and formula are (tests/test_metrics_lpips.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gen4d.io import read_torch_state_dict
from gen4d.metrics.image import _pair, _reduce
from gen4d.metrics.weights import MissingWeightsError, find_weights

__all__ = [
    "LPIPS",
    "LPIPSNet",
    "VGG16Features",
    "AlexNetFeatures",
    "TRUNKS",
    "lpips",
    "load_lpips",
    "lpips_head_path",
]

LPIPSNet = Literal["vgg", "alex"]


@dataclass(frozen=True)
class TrunkSpec:
    """A torchvision trunk LPIPS reads features from."""

    file: str
    """torchvision's pretrained file name."""
    url: str
    """Where torchvision downloads it from."""
    channels: tuple[int, ...]
    """Channels of the five tapped ReLU outputs."""
    min_size: int
    """Smallest image side the trunk accepts (all pooling stages must keep >= 1 pixel)."""


TRUNKS: dict[str, TrunkSpec] = {
    "vgg": TrunkSpec(
        "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", (64, 128, 256, 512, 512), 16
    ),
    "alex": TrunkSpec(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        (64, 192, 384, 256, 256),
        31,
    ),
}

# LPIPS v0.1 input normalisation (the lpips package's ScalingLayer), applied to [-1, 1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _TappedFeatures(nn.Module):
    """``features`` (torchvision layout) run up to the last tap, returning every tap's output."""

    taps: tuple[int, ...] = ()

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outs.append(x)
                if index == self.taps[-1]:
                    break
        return outs

    def load_torchvision(self, path: str | os.PathLike) -> None:
        """Load torchvision's whole-model state dict (``features.*`` keys are used, the classifier ignored)."""
        state = read_torch_state_dict(path, f"a torchvision {type(self).__name__[:-8]} checkpoint")
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        missing, unexpected = self.load_state_dict(features, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a torchvision {type(self).__name__[:-8]} checkpoint "
                f"(missing keys {missing[:4]}, unexpected {unexpected[:4]})"
            )


class VGG16Features(_TappedFeatures):
    """torchvision ``vgg16().features`` (13 3x3 convs, ReLU, 5 max-pools); taps relu1_2 ... relu5_3."""

    taps = (3, 8, 15, 22, 29)

    def __init__(self) -> None:
        layers: list[nn.Module] = []
        in_channels = 3
        for item in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_channels = int(item)
        super().__init__(layers)


class AlexNetFeatures(_TappedFeatures):
    """torchvision ``alexnet().features`` (the "one weird trick" variant); taps relu1 ... relu5."""

    taps = (1, 4, 7, 9, 11)

    def __init__(self) -> None:
        super().__init__(
            [
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=3, stride=2),
            ]
        )


class _Linear(nn.Module):
    """The lpips package's NetLinLayer: ``model = Sequential(Dropout, Conv1x1 (no bias))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Heads(nn.Module):
    """``lin0`` ... ``lin4``, named as in the lpips package's weight files."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        for index, count in enumerate(channels):
            self.add_module(f"lin{index}", _Linear(count))

    def __iter__(self):
        return iter(self.children())


def _trunk(net: str) -> _TappedFeatures:
    if net == "vgg":
        return VGG16Features()
    if net == "alex":
        return AlexNetFeatures()
    raise ValueError(f"lpips: unknown net {net!r}; expected 'vgg' or 'alex'")


class LPIPS(nn.Module):
    """Frozen LPIPS network. ``forward(pred, target)`` on (B, H, W, 3) in [0, 1] -> (B,) distances.

    ``LPIPS(net)`` has random weights (tests); :meth:`from_pretrained` loads real ones.
    """

    def __init__(self, net: LPIPSNet = "vgg") -> None:
        super().__init__()
        self.net = net
        self.trunk = _trunk(net)
        self.heads = _Heads(TRUNKS[net].channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(
        cls,
        net: LPIPSNet = "vgg",
        trunk_weights: str | os.PathLike | None = None,
        head_weights: str | os.PathLike | None = None,
    ) -> LPIPS:
        """Load torchvision's trunk file and the lpips package's v0.1 heads.

        trunk_weights: the torchvision file or a folder holding it (default: searched, see
        :mod:`gen4d.metrics.weights`). head_weights: a ``{net}.pth`` heads file (default: the
        installed lpips package's). Raises :class:`MissingWeightsError` saying where to put them.
        """
        model = cls(net)
        spec = TRUNKS[net]
        trunk_path = find_weights(
            spec.file, f"LPIPS-{net} trunk (torchvision {net.upper()} ImageNet weights)", spec.url, trunk_weights
        )
        model.trunk.load_torchvision(trunk_path)
        model.load_heads(head_weights if head_weights is not None else lpips_head_path(net))
        return model

    def load_heads(self, path: str | os.PathLike) -> None:
        """Load a lpips-package heads file (keys ``lin<i>.model.1.weight``)."""
        state = read_torch_state_dict(path, f"LPIPS-{self.net} linear heads")
        state = {k: v for k, v in state.items() if k.startswith("lin")}
        missing, unexpected = self.heads.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not LPIPS-{self.net} linear heads (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )

    def train(self, mode: bool = True) -> LPIPS:
        # Always in eval mode: the heads' dropout must never be active in a metric or a loss.
        return super().train(False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised tap features of (B, H, W, 3) images in [0, 1]."""
        x = images.permute(0, 3, 1, 2) * 2 - 1
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        outs = self.trunk(x)
        return [f / (torch.sqrt((f * f).sum(dim=1, keepdim=True)) + 1e-10) for f in outs]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = _pair(pred, target)
        spec = TRUNKS[self.net]
        height, width = pred.shape[1:3]
        if min(height, width) < spec.min_size:
            raise ValueError(
                f"lpips-{self.net}: images are {width}x{height}; expected at least {spec.min_size}x{spec.min_size}"
            )
        count = pred.shape[0]
        feats = self.features(torch.cat([pred, target], dim=0))
        total = pred.new_zeros(count)
        for feat, head in zip(feats, self.heads):
            diff = (feat[:count] - feat[count:]) ** 2
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


def lpips_head_path(net: str, version: str = "0.1") -> Path:
    """The heads file shipped by the installed ``lpips`` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"LPIPS-{net} linear heads: the lpips package is not installed; "
            "pip install --no-deps 'lpips>=0.1.4' (it ships the heads; --no-deps keeps torchvision out), "
            "or pass head_weights=<path to {net}.pth>"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / f"v{version}" / f"{net}.pth"
    if not path.is_file():
        raise MissingWeightsError(
            f"LPIPS-{net} linear heads: {path} is missing; reinstall lpips (pip install --no-deps lpips)"
        )
    return path


@functools.lru_cache(maxsize=4)
def _cached(net: str, trunk_weights: str | None, head_weights: str | None, device: str, dtype: torch.dtype) -> LPIPS:
    return LPIPS.from_pretrained(net, trunk_weights, head_weights).to(device=device, dtype=dtype)


def load_lpips(
    net: LPIPSNet = "vgg",
    trunk_weights: str | os.PathLike | None = None,
    head_weights: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LPIPS:
    """A pretrained :class:`LPIPS`, cached per (net, weights, device, dtype)."""
    return _cached(
        net,
        None if trunk_weights is None else str(trunk_weights),
        None if head_weights is None else str(head_weights),
        str(torch.device(device)),
        dtype,
    )


def lpips(
    pred: torch.Tensor,
    target: torch.Tensor,
    net: LPIPSNet = "vgg",
    reduction: Literal["mean", "none"] = "mean",
    model: LPIPS | None = None,
) -> torch.Tensor:
    """LPIPS distance of (B, H, W, 3) images in [0, 1] (0 = identical; lower is better).

    Uses ``model`` if given, else the pretrained network from :func:`load_lpips` (raises
    :class:`gen4d.metrics.weights.MissingWeightsError` when its weights are not on disk).
    reduction: ``"mean"`` -> scalar; ``"none"`` -> (B,).
    """
    if model is None:
        model = load_lpips(net, device=pred.device, dtype=pred.dtype if pred.is_floating_point() else torch.float32)
    return _reduce(model(pred, target), reduction)
