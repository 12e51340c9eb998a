"""4D construction: optimise canonical Gaussians + a deformation field so renders match posed,
timed images (Diffusion4D section 3.4, 4DGS-style coarse-to-fine).

* **Coarse stage**: the deformation is bypassed (one static set of Gaussians), trained on the
  static orbit V-bar (time 0) alone in the ``default`` preset, or on the orbit video V plus V-bar
  (``paper``, ``demo``: 4DGS / Diffusion4D).
* **Fine stage**: the deformation is on, trained on V (plus V-bar in ``default``).

The configs and presets live in :mod:`gen4d.recon.presets` (imported here).

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
from pathlib import Path
from typing import Any

import torch

from gen4d.config import to_dict
from gen4d.data.dataset import MultiViewVideo, load_dataset
from gen4d.densify import build_strategy
from gen4d.errors import NonFiniteLossError
from gen4d.eval.split import evaluate_splits
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.io import write_json
from gen4d.recon.candidates import CANDIDATES_DIR, SELECTION_FILE, run_candidates
from gen4d.recon.graphs import StepGraphs
from gen4d.recon.optim import build_optimizer, learning_rates_at, rigid_motion_groups, set_learning_rates
from gen4d.recon.outputs import (
    LpipsLoader,
    camera_layout,
    heldout_splits,
    image_names,
    write_orbit_video,
    write_plys,
    write_renders,
)
from gen4d.recon.presets import (
    DEFAULT_PRESET,
    PRESETS,
    ConstructConfig,
    InitConfig,
    OutputConfig,
    StageConfig,
    preset,
    with_iterations,
)
from gen4d.recon.step import TrainData, check_dataset, initial_model, scene_extent, training_step
from gen4d.recon.turn_search import learn_rigid_motion, rigid_motion_report, search_turn
from gen4d.render import RenderOptions, resolve_backend
from gen4d.run import Engine, LoopSettings, Task, check_resume_config, open_run, read_training_state
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
# The run
# ---------------------------------------------------------------------------------------
def _stage_of(config: ConstructConfig, step: int) -> tuple[str, int, int]:
    """(stage name, step within the stage, stage length) of a global step."""
    if step < config.coarse.iterations:
        return "coarse", step, config.coarse.iterations
    return "fine", step - config.coarse.iterations, config.fine.iterations


RUN_KIND = "reconstruct"
# What a construction run writes in its folder (``--overwrite`` deletes these names only); the demo
# adds files made from the finished run: RUN/export/asset.glb and its web player, player.html.
RUN_ENTRIES = (*CHECKPOINT_ENTRIES, "ply", "renders", "videos", "export", "player.html", "metrics.json", "log.txt",
               "config.json", CANDIDATES_DIR, SELECTION_FILE)  # fmt: skip
"""What a run writes into its folder (``--overwrite`` deletes only these)."""
MAY_CHANGE_ON_RESUME = (
    "output", "log_every", "checkpoint_every", "checkpoint_seconds", "eval_every", "device", "backend", "tile_size",
    "cuda_graphs", "fine.iterations",
)  # fmt: skip
"""Config fields a resumed run may change (everything else must equal the stored config.json)."""


class ConstructTask(Task):
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
        self.graphs = StepGraphs(config.cuda_graphs, model.device)
        self.strategy_state = strategy.initial_state(model)
        self.history: list[dict[str, Any]] = []
        self.turn_report: dict[str, Any] | None = None

    def _search_turn(self) -> dict[str, Any] | None:
        """The whole-object turn search at the start of the fine stage (gen4d.recon.turn_search)."""
        config = self.config
        if not config.turn.enabled:
            return None
        if config.coarse.orbit or config.coarse.iterations == 0 or not self.dataset.has_split("static_orbit"):
            LOGGER.info("turn search skipped: it needs a coarse stage trained on the static orbit alone")
            return {"kept": False, "reason": "no coarse stage on the static orbit alone"}
        start = time.perf_counter()
        report = search_turn(self.model, self.dataset, config.turn, self.options)
        report["seconds"] = round(time.perf_counter() - start, 3)
        turned = ", ".join(f"{d:g}" for d in report.get("degrees", []))
        LOGGER.info(f"turn search ({report['seconds']:.1f} s): {'kept' if report['kept'] else 'not kept'}, "
                    f"{report['reason']}; degrees per time: {turned}")  # fmt: skip
        return report

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, torch.Tensor]:
        config, model = self.config, self.model
        stage, stage_step, stage_length = _stage_of(config, step)
        stage_cfg = config.coarse if stage == "coarse" else config.fine
        if stage == "fine" and not model.deform_enabled:
            self.optimizer.replace_parameters(model.enable_deformation(prepare=True))
            self.strategy_state = self.strategy.initial_state(model)
            LOGGER.info(
                f"fine stage: deformation ({config.deform.field.type_name}) on, {model.num_gaussians} Gaussians"
            )
            self.turn_report = self._search_turn()
            kept = bool(self.turn_report and self.turn_report.get("kept"))
            if config.rigid.when == "always" or (config.rigid.when == "turn" and kept):
                learn_rigid_motion(model, self.dataset)
                for group in rigid_motion_groups(model, learning_rates_at(config.lr, stage_step, stage_length)):
                    self.optimizer.add_group(group["name"], group["params"], group["lr"])
                LOGGER.info(f"fine stage: learning a whole-object rigid motion at {model.turn.times.numel()} times")
        reach = min(stage_step / (stage_cfg.time_window * stage_length), 1.0) if stage_cfg.time_window else 1.0
        pool = self.data.pool(stage_cfg.static_orbit, stage_cfg.orbit, reach)
        set_learning_rates(self.optimizer, config.lr, stage_step, stage_length, stage_cfg.canonical_lr)
        cams, target, alpha, bg = self.data.batch(pool, stage_cfg.cameras_per_step, step, self.train_background)
        losses, stats = training_step(
            model, self.optimizer, cams, target, alpha, bg, config.loss, self.options,
            self.strategy if stage_cfg.densify else None, self.strategy_state, stage_step, self.lpips_model,
            self.graphs,
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
            "turn_report": self.turn_report,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy_state = self.strategy.load_state(state["densify"], self.model.device)
        self.history = list(state.get("history", []))
        self.turn_report = state.get("turn_report")

    def write_checkpoint(self, folder: Path) -> None:
        self.model.save(folder)

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
    # The device and the data are checked before the run folder is made: a mistake leaves nothing behind.
    device = resolve_device(config.device)
    source = None if isinstance(data, MultiViewVideo) else Path(data)
    if not isinstance(data, MultiViewVideo):
        data = load_dataset(data, size=config.size or None)
    if config.candidates.count > 1:
        check_dataset(data.resized(config.size) if config.size else data)
    run = open_run(run_dir, RUN_KIND, RUN_ENTRIES, resume=resume, overwrite=overwrite, command=command)
    run_dir = run.path
    with run_logging(run_dir / "log.txt", echo):
        if config.candidates.count > 1:
            return run_candidates(
                data,
                source,
                config,
                run_dir,
                resume,
                echo is not None,
                stop_after,
                wall_start,
                MAY_CHANGE_ON_RESUME,
                reconstruct,
            )
        return _reconstruct(data, config, device, run_dir, resume, progress, stop_after, wall_start)


def _reconstruct(
    data, config: ConstructConfig, device: torch.device, run_dir: Path, resume: bool, progress: bool, stop_after,
    wall_start,
) -> dict[str, Any]:  # fmt: skip
    log = LOGGER.info
    reset_peak_memory(device)
    dataset = data.resized(config.size) if config.size else data
    check_dataset(dataset)
    options = RenderOptions(backend=config.backend, tile_size=config.tile_size)

    checkpoint = read_training_state(run_dir, device) if resume else None
    if checkpoint is not None:
        check_resume_config(run_dir, config, MAY_CHANGE_ON_RESUME)
    write_json(run_dir / "config.json", to_dict(config))

    torch.manual_seed(config.seed)
    data_on_device = TrainData(dataset, device, config.seed)
    extent = scene_extent(dataset)
    strategy = build_strategy(config.densify, scene_extent=extent, seed=config.seed)
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

    phases = {"setup_s": time.perf_counter() - wall_start}
    loop_start = time.perf_counter()
    result = engine.run(task, start_step, train_time)
    phases["loop_s"] = time.perf_counter() - loop_start
    if result.stopped_early:
        log(f"stopped after step {result.step} (checkpoint written)")
        return {"stopped_at": result.step}
    return _write_outputs(config, task, run_dir, result.train_time, wall_start, lpips_loader, device, phases)


def _write_outputs(config: ConstructConfig, task: ConstructTask, run_dir: Path, train_time: float, wall_start: float,
                   lpips_loader: LpipsLoader, device: torch.device, phases: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """metrics.json, held-out renders, PLY frames and the orbit video of a finished run; ``phases``:
    seconds of the run's parts so far, completed here with the outputs' (metrics.json ``phases``)."""

    def phase(name: str, start: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        phases[name] = time.perf_counter() - start

    log = LOGGER.info
    model, dataset, heldout, options, bg_value = task.model, task.dataset, task.heldout, task.options, task.bg_value
    model.eval()
    lpips_model = lpips_loader.get(device) if config.output.lpips else None
    if config.output.lpips and lpips_model is None:
        log(f"LPIPS not reported: its weights are not available ({lpips_loader.error})")
    # The training orbit is always measured (several candidates are told apart by it).
    splits = dict(heldout) if config.output.evaluate else {}
    splits["train"] = dataset.splits["orbit"]
    start = time.perf_counter()
    metrics, renders = evaluate_splits(model, dataset, splits, options, bg_value, lpips_model)
    phase("evaluate_s", start)
    start = time.perf_counter()
    if config.output.renders and config.output.evaluate:
        for name in heldout:
            write_renders(run_dir / "renders" / name, renders[name], image_names(dataset, heldout[name]))
    phase("renders_s", start)
    start = time.perf_counter()
    if config.output.ply:
        write_plys(model, run_dir / "ply", dataset.num_frames)
    phase("ply_s", start)
    start = time.perf_counter()
    if config.output.video:
        radius, fov = camera_layout(dataset, dataset.splits["orbit"])
        write_orbit_video(
            model, run_dir / "videos", options, config.output.video_frames,
            config.output.video_size or dataset.width, config.output.video_elevation, radius, fov,
            config.output.video_fps, bg_value,
        )  # fmt: skip
    phase("video_s", start)
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
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "history": task.history,
        "turn": task.turn_report,
        "rigid": rigid_motion_report(model),
        **peak_memory(device),
    }
    write_json(run_dir / "metrics.json", result)
    summary = ", ".join(f"{k}: PSNR {v['psnr']:.2f} SSIM {v['ssim']:.3f}" for k, v in metrics.items())
    log(f"done in {result['wall_time_s']:.1f} s ({model.num_gaussians} Gaussians); {summary}")
    return result
