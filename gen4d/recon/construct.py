"""4D construction: optimise canonical Gaussians + a deformation field so renders match posed,
timed images (Diffusion4D section 3.4, 4DGS-style coarse-to-fine).

* **Coarse stage**: the deformation is bypassed (one static set of Gaussians) and trained on
  the orbit video V plus the static orbit V-bar (time 0) when the dataset has it.
* **Fine stage**: the deformation is on, trained on V only (Diffusion4D).

Every step renders ``cameras_per_step`` random training images in one rasteriser call (each
camera at its own time), with L1 + D-SSIM (+ LPIPS when its weights are on disk) on RGB
composited over the step's background, an alpha loss for RGBA data, optional depth smoothness
and the field's regularisers. Densification (:mod:`gen4d.densify`) runs inside each stage.

Reusable pieces (STAG4D builds on them): :func:`initial_model`, :class:`TrainData`,
:func:`training_step`, :class:`StepLosses`, :func:`gen4d.recon.optim.build_optimizer`,
:func:`gen4d.recon.checkpoint.save_checkpoint`, :mod:`gen4d.recon.outputs`.

GPU notes: images, masks and cameras live on the device from the start; per-step values stay
on the device and are read (one host sync) only every ``log_every`` steps, which is also where
a non-finite loss is detected.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import torch

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range, from_dict, to_dict
from gen4d.data.dataset import MultiViewVideo, load_dataset
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, DensifyStrategy, MCMCConfig, MCMCStrategy, build_strategy
from gen4d.gaussians.core import random_in_sphere
from gen4d.io import read_json, write_json
from gen4d.recon import losses as L
from gen4d.recon.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from gen4d.recon.losses import LossWeights
from gen4d.recon.model import DynamicGaussians
from gen4d.recon.optim import LearningRates, build_optimizer, set_learning_rates
from gen4d.recon.outputs import (
    LpipsLoader,
    camera_layout,
    evaluate,
    heldout_splits,
    image_names,
    peak_memory,
    write_orbit_video,
    write_plys,
    write_renders,
)
from gen4d.render import RenderOptions, resolve_backend

__all__ = [
    "InitConfig",
    "StageConfig",
    "OutputConfig",
    "ConstructConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "NonFiniteLossError",
    "TrainData",
    "StepLosses",
    "initial_model",
    "training_step",
    "scene_extent",
    "resolve_device",
    "reconstruct",
]


# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitConfig:
    """Initial canonical Gaussians (random in a ball, as STAG4D)."""

    num_points: int = 10000
    """Number of initial Gaussians."""
    radius: float = 0.5
    """Radius of the ball they are drawn in (objects normalised to the unit cube)."""
    opacity: float = 0.1
    """Initial opacity."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the colours (0 = RGB)."""

    def __post_init__(self) -> None:
        check_positive(self, "num_points", "radius")
        check_range(self, "opacity", 0.0, 1.0)
        check_range(self, "sh_degree", 0, 3)


@dataclass(frozen=True)
class StageConfig:
    """One optimisation stage."""

    iterations: int = 1000
    """Steps of this stage (0 skips it)."""
    cameras_per_step: int = 4
    """Training images rendered per step (one rasteriser call)."""
    static_orbit: bool = True
    """Also train on the static orbit V-bar (time 0) when the dataset has it."""
    orbit: bool = True
    """Train on the orbit video V (False: the static orbit alone, when the dataset has one)."""
    canonical_lr: float = 1.0
    """Factor on the canonical Gaussians' learning rates in this stage (0 freezes them)."""
    densify: bool = True
    """Run densification in this stage (schedule in ConstructConfig.densify, in stage steps)."""

    def __post_init__(self) -> None:
        check_non_negative(self, "iterations")
        check_positive(self, "cameras_per_step")


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes at the end."""

    ply: bool = True
    """Per-frame PLY sequence in RUN/ply."""
    video: bool = True
    """Orbit video RUN/videos/orbit.mp4 and orbit.gif."""
    video_frames: int = 96
    """Frames of the orbit video."""
    video_size: int = 256
    """Orbit video resolution (0 = the training image size)."""
    video_elevation: float = 15.0
    """Elevation of the orbit video camera, degrees."""
    video_fps: int = 24
    """Frames per second of the videos."""
    renders: bool = True
    """PNG renders at the held-out cameras in RUN/renders/<split>."""
    lpips: bool = True
    """Report LPIPS-VGG when its weights are available."""
    evaluate: bool = True
    """Compute the per-split image metrics of metrics.json (renders every held-out and training image)."""

    def __post_init__(self) -> None:
        check_positive(self, "video_frames", "video_fps")
        check_non_negative(self, "video_size")


@dataclass(frozen=True)
class ConstructConfig:
    """4D construction (coarse static stage, fine dynamic stage)."""

    seed: int = 0
    """Random seed (initialisation, camera sampling, backgrounds, splits)."""
    size: int = 0
    """Resize the images to size x size before training (0 = as stored)."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ..."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser: gsplat on CUDA, the PyTorch reference elsewhere."""
    tile_size: int = 16
    """torch backend: tile edge in pixels (8 is faster for images of 64 px and less)."""
    train_background: Literal["white", "black", "random"] = "random"
    """Background of training renders and targets (random: a colour per image per step)."""
    eval_background: Literal["white", "black"] = "white"
    """Background for metrics, held-out renders and videos."""
    init: InitConfig = field(default_factory=InitConfig)
    """Initial Gaussians."""
    coarse: StageConfig = field(default_factory=lambda: StageConfig(iterations=1000, cameras_per_step=4, static_orbit=True))
    """Static stage (deformation bypassed)."""
    fine: StageConfig = field(default_factory=lambda: StageConfig(iterations=1500, cameras_per_step=4, static_orbit=False))
    """Dynamic stage (deformation on)."""
    deform: DeformConfig = field(default_factory=DeformConfig)
    """Deformation field."""
    strategy: Literal["default", "mcmc"] = "default"
    """Densification strategy: 'default' (3DGS clone / split / prune) or 'mcmc' (3DGS-MCMC, fixed cap)."""
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    """Densification schedule of the 'default' strategy (steps counted within each stage)."""
    mcmc: MCMCConfig = field(default_factory=MCMCConfig)
    """Settings of the 'mcmc' strategy (steps counted within each stage)."""
    lr: LearningRates = field(default_factory=LearningRates)
    """Learning rates."""
    loss: LossWeights = field(default_factory=LossWeights)
    """Loss weights."""
    log_every: int = 50
    """Update the progress bar, log and check for NaN every this many steps."""
    checkpoint_every: int = 1000
    """Write RUN/checkpoint every this many steps (also at each stage end; 0 = only then)."""
    eval_every: int = 0
    """Measure held-out PSNR every this many steps (quality vs iterations; 0 = only at the end)."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Outputs written at the end."""

    def __post_init__(self) -> None:
        if self.coarse.iterations + self.fine.iterations <= 0:
            raise ConfigError("fine.iterations", "coarse.iterations + fine.iterations must be > 0, got 0 for both",
                              "ConstructConfig")
        check_non_negative(self, "size", "checkpoint_every", "eval_every")
        check_positive(self, "tile_size", "log_every")

    @property
    def total_iterations(self) -> int:
        return self.coarse.iterations + self.fine.iterations


def _hexplane(resolution: int, time_res: int, multires: tuple[int, ...], features: int = 32, bounds: float = 1.0) -> HexPlaneConfig:
    return HexPlaneConfig(features=features, resolution=(resolution,) * 3 + (time_res,), multires=multires, bounds=bounds)


PRESETS: dict[str, ConstructConfig] = {
    # The fast GPU preset (target: within 0.3 dB of "paper" in < 60 s end-to-end on one H100).
    "default": ConstructConfig(
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=1000, cameras_per_step=4, static_orbit=True),
        fine=StageConfig(iterations=2000, cameras_per_step=4, static_orbit=False),
        deform=DeformConfig(hexplane=_hexplane(32, 12, (1, 2))),
        densify=DensifyConfig(start=200, stop=1500, every=100, reset_every=0, prune_opacity=0.01, max_gaussians=150_000),
        lr=LearningRates(),
        log_every=100,
        checkpoint_every=0,
    ),
    # Diffusion4D's 4D construction schedule (4DGS: 5k coarse + 2k fine, one image per step),
    # 4DGS-style HexPlane ([64, 64, 64, T/2], multires [1, 2]) and learning rates.
    "paper": ConstructConfig(
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=5000, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=2000, cameras_per_step=1, static_orbit=False),
        # 4DGaussians' regulariser functionals (summed second differences; STAG4D inherited them).
        deform=DeformConfig(hexplane=replace(_hexplane(64, 12, (1, 2)), regularizer="stag4d")),
        densify=DensifyConfig(start=500, stop=15000, every=100, reset_every=3000, grad_threshold=2e-4),
        lr=LearningRates(means=1.6e-4 * 2.2, means_final=1.6e-6 * 2.2, field_mlp=1.6e-4 * 2.2, field_mlp_final=1.6e-6 * 2.2,
                         field_grid=1.6e-3 * 2.2, field_grid_final=1.6e-5 * 2.2, decay_steps=0),
        # Diffusion4D section 3.4: L1 + LPIPS + depth smoothness (the paper gives no weights;
        # LPIPS runs only where its VGG weights are on disk, and the run log says so otherwise).
        loss=LossWeights(l1=1.0, dssim=0.0, lpips=0.1, alpha=0.0, depth_smoothness=0.01),
        log_every=100,
        checkpoint_every=0,
    ),
    # The SC-GS schedule of the Diffusion4D paper (16k static + 4k dynamic steps): sparse control
    # points (512, K = 3) with ARAP, otherwise as "paper".
    "scgs": ConstructConfig(
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=16000, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=4000, cameras_per_step=1, static_orbit=False),
        deform=DeformConfig(kind="control_points", control_points=ControlPointConfig(num_points=512, neighbours=3)),
        densify=DensifyConfig(start=500, stop=15000, every=100, reset_every=3000, grad_threshold=2e-4),
        lr=LearningRates(means=1.6e-4 * 2.2, means_final=1.6e-6 * 2.2, field_mlp=1.6e-4 * 2.2, field_mlp_final=1.6e-6 * 2.2,
                         decay_steps=0),
        loss=LossWeights(l1=1.0, dssim=0.0, lpips=0.1, alpha=0.0, depth_smoothness=0.01, arap=1e-2),
        log_every=100,
        checkpoint_every=0,
    ),
    # CPU-sized (a few minutes on 2 cores with the reference rasteriser).
    "demo": ConstructConfig(
        size=96,
        tile_size=8,
        init=InitConfig(num_points=3000),
        coarse=StageConfig(iterations=200, cameras_per_step=2, static_orbit=True),
        fine=StageConfig(iterations=400, cameras_per_step=2, static_orbit=False),
        deform=DeformConfig(hexplane=_hexplane(24, 12, (1, 2), features=16)),
        densify=DensifyConfig(start=100, stop=400, every=100, reset_every=0, prune_opacity=0.01, max_gaussians=12000),
        lr=LearningRates(means=3e-3, means_final=3e-5),
        log_every=10,
        checkpoint_every=100,
        output=OutputConfig(video_frames=72, video_size=192),
    ),
}
DEFAULT_PRESET = "default"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ---------------------------------------------------------------------------------------
# Reusable pieces
# ---------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def scene_extent(dataset: MultiViewVideo) -> float:
    """3DGS's scene extent: 1.1 x the largest camera distance from the cameras' mean centre."""
    centres = dataset.cameras.centers
    return 1.1 * float((centres - centres.mean(0)).norm(dim=-1).max().clamp_min(1e-3))


def initial_model(config: ConstructConfig, device: torch.device) -> DynamicGaussians:
    """Random canonical Gaussians in a ball + a fresh (identity) field; deformation off."""
    init = config.init
    gaussians = random_in_sphere(init.num_points, init.radius, init.opacity, init.sh_degree, seed=config.seed)
    return DynamicGaussians(gaussians, config.deform, deform_enabled=False).to(device)


def check_dataset(dataset: MultiViewVideo) -> None:
    """Errors that name the problem for datasets construction cannot use."""
    if not dataset.has_split("orbit"):
        raise ValueError(
            f"{dataset.name}: no 'orbit' split (the multi-view video V to reconstruct); it has {sorted(dataset.splits)}"
        )
    times = dataset.cameras.times[dataset.splits["orbit"]]
    distinct = int(torch.unique(times).numel())
    if distinct < 2:
        raise ValueError(
            f"{dataset.name}: the orbit split has {distinct} distinct time(s); 4D construction needs images at "
            "2 or more times (check the dataset's per-image times)"
        )
    if min(dataset.height, dataset.width) < 11:
        raise ValueError(f"{dataset.name}: images are {dataset.width}x{dataset.height}; expected at least 11x11 (SSIM window)")


class TrainData:
    """Training images, masks and cameras on the device, sampled per step reproducibly
    (step ``s`` draws from a generator seeded by (seed, s), so a resumed run sees the same batches)."""

    def __init__(self, dataset: MultiViewVideo, device: torch.device, seed: int = 0):
        self.dataset = dataset
        self.device = device
        self.seed = seed
        self.images = dataset.images.to(device)
        self.alphas = None if dataset.alphas is None else dataset.alphas.to(device)
        self.cameras = dataset.cameras.to(device)
        self.width, self.height = dataset.width, dataset.height

    def pool(self, static_orbit: bool, orbit: bool = True) -> torch.Tensor:
        index = self.dataset.splits["orbit"]
        if static_orbit and self.dataset.has_split("static_orbit"):
            static = self.dataset.splits["static_orbit"]
            index = torch.cat([index, static]) if orbit else static
        return index

    def batch(self, pool: torch.Tensor, count: int, step: int, background: str):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        pick = pool[torch.randperm(pool.numel(), generator=gen)[: min(count, pool.numel())]]
        k = pick.numel()
        if background == "random":
            bg = torch.rand(k, 3, generator=gen)
        else:
            bg = torch.full((k, 3), 1.0 if background == "white" else 0.0)
        bg = bg.to(self.device)
        pick_dev = pick.to(self.device)
        rgb = self.images[pick_dev]
        alpha = None if self.alphas is None else self.alphas[pick_dev]
        target = rgb if alpha is None else rgb * alpha + bg[:, None, None, :] * (1 - alpha)
        return self.cameras[pick_dev], target, alpha, bg


@dataclass
class StepLosses:
    """Loss terms of one step (device tensors; read them only at logging steps)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    mse: torch.Tensor


def image_losses(
    output, target: torch.Tensor, alpha: torch.Tensor | None, weights: LossWeights, lpips_model=None
) -> dict[str, torch.Tensor]:
    """Weighted photometric / mask / depth terms of a render against its targets."""
    terms: dict[str, torch.Tensor] = {}
    if weights.l1:
        terms["l1"] = weights.l1 * L.l1(output.rgb, target)
    if weights.dssim:
        terms["dssim"] = weights.dssim * L.dssim(output.rgb, target)
    if weights.lpips and lpips_model is not None:
        terms["lpips"] = weights.lpips * lpips_model(output.rgb, target).mean()
    if alpha is not None and weights.alpha:
        terms["alpha"] = weights.alpha * L.alpha_loss(output.alpha, alpha)
    if weights.depth_smoothness:
        terms["depth_smoothness"] = weights.depth_smoothness * L.depth_smoothness(output.depth, target, alpha)
    return terms


def training_step(
    model: DynamicGaussians,
    optimizer: torch.optim.Optimizer,
    cameras,
    target: torch.Tensor,
    alpha: torch.Tensor | None,
    background: torch.Tensor,
    weights: LossWeights,
    options: RenderOptions,
    strategy: DensifyStrategy | MCMCStrategy | None = None,
    strategy_state: dict | None = None,
    step: int = 0,
    lpips_model=None,
) -> tuple[StepLosses, dict[str, int]]:
    """One optimisation step: render all ``cameras`` in one call, losses, backward, densification
    hooks, Adam step. Returns the losses and the densification stats (empty if nothing changed)."""
    # Inputs were checked where they entered; value checks here would sync with the device every step.
    output = model.render(cameras, background, replace(options, check_values=False))
    if strategy is not None:
        strategy.step_pre_backward(output, step)
    terms = image_losses(output, target, alpha, weights, lpips_model)
    if model.deform_enabled:
        terms.update(L.weighted_regularizers(model.regularization(cameras.times), weights))
    if strategy is not None:
        terms.update(strategy.loss_terms(model))
    total = sum(terms.values())
    total.backward()
    stats: dict[str, int] = {}
    if strategy is not None and strategy_state is not None:
        stats = strategy.step_post_backward(model, optimizer, strategy_state, step, output, cameras.width, cameras.height)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        mse = (output.rgb.detach() - target).square().mean()
    return StepLosses(total.detach(), {k: v.detach() for k, v in terms.items()}, mse), stats


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
class RunLog:
    """Appends timestamped lines to RUN/log.txt and echoes them (through tqdm when a bar is open)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = print):
        self.path = path
        self.echo = echo
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
        if self.echo is not None:
            self.echo(message)


def _stage_of(config: ConstructConfig, step: int) -> tuple[str, int, int]:
    """(stage name, step within the stage, stage length) of a global step."""
    if step < config.coarse.iterations:
        return "coarse", step, config.coarse.iterations
    return "fine", step - config.coarse.iterations, config.fine.iterations


RUN_ENTRIES = ("checkpoint", ".checkpoint.old", ".checkpoint.tmp", "ply", "renders", "videos", "metrics.json", "log.txt", "config.json")
"""What a run writes into its directory (removed by :func:`clear_run`)."""


def clear_run(run_dir: str | os.PathLike) -> None:
    """Delete a previous run's files from ``run_dir`` (other files are left alone)."""
    import shutil

    run_dir = Path(run_dir)
    for name in RUN_ENTRIES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _is_nonfinite_error(err: Exception) -> bool:
    return "non-finite" in str(err)


def reconstruct(
    data: MultiViewVideo | str | os.PathLike,
    config: ConstructConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run 4D construction on ``data`` (a dataset or a path :func:`load_dataset` reads) into
    ``run_dir`` and return the metrics written to RUN/metrics.json.

    ``resume``: continue from RUN/checkpoint (the stored RUN/config.json must match ``config``
    except for output / logging settings and the fine stage's length). Without ``resume``, a
    previous run's files in ``run_dir`` are deleted first (``overwrite`` says so explicitly; the
    ``gen4d reconstruct`` command refuses to do it without ``--overwrite``). ``stop_after``: stop
    (after checkpointing) once this many global steps are done, without writing the final outputs
    (used to test resuming).
    """
    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    if overwrite and resume:
        raise ValueError("reconstruct: overwrite and resume exclude each other")
    if not resume:
        clear_run(run_dir)  # a fresh run never mixes with an earlier run's files
    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir / "log.txt", echo)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if isinstance(data, MultiViewVideo):
        dataset = data.resized(config.size) if config.size else data
    else:
        dataset = load_dataset(data, size=config.size or None)
    check_dataset(dataset)
    options = RenderOptions(backend=config.backend, tile_size=config.tile_size)

    config_path = run_dir / "config.json"
    if resume and find_checkpoint(run_dir) is not None:
        stored = from_dict(ConstructConfig, read_json(config_path)) if config_path.is_file() else config
        def core(c: ConstructConfig) -> dict:
            d = to_dict(c)
            for key in ("output", "log_every", "checkpoint_every", "eval_every", "device", "backend", "tile_size"):
                d.pop(key)
            d["fine"].pop("iterations")
            return d
        if core(stored) != core(config):
            raise ValueError(
                f"{run_dir}: --resume with a config that differs from the stored {config_path} "
                "(only iterations of the fine stage, outputs and logging may change); rerun without --resume "
                "into a new --out folder, or drop the changed options"
            )
    write_json(config_path, to_dict(config))

    torch.manual_seed(config.seed)
    data_on_device = TrainData(dataset, device, config.seed)
    extent = scene_extent(dataset)
    strategy = build_strategy(config.strategy, config.densify, config.mcmc, scene_extent=extent, seed=config.seed)
    lpips_loader = LpipsLoader()
    lpips_loss_model = None
    if config.loss.lpips:
        lpips_loss_model = lpips_loader.get(device)
        if lpips_loss_model is None:
            log(f"LPIPS loss disabled: its weights are not available ({lpips_loader.error})")

    start_step, history, train_time = 0, [], 0.0
    if resume and find_checkpoint(run_dir) is not None:
        model, state, info = load_checkpoint(run_dir, device=device)
        if state is None:
            raise ValueError(f"{run_dir}: the checkpoint has no training state to resume from")
        optimizer = build_optimizer(model, config.lr)
        optimizer.load_state_dict(state["optimizer"])
        strategy_state = strategy.load_state(state["densify"], device)
        start_step = int(state["step"])
        history = list(state.get("history", []))
        train_time = float(state.get("train_time_s", 0.0))
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        log(f"resumed from {run_dir / 'checkpoint'} at step {start_step} ({model.num_gaussians} Gaussians)")
    else:
        if resume:
            log(f"--resume: no checkpoint in {run_dir}; starting from scratch")
        model = initial_model(config, device)
        optimizer = build_optimizer(model, config.lr)
        strategy_state = strategy.initial_state(model)
    log(
        f"4D construction of {dataset.name}: {len(dataset)} images {dataset.width}x{dataset.height}, "
        f"{dataset.num_frames} frames, splits {sorted(dataset.splits)}; device {device}, "
        f"{config.coarse.iterations} coarse + {config.fine.iterations} fine steps"
    )

    train_background = config.train_background
    if dataset.alphas is None and train_background == "random":
        # RGB-only images carry their own background: a random one could not be matched.
        train_background = config.eval_background
        log(f"the images have no alpha: training on a {train_background} background instead of random ones")
    total = config.total_iterations
    heldout = heldout_splits(dataset, torch.cat([data_on_device.pool(True)]))
    bg_value = 1.0 if config.eval_background == "white" else 0.0

    def save(step: int, stage: str) -> None:
        save_checkpoint(
            run_dir,
            model,
            {
                "optimizer": optimizer.state_dict(),
                "densify": strategy.state_dict(strategy_state),
                "step": step,
                "history": history,
                "train_time_s": train_time,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            {"step": step, "stage": stage, "num_gaussians": model.num_gaussians},
        )

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start_step, desc="4D construction", dynamic_ncols=True)
        log.echo = (lambda m: bar.write(m)) if echo is not None else None

    step = start_step
    sums: dict[str, torch.Tensor] = {}
    since_log = 0
    last_good = start_step if start_step else None
    segment_start = time.perf_counter()
    try:
        while step < total:
            stage, stage_step, stage_length = _stage_of(config, step)
            stage_cfg = config.coarse if stage == "coarse" else config.fine
            if stage == "fine" and not model.deform_enabled:
                model.enable_deformation(prepare=True)
                strategy_state = strategy.initial_state(model)
                log(f"fine stage: deformation ({config.deform.kind}) on, {model.num_gaussians} Gaussians")
            pool = data_on_device.pool(stage_cfg.static_orbit, stage_cfg.orbit)
            set_learning_rates(optimizer, config.lr, stage_step, stage_length, stage_cfg.canonical_lr)
            cams, target, alpha, bg = data_on_device.batch(pool, stage_cfg.cameras_per_step, step, train_background)
            try:
                losses, stats = training_step(
                    model, optimizer, cams, target, alpha, bg, config.loss, options,
                    strategy if stage_cfg.densify else None, strategy_state, stage_step, lpips_loss_model,
                )  # fmt: skip
            except ValueError as err:
                if _is_nonfinite_error(err):
                    raise NonFiniteLossError(f"step {step}: {err}") from err
                raise
            if stats and stats.get("total") is not None:
                details = ", ".join(f"{k} {v}" for k, v in stats.items() if k != "total")
                log(f"step {step} ({stage}): densified -> {stats['total']} Gaussians ({details})")
            for key, value in [("loss", losses.total), ("mse", losses.mse)]:
                sums[key] = sums.get(key, 0.0) + value
            since_log += 1
            step += 1
            at_stage_end = step == config.coarse.iterations or step == total
            do_ckpt = at_stage_end or (config.checkpoint_every and step % config.checkpoint_every == 0)
            do_eval = config.eval_every and (step % config.eval_every == 0 or step == total) and heldout
            stopping = stop_after is not None and step >= stop_after
            if step % config.log_every == 0 or do_ckpt or do_eval or stopping or step == total:
                loss_mean = float(sums["loss"]) / since_log  # one host sync
                if not math.isfinite(loss_mean):
                    raise NonFiniteLossError(f"the loss became {loss_mean} between steps {step - since_log} and {step}")
                psnr = -10 * math.log10(max(float(sums["mse"]) / since_log, 1e-12))
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_mean:.4f}", psnr=f"{psnr:.2f}", n=model.num_gaussians, stage=stage)
                    bar.update(step - bar.n)
                with open(run_dir / "log.txt", "a") as handle:
                    handle.write(f"step {step} {stage} loss {loss_mean:.5f} train_psnr {psnr:.3f} gaussians {model.num_gaussians}\n")
                sums, since_log = {}, 0
            if do_eval:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                train_time += time.perf_counter() - segment_start
                metrics, _ = evaluate(model, dataset, {k: v[:32] for k, v in heldout.items()}, options, bg_value)
                history.append({"step": step, "train_time_s": round(train_time, 3), "num_gaussians": model.num_gaussians,
                                **{f"{k}_psnr": round(v["psnr"], 3) for k, v in metrics.items()}})  # fmt: skip
                segment_start = time.perf_counter()
            if do_ckpt or stopping:
                if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                    raise NonFiniteLossError(f"parameters became non-finite before step {step}")
                save(step, _stage_of(config, step - 1)[0])
                last_good = step
            if stopping:
                break
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = f"step {last_good}" if last_good else "the start (no checkpoint yet)"
        log(f"interrupted at step {step}; --resume continues from {where}")
        raise
    except NonFiniteLossError as err:
        if bar is not None:
            bar.close()
        kept = f"the last good checkpoint (step {last_good}) is kept in {run_dir / 'checkpoint'}" if last_good else "no checkpoint was written yet"
        message = (
            f"4D construction stopped: non-finite loss ({err}); {kept}. "
            "Lower the learning rates (--lr.*) or check the data, then rerun (with --resume to continue from the checkpoint)."
        )
        log(message)
        raise NonFiniteLossError(message) from err
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time += time.perf_counter() - segment_start
    if bar is not None:
        bar.close()
        log.echo = echo
    if stop_after is not None and step < total:
        log(f"stopped after step {step} (checkpoint written)")
        return {"stopped_at": step}

    # -- outputs --------------------------------------------------------------------------------
    model.eval()
    lpips_model = lpips_loader.get(device) if config.output.lpips else None
    if config.output.lpips and lpips_model is None:
        log(f"LPIPS not reported: its weights are not available ({lpips_loader.error})")
    splits = dict(heldout)
    splits["train"] = dataset.splits["orbit"]
    metrics, renders = evaluate(model, dataset, splits, options, bg_value, lpips_model) if config.output.evaluate else ({}, {})
    if config.output.renders and config.output.evaluate:
        for name in heldout:
            write_renders(run_dir / "renders" / name, renders[name], image_names(dataset, heldout[name]))
    if config.output.ply:
        write_plys(model, run_dir / "ply", dataset.num_frames)
    if config.output.video:
        radius, fov = camera_layout(dataset, dataset.splits["orbit"])
        write_orbit_video(
            model, run_dir / "videos", options, config.output.video_frames,
            config.output.video_size or dataset.width, config.output.video_elevation, radius, fov,
            config.output.video_fps, bg_value,
        )  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result = {
        "dataset": dataset.name,
        "splits": metrics,
        "heldout": sorted(heldout),
        "lpips_note": None if lpips_model is not None else f"LPIPS not available: {lpips_loader.error}",
        "iterations": total,
        "num_gaussians": model.num_gaussians,
        "train_time_s": round(train_time, 3),
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "wall_time_note": "this process's end-to-end time (data load, training, outputs); a resumed run counts only its own part",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backend": resolve_backend(options.backend, device),
        "history": history,
        **peak_memory(device),
    }
    write_json(run_dir / "metrics.json", result)
    summary = ", ".join(f"{k}: PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f}" for k, v in metrics.items())
    log(f"done in {result['wall_time_s']:.1f} s ({model.num_gaussians} Gaussians); {summary}")
    return result


def preset(name: str) -> ConstructConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def with_iterations(config: ConstructConfig, coarse: int, fine: int) -> ConstructConfig:
    """The same config with other stage lengths."""
    return replace(config, coarse=replace(config.coarse, iterations=coarse), fine=replace(config.fine, iterations=fine))
