"""The web player seen through headless Chromium, against gen4d's own renderer.

Used by the tests and ``bench/bench_player.py``. A player view is gen4d's orbit camera
(``{"azimuth", "elevation", "radius", "fov", "target", "time"}``, :func:`gen4d.cameras.orbit` with
the field of view over the larger image side), so :func:`view_cameras` gives the same camera for
gen4d's renderer. The player draws opaque pixels over its background; its alpha is recovered from
two renders, over white and over black: ``alpha = 1 - mean_rgb(white - black)``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gen4d.cameras import Cameras, orbit
from gen4d.export.chromium import Chromium, ChromiumError

__all__ = ["webgl2_renderer", "open_player", "player_render", "view_cameras", "compare_to_gen4d", "measure_fps"]


def webgl2_renderer(browser: Chromium) -> str | None:
    """The browser's WebGL2 renderer (e.g. SwiftShader's name), or None without WebGL2."""
    return browser.evaluate(
        "(() => { const gl = document.createElement('canvas').getContext('webgl2'); if (!gl) return null; "
        "const info = gl.getExtension('WEBGL_debug_renderer_info'); "
        "return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); })()"
    )


def open_player(browser: Chromium, page: str | Path) -> dict[str, Any]:
    """Open a player page (a path or URL) and wait until its asset is loaded; returns its summary."""
    url = page if "://" in str(page) else Path(page).resolve().as_uri()
    browser.open(str(url), ready="window.gen4dPlayer && (gen4dPlayer.ready || gen4dPlayer.error !== null)")
    error = browser.evaluate("window.gen4dPlayer.error")
    if error:
        raise ChromiumError(f"the player could not load its asset: {error}")
    return browser.evaluate("(({count, frames, coeffs, fps, flags}) => ({count, frames, coeffs, fps, flags}))(gen4dPlayer.asset)")  # fmt: skip


def _canvas(browser: Chromium, view: dict[str, Any], width: int, height: int, background) -> np.ndarray:
    from PIL import Image

    settings = {**view, "background": list(background), "playing": False}
    url = browser.evaluate(
        f"gen4dPlayer.setSize({width}, {height}); gen4dPlayer.setView({_js(settings)}); gen4dPlayer.renderOnce(); "
        "document.querySelector('#gen4d-player canvas').toDataURL('image/png')"
    )
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")
    if image.size != (width, height):
        raise ChromiumError(f"the player's canvas is {image.size}, expected {(width, height)}")
    return np.asarray(image, dtype=np.float32) / 255


def _js(value: Any) -> str:
    import json

    return json.dumps(value)


def player_render(
    browser: Chromium, view: dict[str, Any], width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb over white (H, W, 3), alpha (H, W, 1)) of the open player at ``view``."""
    white = _canvas(browser, view, width, height, (1, 1, 1))
    black = _canvas(browser, view, width, height, (0, 0, 0))
    alpha = np.clip(1 - (white - black).mean(-1, keepdims=True), 0, 1)
    return torch.from_numpy(white), torch.from_numpy(alpha)


def view_cameras(view: dict[str, Any], width: int, height: int) -> Cameras:
    """gen4d's camera for a player view."""
    return orbit(
        view["elevation"], view["azimuth"], view["radius"], view["fov"], width, height,
        times=view.get("time", 0.0), target=tuple(view.get("target", (0.0, 0.0, 0.0))),
    )  # fmt: skip


@torch.no_grad()
def compare_to_gen4d(
    browser: Chromium, gaussians_at, view: dict[str, Any], width: int, height: int
) -> dict[str, float]:
    """Silhouette IoU (alpha > 0.5) and PSNR (over white) of the open player at ``view`` against
    gen4d's render of ``gaussians_at(times)`` (e.g. ``Splat4D.at`` or ``model.at``) from the same camera."""
    from gen4d.eval.split import silhouette_iou
    from gen4d.metrics import psnr
    from gen4d.render import RenderOptions, render

    cameras = view_cameras(view, width, height)
    reference = render(gaussians_at(cameras.times), cameras, torch.ones(3), RenderOptions(backend="torch"))
    rgb, alpha = player_render(browser, view, width, height)
    expected_rgb = reference.rgb[0].clamp(0, 1)
    return {
        "iou": silhouette_iou(alpha[None], reference.alpha[0][None]),
        "psnr": float(psnr(rgb, expected_rgb)),
        "foreground": float((reference.alpha > 0.5).float().mean()),
    }


def measure_fps(browser: Chromium, frames: int = 60, width: int | None = None, height: int | None = None) -> dict:
    """Frames per second of the open player over ``frames`` animation frames in which time and
    camera both change (every frame interpolates, sorts, uploads and draws), at ``width x height``
    (None: the window)."""
    size = f"{width}, {height}" if width and height else "null, null"
    return browser.evaluate(f"gen4dPlayer.setSize({size}); gen4dPlayer.measureFps({int(frames)})", await_promise=True)
