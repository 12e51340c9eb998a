"""Training of the Diffusion4D video model with accelerate: L = L_ldm + omega * L_mr.

One function, :func:`train_vdm`, runs the same way on one CPU, one GPU, several GPUs and several
nodes (``accelerate launch [--num_processes N] [--num_machines M ...] -m gen4d.cli train-vdm ...``):
accelerate sets up DDP, mixed precision and the device; gradient accumulation is explicit.

Determinism: clip order, per-sample noise, timesteps and condition dropout are pure functions of
(seed, step, position in the global batch) (:mod:`gen4d.train.data`), network dropout is seeded
per (seed, step, micro-batch, process), and the optimiser, EMA and step are restored from
safetensors checkpoints, so a resumed run continues exactly where the interrupted one was. N
processes see the same global batch, noise and timesteps as one process; with network dropout off
(``model.dropout=0``) they compute the same loss and update, with it on they differ only in the
dropout masks.

The loop itself (checkpoints, logging, NaN policy, the run folder) is :class:`gen4d.run.Engine`'s;
:class:`VDMTask` supplies the step. The time budget (``optim.minutes``) is checked at logging steps.

Run folder (``TrainConfig.out``): ``.gen4d-run.json`` (the run marker), ``config.json`` (the resolved
config), ``checkpoint/`` (the latest: ``model.safetensors``, ``ema.safetensors``,
``training_state.safetensors`` + ``.json`` with the optimiser, AMP scaler and RNG states; older ones
in ``checkpoints/step_N/``), ``log.txt``,
``metrics.jsonl`` (loss curve: L, L_ldm, L_mr averaged over the steps since the previous record), ``tb/`` (tensorboard), ``model/`` (the exported model: EMA weights,
loadable by ``gen4d sample-vdm``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gen4d.config import to_dict
from gen4d.diffusion.schedule import NoiseSchedule
from gen4d.diffusion.vdm.model import (
    add_motion_embedding,
    build_unet,
    has_motion_embedding,
)
from gen4d.io import read_json, write_json
from gen4d.run import Engine, LoopSettings, open_run, read_training_state
from gen4d.run.checkpoint import CHECKPOINT_ENTRIES, find_checkpoint
from gen4d.run.engine import STATE
from gen4d.run.folder import config_differences
from gen4d.run.logs import LOGGER, run_logging
from gen4d.train.config import TrainConfig
from gen4d.train.data import ClipSet, find_datasets, global_batch_indices, load_clips, read_captions, sample_seed
from gen4d.train.ema import EMA
from gen4d.train.shards import ShardStream, codec_id
from gen4d.train.step import batch_condition, per_sample_randomness, vdm_loss

__all__ = ["train_vdm", "RESUMABLE_CHANGES"]

RUN_KIND = "train-vdm"
RUN_ENTRIES = (*CHECKPOINT_ENTRIES, "config.json", "metrics.jsonl", "tb", "model", "log.txt")
"""What a training run writes into its folder."""
WALL_CHECKPOINT_S = 120.0
"""Single-process runs also checkpoint after this many seconds of training (Ctrl-C keeps the work)."""
RESUMABLE_CHANGES = {"optim.steps", "optim.minutes", "log_every", "checkpoint_every", "keep_checkpoints", "out"}
"""Config keys that may differ when a run is resumed (everything else must match config.json)."""


def _build_model(config: TrainConfig, device: torch.device):
    """(unet, spec, schedule, codec, image_encoder, text_encoder, base_state) for training."""
    from gen4d.diffusion.vdm.components import PixelCodec, VDMSpec, load_video_model
    from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS, unet_preset

    mc = config.model
    torch.manual_seed(sample_seed(config.seed, 0x1417))  # initial weights (UNet from scratch, motion MLP)
    base_state = None
    image_encoder = text_encoder = None
    if mc.init or mc.base:
        model = load_video_model(mc.init or mc.base, variant=mc.variant, device=device, encoders=True)
        unet, schedule, codec = model.unet, model.schedule, model.codec
        image_encoder, text_encoder = model.image_encoder, model.text_encoder
        spec = replace(
            model.spec,
            variant=mc.variant,
            null_condition=mc.null_condition,
            fps=mc.fps,
            size=config.data.size,
            num_frames=config.data.num_frames,
            motion_stats={},
            notes="",
        )
        if mc.init:
            base_state = {k: v.detach().cpu().clone() for k, v in unet.state_dict().items() if ".motion." not in k}
        if codec.kind != mc.codec:
            raise ValueError(f"model.codec={mc.codec!r} but the starting model works in {codec.kind!r} space")
        unet.requires_grad_(True)
    else:
        if mc.schedule not in SCHEDULE_PRESETS:
            raise ValueError(f"unknown schedule preset {mc.schedule!r}; expected one of {sorted(SCHEDULE_PRESETS)}")
        unet_config = unet_preset(mc.arch, mc.variant)
        unet = build_unet(mc.variant, unet_config).to(device)
        schedule = NoiseSchedule.from_diffusers_config(SCHEDULE_PRESETS[mc.schedule])
        codec = PixelCodec()
        spec = VDMSpec(
            variant=mc.variant,
            unet_config=unet_config,
            scheduler=dict(SCHEDULE_PRESETS[mc.schedule]),
            codec="pixel",
            base=None,
            num_frames=config.data.num_frames,
            size=config.data.size,
            fps=mc.fps,
            motion_freq_dim=mc.motion_freq_dim,
            motion_scale=mc.motion_scale,
            null_condition=mc.null_condition,
            base_null_condition=mc.null_condition,
        )
    if config.task == "4d":
        add_motion_embedding(unet, spec.motion_freq_dim, spec.motion_scale)
    elif has_motion_embedding(unet):
        unet.time_embedding.motion.requires_grad_(False)  # unused without motion; keeps DDP happy
    if mc.dropout is not None:
        for module in unet.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = float(mc.dropout)
    if config.optim.gradient_checkpointing:
        if getattr(unet, "_supports_gradient_checkpointing", False):
            unet.enable_gradient_checkpointing()
        else:
            LOGGER.info(f"note: {type(unet).__name__} does not support gradient checkpointing; training without it")
    unet.to(device).train()
    return unet, spec, schedule, codec, image_encoder, text_encoder, base_state


class VDMTask:
    """Video-model training as a :class:`gen4d.run.Task`: one optimiser step over the global batch
    (gradient accumulation, DDP through accelerate), EMA, the loss curve in RUN/metrics.jsonl."""

    title = "train-vdm"
    nan_hint = "Lower --optim.lr (or raise --optim.warmup_steps), or check the data"
    resume_how = "rerunning the same command"

    def __init__(self, config: TrainConfig, accelerator, unet, optimizer, params, ema, clips: ClipSet | ShardStream, spec, schedule,
                 null_text, run: Path):  # fmt: skip
        self.config, self.accelerator, self.unet, self.optimizer, self.params = (
            config,
            accelerator,
            unet,
            optimizer,
            params,
        )
        self.ema, self.clips, self.spec, self.schedule, self.null_text = ema, clips, spec, schedule, null_text
        self.inner = accelerator.unwrap_model(unet)
        self.device, self.main = accelerator.device, accelerator.is_main_process
        self.processes, self.rank = accelerator.num_processes, accelerator.process_index
        oc = config.optim
        self.local_batch = oc.batch_size // (self.processes * oc.grad_accum)
        self.shape = clips.shape if isinstance(clips, ShardStream) else tuple(clips.latents.shape[1:])
        self.camera = None
        if spec.camera_dim:
            from gen4d.diffusion.vdm.camera import camera_features
            from gen4d.diffusion.vdm.spec import orbit_cameras

            self.camera = camera_features(orbit_cameras(spec))[None].to(self.device)
        self.keep_latents = spec.null_condition == "keep_latents"
        self.metrics_path = run / "metrics.jsonl"
        self.lr = oc.lr
        self.started: float | None = None
        self.stopped_by = "steps"
        self.writer = None
        if self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run / "tb"))
            except ImportError:
                LOGGER.info("note: tensorboard is not installed; logging to metrics.jsonl only")

    def step(self, step: int) -> dict[str, torch.Tensor]:
        config, oc, accelerator, device = self.config, self.config.optim, self.accelerator, self.device
        if self.started is None:
            self.started = time.monotonic()
        self.lr = oc.lr * min(1.0, (step + 1) / oc.warmup_steps) if oc.warmup_steps else oc.lr
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        stream = self.clips if isinstance(self.clips, ShardStream) else None
        if stream is None:
            clip_ids = global_batch_indices(len(self.clips), step, oc.batch_size, config.seed)
        totals = torch.zeros(3, device=device)
        for micro in range(oc.grad_accum):
            first = (micro * self.processes + self.rank) * self.local_batch
            positions = range(first, first + self.local_batch)
            if stream is None:
                clips, index = self.clips, clip_ids[first : first + self.local_batch]
            else:  # this process's own shards (gen4d.train.shards)
                clips, index = stream.micro_batch(step, micro), torch.arange(self.local_batch)
            t, noise, drop = per_sample_randomness(
                step, positions, config.seed, self.shape, self.schedule.num_train_timesteps, config.uncond_prob, device
            )
            z0, zbar, condition = batch_condition(
                clips, index, self.spec.variant, config.task, drop, self.null_text, self.keep_latents, device
            )
            if self.camera is not None:  # VideoMV's per-frame cameras (every clip has the same orbit)
                condition = replace(condition, camera=self.camera.expand(len(index), -1, -1))
            # Dropout draws from the global generators: seed them per (step, micro-batch, process) so a
            # resumed run draws the same masks as an uninterrupted one.
            torch.manual_seed(sample_seed(config.seed, step, micro, self.rank, 0xD509))
            sync = contextlib.nullcontext() if micro == oc.grad_accum - 1 else accelerator.no_sync(self.unet)
            with sync:
                with accelerator.autocast():
                    loss, parts = vdm_loss(
                        self.unet,
                        self.spec.variant,
                        self.schedule,
                        z0,
                        zbar,
                        condition,
                        t,
                        noise,
                        config.mr_weight if config.task == "4d" else 0.0,
                        self.spec.fps,
                    )
                accelerator.backward(loss / oc.grad_accum)
            totals += torch.stack([loss.detach(), parts["ldm"], parts["mr"]]) / oc.grad_accum
        if oc.grad_clip > 0:
            accelerator.clip_grad_norm_(self.params, oc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.inner)
        totals = accelerator.reduce(totals, reduction="mean")
        return {"loss": totals[0], "ldm": totals[1], "mr": totals[2]}

    def describe(self, step: int, means: dict[str, float]) -> dict[str, Any]:
        return {k: f"{v:.4f}" for k, v in means.items()}

    def record(self, step: int, means: dict[str, float], steps: int, train_time: float) -> None:
        if not self.main:
            return
        record = {"step": step, "loss": means["loss"], "ldm": means["ldm"], "mr": means["mr"], "steps": steps,
                  "lr": self.lr, "elapsed_s": round(train_time, 3)}  # fmt: skip
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key in ("loss", "ldm", "mr", "lr"):
                self.writer.add_scalar(f"train/{key}", record[key], step)

    def should_stop(self, step: int) -> bool:
        """The time budget (optim.minutes), decided by all processes together at logging steps."""
        minutes = self.config.optim.minutes
        if minutes <= 0 or self.started is None:
            return False
        over = torch.tensor(float(time.monotonic() - self.started > minutes * 60), device=self.device)
        if float(self.accelerator.reduce(over, reduction="sum")) > 0:
            self.stopped_by = "minutes"
        return self.stopped_by == "minutes"

    def must_checkpoint(self, step: int) -> bool:
        return False

    def evaluate_due(self, step: int) -> bool:
        return False

    def evaluate(self, step: int, train_time: float) -> None:
        pass

    def parameters(self):
        return self.params

    def state(self) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {
            "optimizer": self.optimizer.state_dict(),
            "ema_updates": self.ema.num_updates if self.ema else 0,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        # The weights, optimiser and EMA are loaded before accelerator.prepare (train_vdm); the
        # AMP grad scaler exists only after it.
        if self.accelerator.scaler is not None and state.get("scaler"):
            self.accelerator.scaler.load_state_dict(state["scaler"])

    def write_checkpoint(self, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.inner.state_dict().items()},
                  str(folder / "model.safetensors"))  # fmt: skip
        if self.ema is not None:
            save_file(self.ema.state_dict(), str(folder / "ema.safetensors"))

    def checkpoint_info(self, step: int) -> dict[str, Any]:
        return {"method": "train-vdm"}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _quantiles(values: torch.Tensor) -> dict[str, float]:
    v = values.double()
    q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "min": float(v.min()),
        "q10": float(q[0]),
        "median": float(q[1]),
        "q90": float(q[2]),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "count": int(v.numel()),
    }


def train_vdm(config: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a run; returns {'step', 'run', 'model', 'metrics', 'stopped_by'}."""
    config.validate()
    try:
        from accelerate import Accelerator
    except ImportError as err:  # pragma: no cover
        raise ImportError("training needs accelerate: pip install 'gen4d[diffusion]'") from err

    oc = config.optim
    accelerator = Accelerator(mixed_precision=oc.mixed_precision, cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    processes = accelerator.num_processes
    if oc.batch_size % (processes * oc.grad_accum):
        raise ValueError(
            f"optim.batch_size={oc.batch_size} is not divisible by processes ({processes}) x "
            f"grad_accum ({oc.grad_accum}); choose a global batch that is"
        )
    run = Path(config.out)
    resolved = to_dict(config)
    stored_path = run / "config.json"
    # The run-folder policy: an earlier train-vdm run in --out is continued; other non-empty
    # folders are refused. Every process checks (nothing is written before the barrier), then the
    # main process opens the folder.
    open_run(run, RUN_KIND, RUN_ENTRIES, resume=True, check_only=True)
    if stored_path.is_file() and find_checkpoint(run, f"{STATE}.json") is not None:
        # Only a run with a checkpoint binds the config: a failed start leaves nothing to resume.
        differing = config_differences(read_json(stored_path), resolved, RESUMABLE_CHANGES)
        if differing:
            raise ValueError(
                f"{run} holds a run with a different config ({', '.join(differing)}); "
                "use another --out, or the same settings to resume it"
            )
    accelerator.wait_for_everyone()
    if main:
        open_run(run, RUN_KIND, RUN_ENTRIES, resume=True, command="train-vdm")
        write_json(stored_path, resolved)
    accelerator.wait_for_everyone()
    with run_logging(run / "log.txt", print) if main else contextlib.nullcontext():
        return _train(config, accelerator, run, progress)


def _train(config: TrainConfig, accelerator, run: Path, progress: bool) -> dict[str, Any]:
    oc = config.optim
    device, main = accelerator.device, accelerator.is_main_process
    processes = accelerator.num_processes

    unet, spec, schedule, codec, image_encoder, text_encoder, base_state = _build_model(config, device)
    if config.data.shards:
        local = oc.batch_size // (processes * oc.grad_accum)
        clips = ShardStream(config.data.shards, accelerator.process_index, processes, local, oc.grad_accum, config.seed)
        clips.check(
            codec_id(codec.kind, config.model.init or config.model.base), config.data.size, config.data.num_frames
        )
        spec.orbit_cameras = clips.index["orbit_cameras"]
        null_text = text_encoder([""]).float().cpu() if text_encoder is not None else None
        return _train_on(config, accelerator, run, progress, unet, spec, schedule, base_state, clips, null_text)
    folders = find_datasets(config.data.paths)
    captions = read_captions(config.data.captions)
    if config.model.variant == "text" and text_encoder is None:
        raise ValueError(
            "the text variant needs a CLIP text encoder: fine-tune from a base model that has one "
            "(--model.base damo-vilab/text-to-video-ms-1.7b)"
        )
    codec_name = codec_id(codec.kind, config.model.init or config.model.base)
    load = functools.partial(
        load_clips, folders, config.data.size, config.data.num_frames, codec.encode, codec_name,
        image_encoder=image_encoder, text_encoder=text_encoder if config.model.variant == "text" else None,
        captions=captions, cache=config.data.cache,
    )  # fmt: skip
    clips = None
    if config.data.cache and processes > 1:  # the main process fills the cache, the others read it
        if main:
            clips = load(progress=progress)
        accelerator.wait_for_everyone()
    if clips is None:
        clips = load(write_cache=main, progress=progress and main)
    del load  # it holds the frozen encoders, released below
    null_text = text_encoder([""]).float().cpu() if text_encoder is not None else None
    image_encoder = text_encoder = None  # frozen encoders are no longer needed
    if clips.cameras is not None:
        from gen4d.diffusion.vdm.spec import orbit_record

        spec.orbit_cameras = orbit_record(clips.cameras)
    return _train_on(config, accelerator, run, progress, unet, spec, schedule, base_state, clips, null_text)


def _train_on(config, accelerator, run, progress, unet, spec, schedule, base_state, clips, null_text) -> dict[str, Any]:
    """The optimisation, export and result, given the model and the clips (in memory or streamed)."""
    oc = config.optim
    device, main = accelerator.device, accelerator.is_main_process
    processes = accelerator.num_processes
    spec.motion_stats = _quantiles(clips.motion)

    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=oc.lr, weight_decay=oc.weight_decay)
    ema = EMA(unet, oc.ema_decay) if oc.ema_decay > 0 else None
    checkpoint = read_training_state(run, "cpu")
    if checkpoint is not None:
        from safetensors.torch import load_file

        folder, saved = checkpoint
        unet.load_state_dict(load_file(str(folder / "model.safetensors")))
        optimizer.load_state_dict(saved["task"]["optimizer"])
        if ema is not None:
            if not (folder / "ema.safetensors").is_file():
                raise ValueError(f"{folder}: no EMA weights but this config uses ema_decay={oc.ema_decay}")
            ema.load_state_dict(load_file(str(folder / "ema.safetensors")), saved["task"].get("ema_updates", 0))
    unet, optimizer = accelerator.prepare(unet, optimizer)
    task = VDMTask(config, accelerator, unet, optimizer, params, ema, clips, spec, schedule, null_text, run)
    settings = LoopSettings(
        total_steps=oc.steps,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        # wall-time checkpoints are decided per process: only for single-process runs
        checkpoint_seconds=WALL_CHECKPOINT_S if processes == 1 else -1.0,
        keep=config.keep_checkpoints,
    )
    engine = Engine(run, settings, device, progress=progress, is_main=main, barrier=accelerator.wait_for_everyone)
    start_step, elapsed_before = 0, 0.0
    if checkpoint is not None:
        start_step, elapsed_before = engine.restore(task, saved)
        LOGGER.info(f"resuming {run} from step {start_step} ({folder.name})")
    try:
        result = engine.run(task, start_step, elapsed_before)
    finally:
        task.close()
    step, stopped_by = result.step, task.stopped_by
    inner = task.inner

    model_dir = run / "model"
    if main:
        export = copy.deepcopy(inner).float().cpu()
        if ema is not None:
            ema.copy_to(export)
        add_motion_embedding(export, spec.motion_freq_dim, spec.motion_scale)
        base = None
        if base_state is not None:
            base = copy.deepcopy(export)
            base.load_state_dict(base_state, strict=False)
        how = "static 3D-aware base model (task=static)" if config.task == "static" else "Diffusion4D 4D-aware model"
        spec.notes = (
            f"{how}; trained by gen4d train-vdm for {step} steps (global batch {oc.batch_size}, "
            f"lr {oc.lr}, omega {config.mr_weight}) on {len(clips)} clips; "
            f"{'EMA' if ema else 'raw'} weights"
        )
        from gen4d.diffusion.vdm.components import save_video_model

        save_video_model(model_dir, spec, export, base)
    accelerator.wait_for_everyone()
    # No accelerator.end_training(): it tears down the process group, and a caller may train again
    # in the same processes (scripts/train_small_vdm.py runs three phases).
    return {
        "step": step,
        "run": str(run),
        "model": str(model_dir),
        "metrics": str(task.metrics_path),
        "stopped_by": stopped_by,
        "clips": len(clips),
        "motion_stats": spec.motion_stats,
        "main": main,
    }
