"""Matting: the object's alpha for frames or images, from their own alpha, rembg or a plain background.

Methods (:data:`MattingMethod`):

* ``"alpha"``: the images' own alpha; an error when they have none or it is opaque everywhere;
* ``"rembg"``: rembg's saliency model on the colour (any alpha the images carry is ignored);
* ``"color"``: keys out a constant background (the median colour of the border pixels), e.g.
  Zero123++'s generated views or a video shot on a plain backdrop; a heuristic;
* ``"auto"``: ``"alpha"`` when the images carry a usable alpha, else ``"rembg"``.

rembg runs a local ONNX model file and never downloads one: ``RembgConfig.model`` names the file,
or, when it is not given, ``<name>.onnx`` is taken from rembg's model folder (``$U2NET_HOME``,
default ``~/.u2net``). A missing file is an error that says where to put it and how to get it on
a connected machine. The file is run through rembg's sessions for custom models (u2net-style:
320 x 320 input with ImageNet normalisation; isnet-style: 1024 x 1024, mean 0.5, std 1), so any
ONNX model with that input and a (1, 1, h, w) saliency map as its first output works. Colour is
kept as it is (not premultiplied); only alpha comes from the model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from gen4d._checks import check_shape
from gen4d.config import ConfigError
from gen4d.errors import UserError

__all__ = ["MattingMethod", "RembgConfig", "REMBG_MODELS", "matte", "matte_constant_background", "has_usable_alpha"]

MattingMethod = Literal["auto", "alpha", "rembg", "color"]
INSTALL_HINT = "pip install 'gen4d[matting]' (rembg and onnxruntime)"
_RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
# rembg model name -> rembg's session for a local file of that family (its input size and normalisation).
REMBG_MODELS: dict[str, str] = {
    "u2net": "u2net_custom",
    "u2netp": "u2net_custom",
    "u2net_human_seg": "u2net_custom",
    "silueta": "u2net_custom",
    "isnet-general-use": "dis_custom",
}
OPAQUE = 250 / 255  # alpha at or above this everywhere: the frame carries no cut-out


@dataclass(frozen=True)
class RembgConfig:
    """rembg matting with a local ONNX model file (never downloaded)."""

    model: str | None = None
    """ONNX model file (u2net, isnet-general-use, silueta or any rembg-compatible model); None: <name>.onnx in rembg's model folder ($U2NET_HOME, default ~/.u2net)."""
    name: str | None = None
    """Model name: u2net, u2netp, u2net_human_seg, silueta (320 px input) or isnet-general-use (1024 px); picks the pre-processing and the file in $U2NET_HOME. None: from the model file's name (isnet* -> isnet-general-use), else u2net."""

    def __post_init__(self) -> None:
        if self.name is not None and self.name not in REMBG_MODELS:
            raise ConfigError(
                "name", f"expected one of {', '.join(REMBG_MODELS)} (or none), got {self.name!r}", "RembgConfig"
            )

    def resolved_name(self) -> str:
        """The model name that decides the pre-processing (see ``name``)."""
        if self.name is not None:
            return self.name
        if self.model is not None and Path(self.model).name.lower().startswith("isnet"):
            return "isnet-general-use"
        return "u2net"


def download_command(name: str, folder: str = "~/.u2net") -> str:
    """The shell command that fetches rembg's ``name`` model into ``folder`` (run on a connected machine)."""
    return f"mkdir -p {folder} && curl -L -o {folder}/{name}.onnx {_RELEASES}/{name}.onnx"


def _import_rembg():
    try:
        import rembg
    except ImportError as err:
        raise UserError(
            f"matting with rembg needs rembg and onnxruntime: {INSTALL_HINT}; or provide images with alpha "
            "(RGBA PNG frames such as 0_rgba.png, 1_rgba.png, ..., or a webm / mov video with an alpha channel)"
        ) from err
    return rembg


def model_file(config: RembgConfig) -> Path:
    """The ONNX file ``config`` names; a :class:`UserError` saying how to get it when it is missing."""
    name = config.resolved_name()
    if config.model is not None:
        path = Path(config.model).expanduser()
        if not path.is_file():
            raise UserError(
                f"rembg.model: no such file {path}; expected a rembg-compatible ONNX model file. Get one on a "
                f"connected machine ({download_command(name)}), copy it here and pass its path"
            )
        return path
    _import_rembg()
    from rembg.sessions.base import BaseSession

    folder = Path(BaseSession.u2net_home())
    path = folder / f"{name}.onnx"
    if not path.is_file():
        raise UserError(
            f"rembg's {name} model is not in {folder} (rembg's model folder, $U2NET_HOME) and gen4d never downloads "
            f"it; on a connected machine run `{download_command(name)}`, copy the file to {path} (or set U2NET_HOME "
            "to the folder that holds it), or pass the file with --input.rembg.model (gen4d video) / "
            "--condition.rembg.model (sample-vdm)"
        )
    return path


@functools.lru_cache(maxsize=2)
def _session(path: str, mtime: float, session_name: str):
    rembg = _import_rembg()
    try:
        return rembg.new_session(session_name, model_path=path)
    except Exception as err:  # onnxruntime raises its own types for files that are not ONNX models
        reason = " ".join(str(err).split())[:300]
        raise UserError(
            f"{path}: not an ONNX model rembg can run ({type(err).__name__}: {reason}); expected a u2net / isnet / "
            f"silueta .onnx file, e.g. from `{download_command('u2net')}` on a connected machine"
        ) from None


def _rembg_alpha(images: torch.Tensor, config: RembgConfig) -> torch.Tensor:
    """(N, H, W, 3+) in [0, 1] -> (N, H, W, 1) alpha from rembg."""
    rembg = _import_rembg()
    path = model_file(config)
    session = _session(str(path.resolve()), path.stat().st_mtime, REMBG_MODELS[config.resolved_name()])
    rgb = (images[..., :3].detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    try:
        masks = [np.asarray(rembg.remove(image, session=session, only_mask=True), dtype=np.uint8) for image in rgb]
    except Exception as err:  # a model whose input or output does not fit rembg's session
        reason = " ".join(str(err).split())[:300]
        raise UserError(
            f"{path}: rembg could not run this model ({type(err).__name__}: {reason}); expected a "
            f"{config.resolved_name()}-style model (set rembg.name to the model's family)"
        ) from None
    return torch.from_numpy(np.stack(masks)).to(images.device).float().div(255.0)[..., None]


def matte_constant_background(images: torch.Tensor, tolerance: float = 0.08, softness: float = 0.04) -> torch.Tensor:
    """Alpha (N, 1, H, W) for images (N, 3, H, W) in [0, 1] on a constant background: the background
    colour is the median of the border pixels and alpha ramps from 0 to 1 as the colour distance goes
    from ``tolerance`` to ``tolerance + softness``. A heuristic; use rembg for natural images."""
    check_shape("images", images, (None, 3, None, None))
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # (N, 3, 1, 1)
    distance = (images - background).abs().amax(dim=1, keepdim=True)
    return ((distance - tolerance) / max(softness, 1e-6)).clamp(0, 1)


def has_usable_alpha(images: torch.Tensor) -> bool:
    """True when (N, H, W, C) images carry alpha that is not opaque everywhere."""
    return images.shape[-1] == 4 and bool((images[..., 3] < OPAQUE).any())


def matte(
    images: torch.Tensor,
    method: MattingMethod = "auto",
    rembg: RembgConfig = RembgConfig(),
    source: str = "the input",
) -> torch.Tensor:
    """(N, H, W, 3|4) float images in [0, 1] -> (N, H, W, 4) RGBA with the object's alpha (colour
    unchanged). ``source`` names the file / folder in error messages."""
    check_shape("images", images, ("N", "H", "W", None))
    if images.shape[-1] not in (3, 4):
        raise ValueError(f"images: expected 3 (RGB) or 4 (RGBA) channels last, got {images.shape[-1]}")
    images = images.float()
    usable = has_usable_alpha(images)
    if method == "auto":
        method = "alpha" if usable else "rembg"
    if method == "alpha":
        if not usable:
            what = "opaque everywhere" if images.shape[-1] == 4 else "RGB only"
            raise UserError(
                f"{source}: no usable alpha ({what}) and matting='alpha'; provide RGBA frames (0_rgba.png, "
                "1_rgba.png, ...) or an alpha webm / mov, or choose matting 'auto' / 'rembg' / 'color'"
            )
        return images
    if method == "rembg":
        alpha = _rembg_alpha(images, rembg)
    elif method == "color":
        alpha = matte_constant_background(images[..., :3].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    else:
        raise ValueError(f"unknown matting method {method!r}; expected one of auto, alpha, rembg, color")
    return torch.cat([images[..., :3], alpha], dim=-1)
