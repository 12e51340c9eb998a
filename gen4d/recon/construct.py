"""4D construction: optimise canonical Gaussians + a deformation field so renders match posed,
timed images (Diffusion4D section 3.4, 4DGS-style coarse-to-fine).

* **Coarse stage**: the deformation is bypassed (one static set of Gaussians) and trained on
  the orbit video V plus the static orbit V-bar (time 0) when the dataset has it.
* **Fine stage**: the deformation is on, trained on V only (Diffusion4D).

Every step renders ``cameras_per_step`` random training images in one rasteriser call (each
camera at its own time), with L1 + D-SSIM (+ LPIPS when its weights are on disk) on RGB
composited over the step's background, an alpha loss for RGBA data, optional depth smoothness
and the field's regularisers. Densification (:mod:`gen4d.densify`) runs inside each stage.

Reusable pieces (STAG4D builds on them): :mod:`gen4d.recon.step` (:func:`initial_model`,
:class:`TrainData`, :func:`training_step`), :func:`gen4d.recon.optim.build_optimizer`,
:func:`gen4d.recon.checkpoint.save_checkpoint`, :mod:`gen4d.recon.outputs`. The loop itself
(checkpoints, logging, NaN policy, Ctrl-C) is :class:`gen4d.run.Engine`; :class:`ConstructTask`
supplies the model, batches, losses and step.

GPU notes: images, masks and cameras live on the device from the start; per-step values stay
on the device and are read (one host sync, by the engine) only every ``log_every`` steps, which is
also where a non-finite loss is detected.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from gen4d.config import ConfigError, check_non_negative, check_positive, check_range, to_dict
from gen4d.data.dataset import MultiViewVideo, load_dataset
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig, RigidityConfig
from gen4d.densify import DensifyConfig, MCMCConfig, build_strategy
from gen4d.errors import NonFiniteLossError
from gen4d.eval.split import evaluate_splits
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.io import write_json
from gen4d.recon.losses import LossWeights
from gen4d.recon.optim import LearningRates, build_optimizer, set_learning_rates
from gen4d.recon.outputs import (
    LpipsLoader,
    camera_layout,
    heldout_splits,
    image_names,
    write_orbit_video,
    write_plys,
    write_renders,
)
from gen4d.recon.step import TrainData, check_dataset, initial_model, scene_extent, training_step
from gen4d.render import RenderOptions, resolve_backend
from gen4d.run import Engine, LoopSettings, check_resume_config, open_run, read_training_state
from gen4d.run.checkpoint import CHECKPOINT_ENTRIES
from gen4d.run.device import resolve_device
from gen4d.run.logs import LOGGER, run_logging
from gen4d.run.timing import peak_memory, reset_peak_memory

__all__ = [
    "InitConfig",
    "StageConfig",
    "OutputConfig",
    "ConstructConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "NonFiniteLossError",
    "ConstructTask",
    "reconstruct",
    "preset",
    "with_iterations",
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
    time_window: float = 0.0
    """Coarse-to-fine in time: the trained times grow from the first to all over this fraction of the stage (0 = all from the start)."""
    densify: bool = True
    """Run densification in this stage (schedule in ConstructConfig.densify, in stage steps)."""

    def __post_init__(self) -> None:
        check_non_negative(self, "iterations")
        check_positive(self, "cameras_per_step")
        check_range(self, "time_window", 0.0, 1.0)


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


def _hexplane(
    resolution: int, time_res: int, multires: tuple[int, ...], features: int = 32, bounds: float = 1.0
) -> HexPlaneConfig:
    return HexPlaneConfig(
        features=features, resolution=(resolution,) * 3 + (time_res,), multires=multires, bounds=bounds
    )


@dataclass(frozen=True)
class ConstructConfig:
    """4D construction (coarse static stage, fine dynamic stage); the defaults are the ``default`` preset."""

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
    coarse: StageConfig = field(
        default_factory=lambda: StageConfig(iterations=600, cameras_per_step=4, static_orbit=True, orbit=False)
    )
    """Static stage (deformation bypassed); by default on the static orbit alone, so the canonical set is the
    object at time 0, seen from all around."""
    fine: StageConfig = field(
        default_factory=lambda: StageConfig(iterations=800, cameras_per_step=4, static_orbit=True, densify=False)
    )
    """Dynamic stage (deformation on); by default without densification, the static orbit keeping time 0 fixed."""
    deform: DeformConfig = field(
        default_factory=lambda: DeformConfig(
            hexplane=replace(_hexplane(32, 12, (1, 2)), deform_scale=False), rigidity=RigidityConfig(samples=2048)
        )
    )
    """Deformation field (default: HexPlane moving and turning the Gaussians, not resizing them, with local
    rigidity between neighbours)."""
    strategy: Literal["default", "mcmc"] = "default"
    """Densification strategy: 'default' (3DGS clone / split / prune) or 'mcmc' (3DGS-MCMC, fixed cap)."""
    densify: DensifyConfig = field(
        default_factory=lambda: DensifyConfig(
            start=100, stop=600, every=100, reset_every=0, prune_opacity=0.01, max_gaussians=150_000
        )
    )
    """Densification schedule of the 'default' strategy (steps counted within each stage)."""
    mcmc: MCMCConfig = field(default_factory=MCMCConfig)
    """Settings of the 'mcmc' strategy (steps counted within each stage)."""
    lr: LearningRates = field(default_factory=LearningRates)
    """Learning rates."""
    loss: LossWeights = field(default_factory=lambda: LossWeights(rigidity=0.01))
    """Loss weights."""
    log_every: int = 100
    """Update the progress bar, log and check for NaN every this many steps."""
    checkpoint_every: int = 0
    """Write RUN/checkpoint every this many steps (also at each stage end; 0 = only then)."""
    checkpoint_seconds: float = 120.0
    """Also write RUN/checkpoint when this many seconds of training passed since the last one (negative = never)."""
    eval_every: int = 0
    """Measure held-out PSNR every this many steps (quality vs iterations; 0 = only at the end)."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Outputs written at the end."""

    def __post_init__(self) -> None:
        if self.coarse.iterations + self.fine.iterations <= 0:
            raise ConfigError(
                "fine.iterations", "coarse.iterations + fine.iterations must be > 0, got 0 for both", "ConstructConfig"
            )
        check_non_negative(self, "size", "checkpoint_every", "eval_every")
        check_positive(self, "tile_size", "log_every")

    @property
    def total_iterations(self) -> int:
        return self.coarse.iterations + self.fine.iterations


PRESETS: dict[str, ConstructConfig] = {
    # The GPU preset (ConstructConfig's defaults): a canonical set of the object at time 0 from the
    # static orbit, then motion without densification, no resizing and local rigidity between
    # neighbouring Gaussians (docs/reconstruction.md; settings chosen on tuning renders that no
    # benchmark uses).
    "default": ConstructConfig(),
    # Diffusion4D's 4D construction schedule (4DGS: 5k coarse + 2k fine, one image per step),
    # 4DGS-style HexPlane ([64, 64, 64, T/2], multires [1, 2]) and learning rates.
    "paper": ConstructConfig(
        init=InitConfig(num_points=10000),
        coarse=StageConfig(iterations=5000, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=2000, cameras_per_step=1, static_orbit=False),
        # 4DGaussians' regulariser functionals (summed second differences; STAG4D inherited them).
        deform=DeformConfig(hexplane=replace(_hexplane(64, 12, (1, 2)), regularizer="stag4d")),
        densify=DensifyConfig(start=500, stop=15000, every=100, reset_every=3000, grad_threshold=2e-4),
        lr=LearningRates(
            means=1.6e-4 * 2.2,
            means_final=1.6e-6 * 2.2,
            field_mlp=1.6e-4 * 2.2,
            field_mlp_final=1.6e-6 * 2.2,
            field_grid=1.6e-3 * 2.2,
            field_grid_final=1.6e-5 * 2.2,
            decay_steps=0,
        ),
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
        lr=LearningRates(
            means=1.6e-4 * 2.2,
            means_final=1.6e-6 * 2.2,
            field_mlp=1.6e-4 * 2.2,
            field_mlp_final=1.6e-6 * 2.2,
            decay_steps=0,
        ),
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


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def _stage_of(config: ConstructConfig, step: int) -> tuple[str, int, int]:
    """(stage name, step within the stage, stage length) of a global step."""
    if step < config.coarse.iterations:
        return "coarse", step, config.coarse.iterations
    return "fine", step - config.coarse.iterations, config.fine.iterations


RUN_KIND = "reconstruct"
RUN_ENTRIES = (*CHECKPOINT_ENTRIES, "ply", "renders", "videos", "metrics.json", "log.txt", "config.json")
"""What a run writes into its folder (``--overwrite`` deletes only these)."""
MAY_CHANGE_ON_RESUME = (
    "output", "log_every", "checkpoint_every", "checkpoint_seconds", "eval_every", "device", "backend", "tile_size",
    "fine.iterations",
)  # fmt: skip
"""Config fields a resumed run may change (everything else must equal the stored config.json)."""


class ConstructTask:
    """4D construction as a :class:`gen4d.run.Task`: model, batches, losses and the step."""

    title = "4D construction"
    nan_hint = "Lower the learning rates (--lr.*) or check the data"
    resume_how = "--resume"

    def __init__(
        self, config, dataset, data, model, strategy, options, train_background, lpips_model, heldout, bg_value
    ):
        self.config = config
        self.dataset = dataset
        self.data = data
        self.model = model
        self.strategy = strategy
        self.options = options
        self.train_background = train_background
        self.lpips_model = lpips_model
        self.heldout = heldout
        self.bg_value = bg_value
        self.optimizer = build_optimizer(model, config.lr)
        self.strategy_state = strategy.initial_state(model)
        self.history: list[dict[str, Any]] = []

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, torch.Tensor]:
        config, model = self.config, self.model
        stage, stage_step, stage_length = _stage_of(config, step)
        stage_cfg = config.coarse if stage == "coarse" else config.fine
        if stage == "fine" and not model.deform_enabled:
            model.enable_deformation(prepare=True)
            self.strategy_state = self.strategy.initial_state(model)
            LOGGER.info(f"fine stage: deformation ({config.deform.kind}) on, {model.num_gaussians} Gaussians")
        reach = min(stage_step / (stage_cfg.time_window * stage_length), 1.0) if stage_cfg.time_window else 1.0
        pool = self.data.pool(stage_cfg.static_orbit, stage_cfg.orbit, reach)
        set_learning_rates(self.optimizer, config.lr, stage_step, stage_length, stage_cfg.canonical_lr)
        cams, target, alpha, bg = self.data.batch(pool, stage_cfg.cameras_per_step, step, self.train_background)
        losses, stats = training_step(
            model, self.optimizer, cams, target, alpha, bg, config.loss, self.options,
            self.strategy if stage_cfg.densify else None, self.strategy_state, stage_step, self.lpips_model,
        )  # fmt: skip
        if stats and stats.get("total") is not None:
            details = ", ".join(f"{k} {v}" for k, v in stats.items() if k != "total")
            LOGGER.info(f"step {step} ({stage}): densified -> {stats['total']} Gaussians ({details})")
        return {"loss": losses.total, "mse": losses.mse}

    def describe(self, step: int, means: dict[str, float]) -> dict[str, Any]:
        psnr = -10 * math.log10(max(means.get("mse", 1.0), 1e-12))
        stage = _stage_of(self.config, step - 1)[0]
        return {"stage": stage, "loss": f"{means.get('loss', float('nan')):.5f}", "train_psnr": f"{psnr:.3f}",
                "gaussians": self.model.num_gaussians}  # fmt: skip

    def must_checkpoint(self, step: int) -> bool:
        return step == self.config.coarse.iterations  # the end of the coarse stage

    def evaluate_due(self, step: int) -> bool:
        every = self.config.eval_every
        return bool(every and (step % every == 0 or step == self.config.total_iterations) and self.heldout)

    def evaluate(self, step: int, train_time: float) -> None:
        subsets = {k: v[:32] for k, v in self.heldout.items()}
        metrics, _ = evaluate_splits(self.model, self.dataset, subsets, self.options, self.bg_value)
        self.history.append({"step": step, "train_time_s": round(train_time, 3), "num_gaussians": self.model.num_gaussians,
                             **{f"{k}_psnr": round(v["psnr"], 3) for k, v in metrics.items()}})  # fmt: skip

    # -- checkpoints ----------------------------------------------------------------------------------------
    def parameters(self):
        return self.model.parameters()

    def state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "densify": self.strategy.state_dict(self.strategy_state),
            "history": self.history,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy_state = self.strategy.load_state(state["densify"], self.model.device)
        self.history = list(state.get("history", []))

    def write_checkpoint(self, folder: Path) -> None:
        self.model.save(folder)

    def record(self, step: int, means: dict[str, float], steps: int, train_time: float) -> None:
        pass  # log.txt's lines (the engine's) are the record

    def should_stop(self, step: int) -> bool:
        return False

    def checkpoint_info(self, step: int) -> dict[str, Any]:
        return {"stage": _stage_of(self.config, step - 1)[0], "num_gaussians": self.model.num_gaussians}


def reconstruct(
    data: MultiViewVideo | str | os.PathLike,
    config: ConstructConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    stop_after: int | None = None,
    command: str = "reconstruct",
) -> dict[str, Any]:
    """Run 4D construction on ``data`` (a dataset or a path :func:`load_dataset` reads) into
    ``run_dir`` and return the metrics written to RUN/metrics.json.

    The run folder follows :func:`gen4d.run.open_run`: a new or empty folder is made a run; an
    earlier run there is continued with ``resume`` (from RUN/checkpoint; the stored RUN/config.json
    must match ``config`` except for :data:`MAY_CHANGE_ON_RESUME`) or replaced with ``overwrite``;
    any other non-empty folder is refused (:class:`UserError`). ``stop_after``: stop (after
    checkpointing) once this many global steps are done, without writing the final outputs (used
    to test resuming).
    """
    wall_start = time.perf_counter()
    run = open_run(run_dir, RUN_KIND, RUN_ENTRIES, resume=resume, overwrite=overwrite, command=command)
    run_dir = run.path
    with run_logging(run_dir / "log.txt", echo):
        return _reconstruct(data, config, run_dir, resume, progress, stop_after, wall_start)


def _reconstruct(
    data, config: ConstructConfig, run_dir: Path, resume: bool, progress: bool, stop_after, wall_start
) -> dict[str, Any]:
    log = LOGGER.info
    device = resolve_device(config.device)
    reset_peak_memory(device)
    if isinstance(data, MultiViewVideo):
        dataset = data.resized(config.size) if config.size else data
    else:
        dataset = load_dataset(data, size=config.size or None)
    check_dataset(dataset)
    options = RenderOptions(backend=config.backend, tile_size=config.tile_size)

    checkpoint = read_training_state(run_dir, device) if resume else None
    if checkpoint is not None:
        check_resume_config(run_dir, to_dict(config), MAY_CHANGE_ON_RESUME)
    write_json(run_dir / "config.json", to_dict(config))

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

    if checkpoint is not None:
        model = DynamicGaussians.load(checkpoint[0], device=device)
    else:
        if resume:
            log(f"--resume: no checkpoint in {run_dir}; starting from scratch")
        model = initial_model(config, device)
    train_background = config.train_background
    if dataset.alphas is None and train_background == "random":
        # RGB-only images carry their own background: a random one could not be matched.
        train_background = config.eval_background
    heldout = heldout_splits(dataset, torch.cat([data_on_device.pool(True)]))
    bg_value = 1.0 if config.eval_background == "white" else 0.0
    task = ConstructTask(
        config, dataset, data_on_device, model, strategy, options, train_background, lpips_loss_model, heldout, bg_value
    )
    settings = LoopSettings(
        total_steps=config.total_iterations,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        stop_after=stop_after,
    )
    engine = Engine(run_dir, settings, device, progress=progress)
    start_step, train_time = 0, 0.0
    if checkpoint is not None:
        start_step, train_time = engine.restore(task, checkpoint[1])
        log(f"resumed from {checkpoint[0]} at step {start_step} ({model.num_gaussians} Gaussians)")
    log(
        f"4D construction of {dataset.name}: {len(dataset)} images {dataset.width}x{dataset.height}, "
        f"{dataset.num_frames} frames, splits {sorted(dataset.splits)}; device {device}, "
        f"{config.coarse.iterations} coarse + {config.fine.iterations} fine steps"
    )
    if train_background != config.train_background:
        log(f"the images have no alpha: training on a {train_background} background instead of random ones")

    result = engine.run(task, start_step, train_time)
    if result.stopped_early:
        log(f"stopped after step {result.step} (checkpoint written)")
        return {"stopped_at": result.step}
    return _write_outputs(config, task, run_dir, result.train_time, wall_start, lpips_loader, device)


def _write_outputs(config: ConstructConfig, task: ConstructTask, run_dir: Path, train_time: float, wall_start: float,
                   lpips_loader: LpipsLoader, device: torch.device) -> dict[str, Any]:  # fmt: skip
    """metrics.json, held-out renders, PLY frames and the orbit video of a finished run."""
    log = LOGGER.info
    model, dataset, heldout, options, bg_value = task.model, task.dataset, task.heldout, task.options, task.bg_value
    model.eval()
    lpips_model = lpips_loader.get(device) if config.output.lpips else None
    if config.output.lpips and lpips_model is None:
        log(f"LPIPS not reported: its weights are not available ({lpips_loader.error})")
    splits = dict(heldout)
    splits["train"] = dataset.splits["orbit"]
    metrics, renders = (
        evaluate_splits(model, dataset, splits, options, bg_value, lpips_model) if config.output.evaluate else ({}, {})
    )
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
        "iterations": config.total_iterations,
        "num_gaussians": model.num_gaussians,
        "train_time_s": round(train_time, 3),
        "wall_time_s": round(time.perf_counter() - wall_start, 3),
        "wall_time_note": "this process's end-to-end time (data load, training, outputs); a resumed run counts only its own part",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backend": resolve_backend(options.backend, device),
        "history": task.history,
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
