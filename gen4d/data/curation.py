"""Curation of animated assets (Diffusion4D, section 3.2), as pure numpy functions.

Diffusion4D keeps an animated asset when

* its front view moves: SSIM between the front view at t0 and at t(T/4), and at t0 and t(T/2);
  both above ``ssim_high`` (0.95) means *too static*; one below ``ssim_low`` (0.4) means
  *distorted* (geometric distortion or drastic appearance change; the paper calls 0.4 "the lower
  bound", so either score below it rejects; ``distorted_if="both"`` asks for both);
* its alpha never leaves the frame: an orbit or front image whose border pixels carry alpha above
  ``border_alpha`` shows an asset that moves (or reaches) out of the scene's bounds.

It also measures the motion magnitude of eq. 1, ``m(V) = 1/T sum_i ||I_i - Ibar_i||^2`` between
the orbit video V and the static orbit V-bar (same poses, time 0); here ``||.||^2`` is the mean
over pixels and channels (``reduction="mean"``, resolution independent; ``"sum"`` gives the raw
squared norm), on images composited over ``background``.

Everything here takes numpy arrays (no torch, STYLE.md); :func:`figures_from_render` reads a
``gen4d render`` folder with PIL. The ``gen4d curate`` command (gen4d/commands/curate.py) renders
each asset with :func:`gen4d.data.blender.render_asset` and calls :func:`curate_render`.

SSIM: :func:`ssim` is Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, population statistics, the mean over the valid (uncropped) area and over channels:
the same numbers as ``skimage.metrics.structural_similarity(a, b, data_range=1,
channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` (tested).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range
from gen4d.metrics.motion import motion_magnitude  # numpy path: no torch import

__all__ = [
    "CurationConfig",
    "RESULTS_HEADER",
    "check_results_file",
    "ssim",
    "composite",
    "motion_magnitude",
    "border_alpha",
    "front_ssims",
    "curation_figures",
    "decide",
    "curate_render",
    "figures_from_render",
    "find_assets",
    "read_results",
    "curate_assets",
]


@dataclass(frozen=True)
class CurationConfig:
    """Thresholds of the Diffusion4D curation filters."""

    ssim_high: float = 0.95
    """Too static when both front-view SSIMs (t0 vs t(T/4), t0 vs t(T/2)) are above this."""
    ssim_low: float = 0.4
    """Distorted when a front-view SSIM is below this (see distorted_if)."""
    distorted_if: Literal["any", "both"] = "any"
    """Reject as distorted when any / both SSIMs are below ssim_low."""
    border_alpha: float = 0.1
    """Alpha leaves the frame when a border pixel of an orbit or front image exceeds this."""
    border_pixels: int = 1
    """Width of the image border checked for alpha, in pixels."""
    min_coverage: float = 0.0
    """Reject assets whose mean alpha coverage over the orbit is below this fraction (0: off)."""
    min_motion: float = 0.0
    """Reject assets whose motion magnitude m(V) is below this (0: off; Diffusion4D does not filter on it)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background the RGBA renders are composited over before SSIM and m(V)."""

    def __post_init__(self) -> None:
        check_range(self, "ssim_high", -1.0, 1.0)
        check_range(self, "ssim_low", -1.0, 1.0)
        if self.ssim_low > self.ssim_high:
            raise ConfigError(
                "ssim_low", f"expected at most ssim_high = {self.ssim_high}, got {self.ssim_low}", "CurationConfig"
            )
        check_range(self, "border_alpha", 0.0, 1.0)
        check_range(self, "min_coverage", 0.0, 1.0)
        check_positive(self, "border_pixels")
        check_non_negative(self, "min_motion")
        if len(self.background) != 3 or not all(0.0 <= c <= 1.0 for c in self.background):
            raise ConfigError(
                "background", f"expected 3 values in [0, 1] (RGB), got {self.background!r}", "CurationConfig"
            )


# ---------------------------------------------------------------------------------------
# Image maths
# ---------------------------------------------------------------------------------------
def _gaussian_kernel(sigma: float, truncate: float = 3.5) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W, C) with a 1D kernel along H and W."""
    k = len(kernel)
    height, width = image.shape[:2]
    rows = sum(kernel[i] * image[i : height - k + 1 + i] for i in range(k))
    return sum(kernel[i] * rows[:, i : width - k + 1 + i] for i in range(k))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Mean SSIM of two images (H, W) or (H, W, C) (see the module docstring for the exact form)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: images differ in shape {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"ssim: expected (H, W) or (H, W, C) images, got {a.shape}")
    kernel = _gaussian_kernel(sigma)
    if min(a.shape[:2]) < len(kernel):
        raise ValueError(f"ssim: images of {a.shape[1]}x{a.shape[0]} are smaller than the {len(kernel)}-pixel window")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a, kernel), _filter_valid(b, kernel)
    var_a = _filter_valid(a * a, kernel) - mu_a**2
    var_b = _filter_valid(b * b, kernel) - mu_b**2
    cov = _filter_valid(a * b, kernel) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def composite(rgb: np.ndarray, alpha: np.ndarray | None, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """(..., H, W, 3) colour over a constant background with (..., H, W, 1) alpha."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if alpha is None:
        return rgb
    alpha = np.asarray(alpha, dtype=np.float64)
    return rgb * alpha + np.asarray(background, dtype=np.float64) * (1 - alpha)


def border_alpha(alphas: np.ndarray, pixels: int = 1) -> float:
    """Largest alpha on the ``pixels``-wide border of (N, H, W[, 1]) alpha maps."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim == 4:
        alphas = alphas[..., 0]
    p = max(int(pixels), 1)
    border = np.concatenate(
        [
            alphas[:, :p].reshape(len(alphas), -1),
            alphas[:, -p:].reshape(len(alphas), -1),
            alphas[:, :, :p].reshape(len(alphas), -1),
            alphas[:, :, -p:].reshape(len(alphas), -1),
        ],
        axis=1,
    )
    return float(border.max())


def front_ssims(front: np.ndarray) -> tuple[float, float]:
    """SSIM of front frame 0 vs frame T/4 and vs frame T/2 of a (T, H, W, C) front video."""
    count = len(front)
    if count < 3:
        raise ValueError(f"front_ssims: need at least 3 front frames, got {count}")
    quarter, half = count // 4, count // 2
    return ssim(front[0], front[quarter]), ssim(front[0], front[half])


# ---------------------------------------------------------------------------------------
# Figures and decisions
# ---------------------------------------------------------------------------------------
def curation_figures(
    front_rgb: np.ndarray,
    front_alpha: np.ndarray,
    orbit_rgb: np.ndarray,
    orbit_alpha: np.ndarray,
    static_rgb: np.ndarray,
    static_alpha: np.ndarray,
    config: CurationConfig = CurationConfig(),
) -> dict[str, float]:
    """Every figure the filters need, from RGBA videos (T, H, W, 3) + (T, H, W, 1) in [0, 1]:
    front (every time), orbit V and static orbit V-bar (same poses)."""
    bg = config.background
    front = composite(front_rgb, front_alpha, bg)
    s_quarter, s_half = front_ssims(front)
    orbit = composite(orbit_rgb, orbit_alpha, bg)
    static = composite(static_rgb, static_alpha, bg)
    return {
        "ssim_t0_quarter": s_quarter,
        "ssim_t0_half": s_half,
        "border_alpha": max(
            border_alpha(orbit_alpha, config.border_pixels), border_alpha(front_alpha, config.border_pixels)
        ),
        "motion_magnitude": motion_magnitude(orbit, static),
        "motion_magnitude_sum": motion_magnitude(orbit, static) * float(np.prod(np.shape(orbit)[1:])),
        "coverage": float(np.asarray(orbit_alpha, dtype=np.float64).mean()),
    }


def decide(figures: dict[str, float], config: CurationConfig = CurationConfig()) -> tuple[str, str]:
    """("keep" | "reject", reason) for the figures of one asset; the first failing filter wins."""
    s = (figures["ssim_t0_quarter"], figures["ssim_t0_half"])
    if min(s) > config.ssim_high:
        return "reject", f"too static: front-view SSIMs {s[0]:.3f}, {s[1]:.3f} both > {config.ssim_high}"
    low = [v < config.ssim_low for v in s]
    if any(low) if config.distorted_if == "any" else all(low):
        return "reject", f"distorted: front-view SSIMs {s[0]:.3f}, {s[1]:.3f} below {config.ssim_low}"
    if figures["border_alpha"] > config.border_alpha:
        return (
            "reject",
            f"leaves the frame: alpha {figures['border_alpha']:.2f} on the image border (> {config.border_alpha})",
        )
    if figures.get("coverage", 1.0) < config.min_coverage:
        return "reject", f"too small: covers {figures['coverage']:.4f} of the orbit images (< {config.min_coverage})"
    if figures.get("motion_magnitude", math.inf) < config.min_motion:
        return "reject", f"too little motion: m(V) = {figures['motion_magnitude']:.5f} < {config.min_motion}"
    return "keep", "passes every filter"


def _read_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    return array[..., :3], array[..., 3:4]


def _split_arrays(folder: Path, records: list[dict[str, Any]], split: str) -> tuple[np.ndarray, np.ndarray]:
    chosen = sorted((r for r in records if r["split"] == split), key=lambda r: (r["frame_index"], r.get("view", 0)))
    if split == "static_orbit":
        chosen = sorted((r for r in records if r["split"] == split), key=lambda r: r.get("view", 0))
    if not chosen:
        raise ValueError(f"{folder}: the render has no {split!r} images; curation needs orbit, static_orbit and front")
    pairs = [_read_rgba(folder / r["file"]) for r in chosen]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def figures_from_render(folder: str | Path, config: CurationConfig = CurationConfig()) -> dict[str, float]:
    """Curation figures of a complete ``gen4d render`` folder with orbit, static_orbit and front
    sets (numpy + PIL only)."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if not manifest.get("complete"):
        raise ValueError(f"{folder}: the render is not complete")
    records = manifest["images"]
    front = _split_arrays(folder, records, "front")
    orbit = _split_arrays(folder, records, "orbit")
    static = _split_arrays(folder, records, "static_orbit")
    return curation_figures(*front, *orbit, *static, config=config)


def curate_render(folder: str | Path, config: CurationConfig = CurationConfig()) -> dict[str, Any]:
    """``{"decision", "reason", "figures"}`` for one rendered asset."""
    figures = figures_from_render(folder, config)
    decision, reason = decide(figures, config)
    return {"decision": decision, "reason": reason, "figures": figures}


def config_dict(config: CurationConfig) -> dict[str, Any]:
    data = asdict(config)
    data["background"] = list(config.background)
    return data


# ---------------------------------------------------------------------------------------
# Running curation over a folder of assets (renders with Blender; see gen4d curate)
# ---------------------------------------------------------------------------------------
ASSET_SUFFIXES = (".glb", ".gltf", ".fbx", ".blend")


def find_assets(folder: str | Path) -> list[Path]:
    """Asset files (.glb, .gltf, .fbx, .blend) under ``folder``, recursively, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such assets folder: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in ASSET_SUFFIXES)


RESULTS_HEADER = {"format": "gen4d.curation", "version": 1}
"""First line of every curation results file: proves gen4d wrote it (so a rerun may resume it)."""


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and "asset" in value and "decision" in value


def check_results_file(path: str | Path) -> None:
    """Refuse (ValueError naming ``path``) to write curation results into an existing file that
    gen4d did not write: one whose first line is not :data:`RESULTS_HEADER` (files of earlier
    gen4d versions, every line a curation record, are accepted)."""
    from gen4d.data.batch import check_results_file as check

    check(path, RESULTS_HEADER, "curation", legacy=_is_record)


def read_results(path: str | Path) -> dict[str, dict[str, Any]]:
    """Asset -> result of a curation JSONL file (the header line and lines that are not valid JSON,
    e.g. the last line of an interrupted run, are ignored)."""
    from gen4d.data.batch import read_results as read

    return read(path, _is_record)


def curate_assets(
    assets_dir: str | Path | Sequence[Any],
    out: str | Path,
    render_config: Any = None,
    config: CurationConfig = CurationConfig(),
    renders_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool = True,
    keep_renders: bool = True,
    batch: Any = None,
) -> dict[str, dict[str, Any]]:
    """Render and curate every asset under ``assets_dir`` (or in a list of asset files,
    ``procedural:SEED`` names or resolved :class:`gen4d.data.batch.Item`); one JSON line per asset
    in ``out``.

    Runs through :func:`gen4d.data.batch.run_batch`: ``batch`` (a BatchConfig) picks Ray or local
    threads, retries and the per-asset timeout; without it, ``workers`` local threads. Resumable:
    assets already in ``out`` are skipped. Each asset renders in its own Blender process (render
    threads split between the parallel tasks). An asset that fails to import (or to render, or
    runs past its timeout) is recorded with ``decision: "error"`` and its message, and the run
    goes on; an asset without animation is rejected (``no animation``).
    Returns asset -> result for every asset (old and new).
    """
    import shutil
    from dataclasses import replace

    from gen4d.config import to_dict
    from gen4d.data.batch import BatchConfig, Item, ResultsFormat, asset_id, render_threads, run_batch
    from gen4d.data.blender import NoAnimationError, RenderConfig, render_asset
    from gen4d.data.procedural import is_procedural

    if isinstance(assets_dir, (str, Path)) and not is_procedural(str(assets_dir)):
        root = Path(assets_dir).resolve()
        items = [Item(str(p), str(p)) for p in find_assets(root)]
    else:  # an explicit list of asset files, procedural:SEED names and / or resolved items
        root = Path.cwd()
        items = []
        for a in [assets_dir] if isinstance(assets_dir, str) else assets_dir:
            if isinstance(a, Item):
                items.append(a)
            else:
                name = str(a) if is_procedural(str(a)) else str(Path(a).resolve())
                items.append(Item(name, name))
    out = Path(out)
    renders = Path(renders_dir) if renders_dir else out.with_name(out.stem + "_renders")
    if render_config is None:
        # Normalised at the first time, as Diffusion4D's script: an asset that slides out of view is rejected.
        render_config = RenderConfig(
            sets=("orbit", "static_orbit", "front"), size=128, samples=16, normalise_over="first"
        )
    needed = {"orbit", "static_orbit", "front"}
    if not needed <= set(render_config.sets):
        render_config = replace(render_config, sets=tuple(dict.fromkeys((*render_config.sets, *sorted(needed)))))
    batch = batch or BatchConfig(engine="threads", workers=max(1, int(workers)))
    if render_config.threads == 0:
        render_config = replace(render_config, threads=render_threads(batch))
    settings = {"curation": config_dict(config), "render": to_dict(render_config)}

    def failed(item: Item, reason: str) -> dict[str, Any]:
        return {"asset": item.entry, "decision": "error", "reason": reason, "figures": {}, "settings": settings}

    def work(item: Item, timeout: float | None) -> dict[str, Any]:
        path = str(item.path)
        ident = asset_id(Path(path.replace(":", "_")), root)
        folder = renders / ident
        record: dict[str, Any] = {"asset": item.entry, "id": ident}
        try:
            manifest = render_asset(path, folder, render_config, overwrite=True, progress=False, timeout=timeout)
            result = curate_render(folder, config)
            data = json.loads(manifest.read_text())
            record.update(result, clip=(data.get("clip") or {}).get("name"), render=str(folder))
        except NoAnimationError:
            record.update(decision="reject", reason="no animation", figures={})
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as err:  # OSError: timeouts too
            record.update(decision="error", reason=" ".join(str(err).split())[:1000], figures={})
        if not keep_renders:
            shutil.rmtree(folder, ignore_errors=True)
            record.pop("render", None)
        record["settings"] = settings
        return record

    fmt = ResultsFormat(RESULTS_HEADER, "curation", _is_record, legacy=_is_record)
    return run_batch(items, work, failed, out, fmt, batch, progress)
