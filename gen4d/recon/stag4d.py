"""STAG4D: video -> 4D Gaussians (Zeng et al. 2024), from the paper and FACTS.md section 1.

Pipeline (:func:`run_video_to_4d`):

1. **Input**: a video / frame folder, preprocessed by :mod:`gen4d.data.video_input` (one crop
   for all frames, RGBA), seen by a reference camera at elevation 0, azimuth 0, radius 2, fovy
   49.1 deg; or a gen4d dataset folder, whose ``front`` split (with its own cameras and times)
   is the input video.
2. **Anchored multi-views**: six Zero123++ views per frame with the temporal anchor
   (:mod:`gen4d.diffusion.zero123pp`), cached in ``RUN/multiview``; or ground-truth renders of the
   dataset's ``zero123pp`` split ("oracle" mode); or none.
3. **4D optimisation** (:func:`optimise`): canonical Gaussians (10k in a ball of radius 0.5,
   opacity 0.1, SH 0) + a HexPlane field bypassed for the first ``static_steps``; per step:

   * the reference view at each of the step's ``views_per_step`` frames (as the public code's
     batch of 4): ``r * (20000 MSE(rgb) + 5000 MSE(alpha))`` on white per frame, summed over
     the frames, ``r`` ramping 0 -> 1 over ``ramp_steps``;
   * ``views_per_step`` random views (elevation [-30, 30), azimuth [-180, 180), the reference
     radius and field of view, 128 / 256 / 512 px as training progresses, black background with
     probability 0.5), one at each of the step's frames, all rendered in one call, scored by
     Zero-1-to-3 SDS (CFG 5, w = 1 - alphabar, annealed t range) conditioned on the input frame
     when |azimuth| < 30 deg or with probability 0.6, else on the same frame's anchored view
     nearest in azimuth (pose taken relative to it);
   * optionally a photometric loss on the anchored views (the paper's intent; the public code
     used them only as SDS conditions) - off in the ``stag4d`` preset, on in ``fast``;
   * HexPlane regularisers (plane TV 0.05, time smoothness 5, time-plane L1 0.05, in the form of
     STAG4D's code: second differences along the plane rows, summed over scales and planes) and an
     anisotropy regulariser on the *scales* (the public code applied it to log-scales, where it is
     always zero);
   * adaptive densification from the 2D-mean gradients of every render of the step, threshold
     at the top 2.5 % (``gen4d.densify`` percentile mode), no opacity reset.

4. **Outputs**: ``videos/front.mp4``, ``back.mp4``, ``round.mp4`` (+ gifs), ``ply/frame_XXXX.ply``,
   ``checkpoint/`` (model + training state, ``--resume``), ``frames/`` (the preprocessed input),
   ``multiview/`` (generated grids), ``metrics.json`` (per-stage times, peak memory, held-out
   PSNR / SSIM when the input dataset has an ``eval`` split), ``config.json``, ``log.txt``.

Known defects of the public code not copied: anomaly detection every step (off here), the scale
regulariser on log-scales (fixed), resuming without the deformation (the checkpoint holds the
field), a hard-coded cache path (the anchor takes an explicit context; see
:mod:`gen4d.diffusion.anchor`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from gen4d.cameras import Cameras, orbit, zero123_pose_embedding
from gen4d.config import ConfigError, check_non_negative, check_positive, check_range, from_dict, to_dict
from gen4d.data.dataset import MultiViewVideo
from gen4d.data.video_input import VideoInputConfig
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, DensifyStrategy
from gen4d.diffusion.sds import TimestepAnneal, sample_timesteps, timestep_range
from gen4d.diffusion.zero123pp import MultiViewConfig
from gen4d.gaussians.core import random_in_sphere
from gen4d.io import read_json, write_json
from gen4d.recon.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from gen4d.recon.construct import resolve_device
from gen4d.recon.losses import LossWeights, weighted_regularizers
from gen4d.recon.model import DynamicGaussians
from gen4d.recon.optim import LearningRates, build_optimizer, set_learning_rates
from gen4d.recon.outputs import evaluate, peak_memory, write_renders
from gen4d.render import RenderOptions, resolve_backend

__all__ = [
    "RandomViews",
    "SDSConfig",
    "Stag4DLoss",
    "Stag4DOutput",
    "Stag4DConfig",
    "PRESETS",
    "preset",
    "spherical",
    "optimise",
    "reference_losses",
    "run_video_to_4d",
    "load_guidance",
    "load_multiview_model",
]


# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomViews:
    """Random SDS views around the object."""

    elevation_deg: tuple[float, float] = (-30.0, 30.0)
    """Elevation range [low, high) in degrees (relative to the reference view's elevation 0)."""
    azimuth_deg: tuple[float, float] = (-180.0, 180.0)
    """Azimuth range [low, high) in degrees (0 = the reference view)."""
    sizes: tuple[int, ...] = (128, 256, 512)
    """Render sizes used as training progresses."""
    size_steps: tuple[float, ...] = (0.3, 0.6)
    """Fractions of ramp_steps at which the next size starts (len(sizes) - 1 values)."""
    black_background_prob: float = 0.5
    """Probability of a black (instead of white) background for a random view."""

    def __post_init__(self) -> None:
        if not self.sizes or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in self.sizes):
            raise ConfigError("sizes", f"expected integers > 0, got {self.sizes!r}", "RandomViews")
        if len(self.sizes) != len(self.size_steps) + 1:
            raise ConfigError("size_steps", f"expected {len(self.sizes) - 1} value(s) (one fewer than sizes), "
                                            f"got {len(self.size_steps)}", "RandomViews")
        check_range(self, "black_background_prob", 0.0, 1.0)


@dataclass(frozen=True)
class SDSConfig:
    """Zero-1-to-3 score distillation."""

    weight: float = 1.0
    """lambda_zero123 (0 disables SDS and the Zero-1-to-3 model)."""
    model: str = "ashawkey/zero123-xl-diffusers"
    """Zero-1-to-3 weights: local folder, hub id, or 'random:full' / 'random:tiny' (random weights, benchmarks / tests)."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Model dtype on CUDA (CPU runs float32)."""
    guidance_scale: float = 5.0
    """Classifier-free guidance scale."""
    anneal: TimestepAnneal = field(default_factory=TimestepAnneal)
    """Timestep range annealing (fractions of the 1000 training steps)."""
    input_azimuth_deg: float = 30.0
    """Views with |azimuth| below this are conditioned on the input frame."""
    input_prob: float = 0.6
    """Otherwise the input frame conditions with this probability, else the nearest anchored view."""
    condition_prep: Literal["pil", "torch"] = "pil"
    """CLIP input of a condition image: 'pil' (the public code: uint8, PIL bicubic) or 'torch' (antialiased bicubic)."""
    posterior: Literal["mean", "sample"] = "mean"
    """VAE latents: posterior 'mean' (deterministic, exact resume) or 'sample' (the public code)."""

    def __post_init__(self) -> None:
        check_non_negative(self, "weight", "guidance_scale", "input_azimuth_deg")
        check_range(self, "input_prob", 0.0, 1.0)


@dataclass(frozen=True)
class Stag4DLoss:
    """Loss weights."""

    ref_rgb: float = 20000.0
    """MSE of the reference view's colour (on white), times the ramp r."""
    ref_alpha: float = 5000.0
    """MSE of the reference view's alpha, times the ramp r."""
    multiview_rgb: float = 0.0
    """MSE of the anchored views' colour (on white), times r (0 = off, as the public code)."""
    multiview_alpha: float = 0.0
    """MSE of the anchored views' alpha, times r."""
    plane_tv: float = 0.05
    """HexPlane spatial-plane TV."""
    time_smoothness: float = 5.0
    """HexPlane second difference along time."""
    time_l1: float = 0.05
    """HexPlane L1 of (1 - time planes)."""
    anisotropy: float = 1.0
    """Weight of sum_i relu(max_scale_i / min_scale_i - anisotropy_ratio) (PhysGaussian; on scales)."""
    anisotropy_ratio: float = 7.5
    """Allowed ratio of a Gaussian's largest to smallest scale."""

    def __post_init__(self) -> None:
        check_non_negative(self, *(f.name for f in fields(self)))


@dataclass(frozen=True)
class Stag4DOutput:
    """What a run writes at the end."""

    video_size: int = 512
    """Side of the front / back / round videos."""
    round_frames: int = 120
    """Frames of the round (orbit) video."""
    loops: int = 2
    """Times the front / back videos play the clip."""
    fps: int = 24
    """Video frame rate."""
    ply: bool = True
    """Write the per-frame PLY sequence."""
    videos: bool = True
    """Write the videos."""
    renders: bool = True
    """Write renders of the held-out eval views (when the input dataset has them)."""

    def __post_init__(self) -> None:
        check_positive(self, "video_size", "round_frames", "loops", "fps")


@dataclass(frozen=True)
class Stag4DConfig:
    """STAG4D video-to-4D (defaults: the published settings, preset 'stag4d')."""

    seed: int = 0
    """Seed of initialisation and of every per-step random choice."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ..."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser."""
    steps: int = 8000
    """Optimisation steps."""
    static_steps: int = 700
    """First steps with the deformation bypassed (trained on the middle frame only)."""
    views_per_step: int = 4
    """Frames per step (STAG4D's batch): each gets the reference-view loss and one random SDS view."""
    anchored_per_step: int = 0
    """Anchored views rendered per step for the photometric loss (0 = all six of the frame)."""
    ramp_steps: int = 2000
    """Steps over which the reference-loss ramp r and the render sizes progress."""
    ref_fov_deg: float = 49.1
    """Field of view of the reference camera for video input (Zero-1-to-3's render setting)."""
    ref_radius: float = 2.0
    """Distance of the reference camera for video input."""
    num_points: int = 10000
    """Initial Gaussians (uniform in a ball)."""
    init_radius: float = 0.5
    """Radius of that ball."""
    init_opacity: float = 0.1
    """Initial opacity."""
    deform: DeformConfig = field(default_factory=lambda: DeformConfig(hexplane=HexPlaneConfig(regularizer="stag4d")))
    """Deformation field (HexPlane 32 features, [64, 64, 64, 25], multires 1/2/4/8, bounds 1.6, STAG4D's regularisers)."""
    densify: DensifyConfig = field(
        default_factory=lambda: DensifyConfig(
            start=1200, stop=6000, every=100, threshold_mode="percentile", percentile=2.5, percent_dense=0.1,
            prune_opacity=0.01, prune_max_scale=0.1, prune_min_scale=0.001, reset_every=0,
        )  # fmt: skip
    )
    """Adaptive densification (scene extent 1)."""
    lr: LearningRates = field(
        default_factory=lambda: LearningRates(
            means=2e-3, means_final=2e-5, sh=5e-3, opacity=2e-2, scales=1e-2, quats=2e-3, field_mlp=1.6e-3,
            field_mlp_final=1.6e-4, field_grid=1.6e-2, field_grid_final=1.6e-3, decay_steps=2000, adam_eps=1e-15,
        )  # fmt: skip
    )
    """Learning rates (log-linear decay over decay_steps)."""
    loss: Stag4DLoss = field(default_factory=Stag4DLoss)
    """Loss weights."""
    views: RandomViews = field(default_factory=RandomViews)
    """Random views."""
    sds: SDSConfig = field(default_factory=SDSConfig)
    """Zero-1-to-3 SDS."""
    multiview: MultiViewConfig = field(default_factory=MultiViewConfig)
    """Zero123++ with the temporal anchor."""
    view_matting: Literal["color", "rembg"] = "color"
    """Alpha of generated views: 'color' keys out the constant background, 'rembg' uses rembg."""
    input: VideoInputConfig = field(default_factory=VideoInputConfig)
    """Input reading / preprocessing (its size is the reference view's resolution)."""
    output: Stag4DOutput = field(default_factory=Stag4DOutput)
    """Outputs."""
    log_every: int = 50
    """Log (and check for non-finite losses) every this many steps."""
    checkpoint_every: int = 1000
    """Write RUN/checkpoint every this many steps (and at the end; 0 = only at the end)."""
    eval_every: int = 0
    """Held-out PSNR every this many steps when eval views exist (0 = only at the end)."""

    def __post_init__(self) -> None:
        check_positive(self, "steps", "ref_radius", "num_points", "init_radius", "log_every")
        check_non_negative(self, "static_steps", "views_per_step", "anchored_per_step", "ramp_steps",
                           "checkpoint_every", "eval_every")
        check_range(self, "ref_fov_deg", 1.0, 179.0)
        check_range(self, "init_opacity", 0.0, 1.0)


PRESETS: dict[str, Stag4DConfig] = {
    # The published settings (FACTS.md section 1).
    "stag4d": Stag4DConfig(),
    # Ours: about 4x fewer steps and smaller renders, Zero123++ at 30 steps with 8-frame anchor
    # batches, and the anchored views also as photometric supervision.
    "fast": Stag4DConfig(
        steps=2000,
        static_steps=300,
        ramp_steps=800,
        deform=DeformConfig(hexplane=HexPlaneConfig(resolution=(32, 32, 32, 16), multires=(1, 2, 4), regularizer="stag4d")),
        densify=DensifyConfig(
            start=400, stop=1600, every=100, threshold_mode="percentile", percentile=2.5, percent_dense=0.1,
            prune_opacity=0.01, prune_max_scale=0.1, prune_min_scale=0.001, reset_every=0, max_gaussians=100_000,
        ),  # fmt: skip
        lr=LearningRates(
            means=2e-3, means_final=2e-5, sh=5e-3, opacity=2e-2, scales=1e-2, quats=2e-3, field_mlp=1.6e-3,
            field_mlp_final=1.6e-4, field_grid=1.6e-2, field_grid_final=1.6e-3, decay_steps=1000, adam_eps=1e-15,
        ),  # fmt: skip
        loss=Stag4DLoss(multiview_rgb=2000.0, multiview_alpha=500.0),
        views=RandomViews(sizes=(128, 256), size_steps=(0.5,)),
        sds=SDSConfig(anneal=TimestepAnneal(steps=1000)),
        multiview=MultiViewConfig(steps=30, frames_per_batch=8),
        input=VideoInputConfig(size=256),
        output=Stag4DOutput(video_size=256, round_frames=96),
        log_every=50,
        checkpoint_every=0,
    ),
}


def preset(name: str) -> Stag4DConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown STAG4D preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


# ---------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------
def spherical(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(elevation deg, azimuth deg in (-180, 180], radius) of camera centres (gen4d convention)."""
    centres = cameras.centers
    radius = centres.norm(dim=-1).clamp_min(1e-8)
    elevation = torch.rad2deg(torch.asin((centres[:, 2] / radius).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(centres[:, 0], -centres[:, 1]))
    return elevation, azimuth, radius


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    return (angle + 180.0) % 360.0 - 180.0


def _equivalent_radius(cameras: Cameras, radius: torch.Tensor, fov_deg: float) -> torch.Tensor:
    """Distance at which a ``fov_deg`` camera sees the object as large as ``cameras`` do."""
    fov = torch.deg2rad(cameras.fov_y_deg.to(radius))
    return radius * torch.tan(fov / 2) / math.tan(math.radians(fov_deg) / 2)


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------
def _dtype(name: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def load_guidance(config: SDSConfig, device: torch.device):
    """The Zero-1-to-3 guidance for ``config.model`` ('random:full' / 'random:tiny' build random weights)."""
    from gen4d.diffusion.zero123 import Zero123Guidance

    dtype = _dtype(config.dtype, device)
    if config.model == "random:tiny":
        guidance = Zero123Guidance.tiny().to(device)
    elif config.model == "random:full":
        guidance = Zero123Guidance.full_size(device=device).to(device, dtype)
    else:
        guidance = Zero123Guidance.from_pretrained(config.model, device=device, dtype=dtype)
    guidance.condition_prep, guidance.posterior = config.condition_prep, config.posterior
    return guidance


def load_multiview_model(config: MultiViewConfig, device: torch.device):
    """The Zero123++ model for ``config.model`` ('random:full' / 'random:tiny' build random weights)."""
    from gen4d.diffusion.zero123pp import Zero123Plus

    dtype = _dtype(config.dtype, device)
    if config.model == "random:tiny":
        return Zero123Plus.tiny(version=config.version).to(device)
    if config.model == "random:full":
        return Zero123Plus.full_size(config.version, device=device).to(device, dtype)
    return Zero123Plus.from_pretrained(config.model, config.version, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------
# The optimisation
# ---------------------------------------------------------------------------------------
@dataclass
class _Conditions:
    """Zero-1-to-3 conditions of the input frames and the anchored views, with their poses."""

    frames: Any  # Zero123Condition (F)
    frame_pose: torch.Tensor  # (F, 3) elevation, azimuth, radius (equivalent at the render fov)
    views: Any | None  # Zero123Condition (M) or None
    view_pose: torch.Tensor | None  # (M, 3)
    view_frame: torch.Tensor | None  # (M,) frame index of each view


def _on_white(video: MultiViewVideo) -> torch.Tensor:
    return video.composited((1.0, 1.0, 1.0))


def _encode_conditions(guidance, reference: MultiViewVideo, views: MultiViewVideo | None, fov_deg: float) -> _Conditions:
    """Encode every possible SDS condition once (input frames and anchored views, on white)."""
    images = _on_white(reference).permute(0, 3, 1, 2)
    frames = guidance.encode_condition(images)
    el, az, r = spherical(reference.cameras)
    frame_pose = torch.stack([el, az, _equivalent_radius(reference.cameras, r, fov_deg)], -1)
    if views is None or len(views) == 0:
        return _Conditions(frames, frame_pose, None, None, None)
    view_images = _on_white(views).permute(0, 3, 1, 2)
    encoded = [guidance.encode_condition(view_images[i : i + 16]) for i in range(0, len(views), 16)]
    from gen4d.diffusion.zero123 import Zero123Condition

    view_cond = Zero123Condition.cat(encoded)
    vel, vaz, vr = spherical(views.cameras)
    view_pose = torch.stack([vel, vaz, _equivalent_radius(views.cameras, vr, fov_deg)], -1)
    return _Conditions(frames, frame_pose, view_cond, view_pose, views.frames.clone())


class _Sampler:
    """Every random choice of step s comes from a generator seeded by (seed, s): resumable runs
    repeat exactly the choices an uninterrupted run would make."""

    def __init__(self, seed: int):
        self.seed = seed

    def generator(self, step: int, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 7 + salt)


def _render_size(config: Stag4DConfig, step: int) -> int:
    ratio = min(step / max(config.ramp_steps, 1), 1.0)
    index = sum(ratio >= s for s in config.views.size_steps)
    return int(config.views.sizes[index])


def _anisotropy(model: DynamicGaussians, ratio: float) -> torch.Tensor:
    scales = torch.exp(model.params["log_scales"])
    return torch.relu(scales.max(-1).values / (scales.min(-1).values + 1e-8) - ratio).sum()


def reference_losses(
    rgb: torch.Tensor,
    alpha: torch.Tensor,
    target_rgb: torch.Tensor,
    target_alpha: torch.Tensor,
    ramp: float,
    weights: Stag4DLoss,
) -> dict[str, torch.Tensor]:
    """STAG4D's reference-view loss over the K frames of a step: renders rgb (K, H, W, 3) and alpha
    (K, H, W, 1) against the input frames on white; per frame ``r * (w_rgb MSE(rgb) + w_alpha
    MSE(alpha))``, summed over the frames (the public code adds one such loss per frame of its batch)."""
    if rgb.shape != target_rgb.shape or alpha.shape != target_alpha.shape:
        raise ValueError(
            f"reference_losses: renders {tuple(rgb.shape)} / {tuple(alpha.shape)} vs targets "
            f"{tuple(target_rgb.shape)} / {tuple(target_alpha.shape)}; expected equal shapes"
        )
    rgb_mse = (rgb - target_rgb).square().flatten(1).mean(1).sum()
    alpha_mse = (alpha - target_alpha).square().flatten(1).mean(1).sum()
    return {"ref_rgb": ramp * weights.ref_rgb * rgb_mse, "ref_alpha": ramp * weights.ref_alpha * alpha_mse}


def optimise(
    reference: MultiViewVideo,
    views: MultiViewVideo | None,
    guidance,
    config: Stag4DConfig,
    run_dir: str | os.PathLike,
    evaluation: MultiViewVideo | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> tuple[DynamicGaussians, dict[str, Any]]:
    """Optimise 4D Gaussians to the reference video (``front``-style, F frames with cameras and
    times), the anchored views (any frames, with cameras, times and ``frames``) and SDS from
    ``guidance`` (a :class:`gen4d.diffusion.zero123.Zero123Guidance`, or None to skip SDS).
    Checkpoints go to ``run_dir/checkpoint``. Returns the model and a summary."""
    run_dir = Path(run_dir)
    device = resolve_device(config.device)
    log = log or (lambda message: None)
    options = RenderOptions(backend=config.backend)
    num_frames = len(reference)
    if num_frames < 2:
        raise ValueError(f"the reference video has {num_frames} frame(s); video-to-4D needs at least 2")
    if reference.alphas is None:
        raise ValueError("the reference video has no alpha; STAG4D needs RGBA frames (the mask loss)")
    ref_images = _on_white(reference).to(device)
    ref_alphas = reference.alphas.to(device)
    ref_cams = reference.cameras.to(device)
    ref_el, ref_az, ref_r = spherical(reference.cameras)
    fov = float(reference.cameras.fov_y_deg[0])
    radius = float(ref_r.mean())
    use_sds = guidance is not None and config.sds.weight > 0 and config.views_per_step > 0
    mv_weight = config.loss.multiview_rgb > 0 or config.loss.multiview_alpha > 0
    views_by_frame: dict[int, torch.Tensor] = {}
    if views is not None and len(views):
        if views.alphas is None:
            raise ValueError("anchored views need alpha (matte them first)")
        for frame in torch.unique(views.frames).tolist():
            views_by_frame[int(frame)] = torch.nonzero(views.frames == frame).flatten()
        view_images = _on_white(views).to(device)
        view_alphas = views.alphas.to(device)
        view_cams = views.cameras.to(device)
    conditions = _encode_conditions(guidance, reference, views, fov) if use_sds else None
    if use_sds:
        from gen4d.diffusion.zero123 import Zero123Condition

    torch.manual_seed(config.seed)
    sampler = _Sampler(config.seed)
    strategy = DensifyStrategy(config.densify, scene_extent=1.0, seed=config.seed)
    reg_weights = LossWeights(plane_tv=config.loss.plane_tv, time_smoothness=config.loss.time_smoothness, time_l1=config.loss.time_l1)
    start, history, train_time = 0, [], 0.0
    if resume and find_checkpoint(run_dir) is not None:
        model, state, _ = load_checkpoint(run_dir, device=device)
        if state is None or "stag4d" not in state:
            raise ValueError(f"{run_dir}: the checkpoint has no STAG4D training state to resume from")
        optimizer = build_optimizer(model, config.lr)
        optimizer.load_state_dict(state["optimizer"])
        strategy_state = strategy.load_state(state["densify"], device)
        start, history, train_time = int(state["step"]), list(state["history"]), float(state["train_time_s"])
        log(f"resumed at step {start} ({model.num_gaussians} Gaussians)")
    else:
        gaussians = random_in_sphere(config.num_points, config.init_radius, config.init_opacity, 0, seed=config.seed)
        model = DynamicGaussians(gaussians, config.deform, deform_enabled=False).to(device)
        optimizer = build_optimizer(model, config.lr)
        strategy_state = strategy.initial_state(model)

    def save(step: int) -> None:
        state = {
            "stag4d": True,
            "optimizer": optimizer.state_dict(),
            "densify": strategy.state_dict(strategy_state),
            "step": step,
            "history": history,
            "train_time_s": train_time,
        }
        save_checkpoint(run_dir, model, state, {"step": step, "num_gaussians": model.num_gaussians, "method": "stag4d"})

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="STAG4D", unit="step", dynamic_ncols=True)
    middle = num_frames // 2
    cond_counts = {"input": 0, "view": 0}
    sums: dict[str, torch.Tensor] = {}
    since = 0
    segment = time.perf_counter()
    step = start
    while step < config.steps:
        static = step < config.static_steps
        if not static and not model.deform_enabled:
            model.enable_deformation(prepare=True)
            strategy_state = strategy.initial_state(model)
            log(f"step {step}: deformation on ({model.num_gaussians} Gaussians)")
        set_learning_rates(optimizer, config.lr, step, config.steps)
        gen = sampler.generator(step)
        ramp = min((step + 1) / max(config.ramp_steps, 1), 1.0)
        terms: dict[str, torch.Tensor] = {}
        outputs = []

        # -- reference view at each of the step's frames (STAG4D's batch of 4) -------------
        count = max(config.views_per_step, 1)
        step_frames = torch.full((count,), middle) if static else torch.randint(num_frames, (count,), generator=gen)
        frame = int(step_frames[0])
        white = torch.ones(3, device=device)
        ref_index = step_frames.to(device)
        out = model.render(ref_cams[ref_index], white, options)
        strategy.step_pre_backward(out, step)
        outputs.append((out, ref_cams.width, ref_cams.height))
        terms.update(reference_losses(out.rgb, out.alpha, ref_images[ref_index], ref_alphas[ref_index], ramp, config.loss))

        # -- anchored views (photometric) ------------------------------------------------
        if mv_weight and views_by_frame:
            have = sorted(views_by_frame)
            vf = frame if frame in views_by_frame else have[int(torch.randint(len(have), (1,), generator=gen))]
            if static:
                vf = min(have, key=lambda f: abs(f - middle))
            index = views_by_frame[vf]
            if 0 < config.anchored_per_step < index.numel():
                index = index[torch.randperm(index.numel(), generator=gen)[: config.anchored_per_step]]
            index = index.to(device)
            cams = view_cams[index]
            out = model.render(cams, white, options)
            strategy.step_pre_backward(out, step)
            outputs.append((out, cams.width, cams.height))
            terms["mv_rgb"] = ramp * config.loss.multiview_rgb * (out.rgb - view_images[index]).square().mean()
            terms["mv_alpha"] = ramp * config.loss.multiview_alpha * (out.alpha - view_alphas[index]).square().mean()

        # -- random views + SDS ----------------------------------------------------------
        if use_sds:
            count = config.views_per_step
            lo_el, hi_el = config.views.elevation_deg
            lo_az, hi_az = config.views.azimuth_deg
            elevation = lo_el + (hi_el - lo_el) * torch.rand(count, generator=gen)
            azimuth = lo_az + (hi_az - lo_az) * torch.rand(count, generator=gen)
            frames = step_frames[:count]  # one random view per reference frame, as STAG4D
            times = ref_cams.times.cpu()[frames]
            size = _render_size(config, step)
            cams = orbit(elevation, azimuth, radius, fov, size, size, times).to(device)
            black = torch.rand(count, generator=gen) < config.views.black_background_prob
            background = torch.where(black[:, None], 0.0, 1.0).expand(count, 3).to(device)
            out = model.render(cams, background, options)
            strategy.step_pre_backward(out, step)
            outputs.append((out, size, size))
            use_input = (azimuth.abs() < config.sds.input_azimuth_deg) | (torch.rand(count, generator=gen) < config.sds.input_prob)
            cond_items, cond_pose = [], []
            for k in range(count):
                f = int(frames[k])
                candidates = views_by_frame.get(f)
                if bool(use_input[k]) or candidates is None:
                    cond_items.append(conditions.frames.index([f]))
                    cond_pose.append(conditions.frame_pose[f])
                    cond_counts["input"] += 1
                else:
                    cond_counts["view"] += 1
                    pose = conditions.view_pose[candidates]
                    nearest = int(candidates[_wrap(pose[:, 1] - azimuth[k]).abs().argmin()])
                    cond_items.append(conditions.views.index([nearest]))
                    cond_pose.append(conditions.view_pose[nearest])
            cond_pose = torch.stack(cond_pose)
            pose = zero123_pose_embedding(elevation, azimuth, torch.full((count,), radius), cond_pose[:, 0], cond_pose[:, 1], cond_pose[:, 2])
            condition = Zero123Condition.cat(cond_items)
            low, high = timestep_range(config.sds.anneal, step)
            t = sample_timesteps(count, low, high, guidance.schedule.num_train_timesteps, gen)
            sds = guidance.sds(out.rgb.permute(0, 3, 1, 2), condition, pose.to(device), t, config.sds.guidance_scale, generator=gen)
            terms["sds"] = config.sds.weight * sds.loss

        # -- regularisers ------------------------------------------------------------------
        if model.deform_enabled:
            times = ref_cams.times[[frame]]
            terms.update(weighted_regularizers(model.regularization(times), reg_weights))
        if config.loss.anisotropy:
            terms["anisotropy"] = config.loss.anisotropy * _anisotropy(model, config.loss.anisotropy_ratio)

        total = sum(terms.values())
        total.backward()
        stats: dict[str, int] = {}
        if strategy.active(step):
            for out_k, w_k, h_k in outputs[:-1]:
                strategy.accumulate(strategy_state, out_k, w_k, h_k)
            last, w_last, h_last = outputs[-1]
            stats = strategy.step_post_backward(model, optimizer, strategy_state, step, last, w_last, h_last)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if stats.get("total") is not None:
            log(f"step {step}: densified -> {stats['total']} Gaussians (+{stats['cloned']} cloned, {stats['split']} split, -{stats['pruned']} pruned)")
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.detach()
        sums["total"] = sums.get("total", 0.0) + total.detach()
        since += 1
        step += 1
        last_step = step == config.steps
        if step % config.log_every == 0 or last_step:
            values = {k: float(v) / since for k, v in sums.items()}  # one host sync per log
            if not math.isfinite(values["total"]):
                raise NonFiniteLossError(f"the loss became {values['total']} before step {step}; lower the learning rates")
            line = " ".join(f"{k} {v:.4g}" for k, v in values.items())
            with open(run_dir / "log.txt", "a") as handle:
                handle.write(f"step {step} gaussians {model.num_gaussians} {line}\n")
            if bar is not None:
                bar.set_postfix(loss=f"{values['total']:.4g}", n=model.num_gaussians)
                bar.update(step - bar.n)
            sums, since = {}, 0
        if evaluation is not None and config.eval_every and (step % config.eval_every == 0 or last_step):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - segment
            metrics = evaluate_eval_split(model, evaluation, options)[0]
            history.append({"step": step, "train_time_s": round(train_time, 3), "num_gaussians": model.num_gaussians, **metrics})
            segment = time.perf_counter()
        if last_step or (config.checkpoint_every and step % config.checkpoint_every == 0):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - segment
            save(step)
            segment = time.perf_counter()
    if bar is not None:
        bar.close()
    model.eval()
    summary = {"steps": config.steps, "num_gaussians": model.num_gaussians, "train_time_s": round(train_time, 3), "history": history}
    summary["sds_conditions"] = cond_counts  # SDS samples conditioned on the input frame / an anchored view (this process)
    return model, summary


@torch.no_grad()
def evaluate_eval_split(model: DynamicGaussians, evaluation: MultiViewVideo, options: RenderOptions):
    """(PSNR / SSIM of every held-out view on white, the renders) via the reconstruction's evaluate()."""
    metrics, renders = evaluate(model, evaluation, {"eval": torch.arange(len(evaluation))}, options)
    return {k: v for k, v in metrics["eval"].items() if v is not None}, renders["eval"]


def _reference_from_frames(frames, config: Stag4DConfig) -> MultiViewVideo:
    times = frames.times()
    size = frames.size
    cams = orbit(0.0, 0.0, config.ref_radius, config.ref_fov_deg, size, size, times)
    return MultiViewVideo(
        images=frames.rgb.contiguous(),
        alphas=frames.alpha.contiguous(),
        cameras=cams,
        splits={"front": torch.arange(len(frames))},
        num_frames=len(frames),
        name="input",
        files=list(frames.names),
    )


def _is_dataset(path: Path) -> bool:
    if not path.is_dir():
        return False
    if (path / "manifest.json").is_file():
        return True
    return any(p.name.startswith(("front_frame", "multi_frame")) for p in path.iterdir())


def _views_from_grids(grids: torch.Tensor, reference: MultiViewVideo, config: Stag4DConfig) -> MultiViewVideo:
    """Generated views (F, 6, 3, v, v) -> a MultiViewVideo with alpha and Zero123++ cameras."""
    from gen4d.data.video_input import matte_constant_background, remove_background
    from gen4d.diffusion.zero123pp import view_cameras

    count, _, _, size, _ = grids.shape
    flat = grids.reshape(count * 6, 3, size, size)
    if config.view_matting == "rembg":
        import numpy as np

        arrays = [(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in flat]
        rgba = torch.from_numpy(np.stack(remove_background(arrays))).float() / 255.0
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
    else:
        alpha = matte_constant_background(flat).permute(0, 2, 3, 1)
        rgb = flat.permute(0, 2, 3, 1)
    times = reference.cameras.times
    el, az, r = spherical(reference.cameras[[0]])
    cams = view_cameras(config.multiview.version, times, float(r[0]), float(reference.cameras.fov_y_deg[0]), size, float(az[0]))
    frames = torch.arange(count).repeat_interleave(6)
    return MultiViewVideo(images=rgb.contiguous(), alphas=alpha.contiguous(), cameras=cams, frames=frames,
                          num_frames=count, name="zero123pp", splits={"zero123pp": torch.arange(count * 6)})  # fmt: skip


def _write_videos(model: DynamicGaussians, run_dir: Path, reference: MultiViewVideo, config: Stag4DConfig, options: RenderOptions) -> list[str]:
    from gen4d.export import orbit_sweep, render_frames, to_uint8, write_video

    size = config.output.video_size
    _, _, r = spherical(reference.cameras)
    radius, fov = float(r.mean()), float(reference.cameras.fov_y_deg[0])
    count = max(len(reference), 2) * config.output.loops
    times = (torch.arange(count) % len(reference)).float() / max(len(reference) - 1, 1)
    white = torch.ones(3, device=model.device)
    render = lambda c: model.render(c.to(model.device), white, options).rgb  # noqa: E731
    written = []
    folder = run_dir / "videos"
    for name, azimuth in (("front", 0.0), ("back", 180.0)):
        frames = to_uint8(render_frames(render, orbit(0.0, azimuth, radius, fov, size, size, times)))
        write_video(frames, folder, name, config.output.fps)
        written.append(name)
    frames = to_uint8(render_frames(render, orbit_sweep(config.output.round_frames, 0.0, radius, fov, size)))
    write_video(frames, folder, "round", config.output.fps)
    return written + ["round"]


def run_video_to_4d(
    input_path: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: Stag4DConfig,
    multiview: str = "zero123pp",
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    multiview_loader: Callable[[], Any] | None = None,
    guidance_loader: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """The whole STAG4D run (module docstring). ``multiview``: 'zero123pp' (generate),
    'oracle:DIR' (ground-truth ``zero123pp`` renders of dataset DIR; INPUT must be that dataset)
    or 'none'. ``*_loader`` override model loading (tests). Returns what metrics.json holds."""
    from gen4d.data.dataset import load_dataset
    from gen4d.data.video_input import load_video_input, save_frames
    from gen4d.diffusion.zero123pp import composite, generate_multiview_cached

    wall = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def log(message: str) -> None:
        with open(run_dir / "log.txt", "a") as handle:
            handle.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
        if echo is not None:
            echo(message)

    config_path = run_dir / "config.json"
    if resume and config_path.is_file():
        stored = to_dict(from_dict(Stag4DConfig, read_json(config_path)))
        now = to_dict(config)
        for d in (stored, now):
            for key in ("output", "log_every", "checkpoint_every", "eval_every", "device", "backend", "steps"):
                d.pop(key)
        if stored != now:
            raise ValueError(f"{run_dir}: --resume with settings that differ from {config_path}; use a new --out folder")
    write_json(config_path, to_dict(config))
    timings: dict[str, float] = {}
    input_path = Path(input_path)

    # -- 1. input ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    evaluation = None
    oracle_dir = None
    if multiview.startswith("oracle"):
        oracle_dir = Path(multiview.split(":", 1)[1]) if ":" in multiview else input_path
    elif multiview not in ("zero123pp", "none"):
        raise ValueError(f"--multiview must be 'zero123pp', 'oracle:DIR' or 'none', got {multiview!r}")
    if _is_dataset(input_path):
        dataset = load_dataset(input_path)
        if not dataset.has_split("front"):
            raise ValueError(f"{input_path}: the dataset has no 'front' split to use as the input video (it has {sorted(dataset.splits)})")
        reference = dataset.split("front")
        if reference.alphas is None:
            raise ValueError(f"{input_path}: the front video has no alpha; STAG4D needs RGBA frames")
        size = config.input.size
        if size and size < reference.width:
            reference = reference.resized(size)  # never upsampled: the dataset's resolution is the ceiling
        if dataset.has_split("eval"):
            evaluation = dataset.split("eval")
            if size and size < evaluation.width:
                evaluation = evaluation.resized(size)  # measured at the reference resolution
        log(f"input: dataset {dataset.name}, front video of {len(reference)} frames at {reference.width}px")
    else:
        if oracle_dir is not None:
            raise ValueError(
                "oracle mode needs INPUT to be the dataset folder whose front video the ground-truth views belong to "
                "(so their cameras agree); got a video / frame folder"
            )
        frames = load_video_input(input_path, config.input)
        save_frames(frames, run_dir / "frames")
        reference = _reference_from_frames(frames, config)
        log(f"input: {len(frames)} frames from {input_path}, recentred to {frames.size}px (crop {frames.crop})")
    # frames must be ordered by time for 'frame' indices to mean time order
    order = torch.argsort(reference.cameras.times)
    reference = reference.subset(order, name="front")
    timings["input_s"] = round(time.perf_counter() - t0, 3)

    # -- 2. anchored multi-views ------------------------------------------------------------
    t0 = time.perf_counter()
    views = None
    if oracle_dir is not None:
        source = load_dataset(oracle_dir)
        if not source.has_split("zero123pp"):
            raise ValueError(f"{oracle_dir}: no 'zero123pp' split of ground-truth views (it has {sorted(source.splits)})")
        views = source.split("zero123pp")
        if views.width > reference.width:
            views = views.resized(reference.width)  # supervise at (at most) the reference resolution
        ref_times = reference.cameras.times
        nearest = (views.cameras.times[:, None] - ref_times[None]).abs().argmin(-1)
        views.frames = nearest  # frame index into the reference video
        log(f"multi-view: oracle, {len(views)} ground-truth views at {len(torch.unique(nearest))} frames")
    elif multiview == "zero123pp":
        images = composite(torch.cat([reference.images, reference.alphas], -1))
        loader = multiview_loader or (lambda: load_multiview_model(config.multiview, device))
        grids = generate_multiview_cached(loader, images, config.multiview, run_dir / "multiview", progress)
        views = _views_from_grids(grids, reference, config)
        if views.width > reference.width:
            views = views.resized(reference.width)
        log(f"multi-view: Zero123++ {config.multiview.version}, {len(views)} views (cached in {run_dir / 'multiview'})")
    timings["multiview_s"] = round(time.perf_counter() - t0, 3)

    # -- 3. optimisation --------------------------------------------------------------------
    t0 = time.perf_counter()
    guidance = None
    if config.sds.weight > 0 and config.views_per_step > 0:
        guidance = guidance_loader() if guidance_loader is not None else load_guidance(config.sds, device)
    timings["guidance_load_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    model, summary = optimise(reference, views, guidance, config, run_dir, evaluation, resume, progress, log)
    timings["optimise_s"] = round(time.perf_counter() - t0, 3)
    del guidance

    # -- 4. outputs -------------------------------------------------------------------------
    t0 = time.perf_counter()
    options = RenderOptions(backend=config.backend)
    result: dict[str, Any] = {"method": "stag4d", "input": str(input_path), "multiview": multiview, "frames": len(reference)}
    if evaluation is not None:
        result["eval"], renders = evaluate_eval_split(model, evaluation, options)
        if config.output.renders:
            write_renders(run_dir / "renders" / "eval", renders, [f"{i:04d}" for i in range(len(evaluation))])
        log(f"eval: PSNR {result['eval']['psnr']:.2f} SSIM {result['eval']['ssim']:.3f} on {len(evaluation)} held-out views")
    if config.output.ply:
        from gen4d.export import write_ply_sequence

        write_ply_sequence(model.at, reference.cameras.times, run_dir / "ply")
    if config.output.videos:
        with torch.no_grad():
            result["videos"] = _write_videos(model, run_dir, reference, config, options)
    timings["outputs_s"] = round(time.perf_counter() - t0, 3)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result.update(
        num_gaussians=model.num_gaussians,
        timings=timings,
        wall_time_s=round(time.perf_counter() - wall, 3),
        train_time_s=summary["train_time_s"],
        history=summary["history"],
        sds_conditions=summary["sds_conditions"],
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        backend=resolve_backend(options.backend, device),
        **peak_memory(device),
    )
    write_json(run_dir / "metrics.json", result)
    log(f"done in {result['wall_time_s']:.1f} s: {model.num_gaussians} Gaussians; outputs in {run_dir}")
    return result
