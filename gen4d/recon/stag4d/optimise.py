"""STAG4D's 4D optimisation as a :class:`gen4d.run.Task` (the loop, checkpoints, logging and NaN
policy are :class:`gen4d.run.Engine`'s).

Per step: the reference view at each of the step's ``views_per_step`` frames (ramped MSE of colour
and alpha on white, summed over the frames: :func:`reference_losses`), the anchored views'
photometric loss (optional), one random view at each of those frames scored by Zero-1-to-3 SDS, the HexPlane and anisotropy regularisers, densification from every render.
Every random choice of step s comes from a generator seeded by (seed, s), so a resumed run repeats
exactly the choices an uninterrupted run makes.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gen4d.cameras import orbit, zero123_pose_embedding
from gen4d.data.dataset import MultiViewVideo
from gen4d.densify import DensifyStrategy
from gen4d.diffusion.sds import sample_timesteps, timestep_range
from gen4d.eval.split import evaluate_splits
from gen4d.gaussians.core import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon.losses import LossWeights, weighted_regularizers
from gen4d.recon.optim import build_optimizer, set_learning_rates
from gen4d.recon.stag4d.conditions import Conditions, choose_conditions, encode_conditions, on_white, spherical
from gen4d.recon.stag4d.config import Stag4DConfig, Stag4DLoss
from gen4d.render import RenderOptions
from gen4d.run import Engine, LoopSettings, Task, read_training_state
from gen4d.run.logs import LOGGER
from gen4d.run.rng import generator

__all__ = ["Stag4DTask", "evaluate_views", "optimise", "reference_losses", "render_size"]


def uses_sds(config: Stag4DConfig, guidance) -> bool:
    return guidance is not None and config.sds.weight > 0 and config.views_per_step > 0


def render_size(config: Stag4DConfig, step: int) -> int:
    """Side of the random views at ``step`` (grows over ``ramp_steps``)."""
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


def evaluate_views(model: DynamicGaussians, evaluation: MultiViewVideo, options: RenderOptions):
    """(metrics of every held-out view on white without the absent ones, the renders)."""
    metrics, renders = evaluate_splits(model, evaluation, {"eval": torch.arange(len(evaluation))}, options)
    return {k: v for k, v in metrics["eval"].items() if v is not None}, renders["eval"]


class Stag4DTask(Task):
    """STAG4D's model, batches, losses and step for the run engine."""

    title = "STAG4D"
    nan_hint = "Lower the learning rates (--lr.*) or the loss weights (--loss.*), or check the input"
    resume_how = "--resume"

    def __init__(
        self,
        config: Stag4DConfig,
        reference: MultiViewVideo,
        views: MultiViewVideo | None,
        guidance,
        model: DynamicGaussians,
        device: torch.device,
        evaluation: MultiViewVideo | None = None,
        conditions: Conditions | None = None,
    ):
        """``conditions``: the encoded SDS conditions (:func:`encode_conditions`; needed with SDS)."""
        self.config, self.model, self.device, self.guidance, self.evaluation = (
            config,
            model,
            device,
            guidance,
            evaluation,
        )
        self.options = RenderOptions(backend=config.backend)
        # The step's renders: inputs were checked where they entered, and value checks there
        # would sync with the device every step.
        self.step_options = replace(self.options, check_values=False)
        self.num_frames = len(reference)
        self.middle = self.num_frames // 2
        self.ref_images = on_white(reference).to(device)
        self.ref_alphas = reference.alphas.to(device)
        self.ref_cams = reference.cameras.to(device)
        _, _, ref_r = spherical(reference.cameras)
        self.fov = float(reference.cameras.fov_y_deg[0])
        self.radius = float(ref_r.mean())
        self.use_sds = uses_sds(config, guidance)
        self.mv_weight = config.loss.multiview_rgb > 0 or config.loss.multiview_alpha > 0
        self.views_by_frame: dict[int, torch.Tensor] = {}
        if views is not None and len(views):
            if views.alphas is None:
                raise ValueError("anchored views need alpha (matte them first)")
            for frame in torch.unique(views.frames).tolist():
                self.views_by_frame[int(frame)] = torch.nonzero(views.frames == frame).flatten()
            self.view_images = on_white(views).to(device)
            self.view_alphas = views.alphas.to(device)
            self.view_cams = views.cameras.to(device)
        self.conditions = conditions
        if self.use_sds and conditions is None:
            raise ValueError("Stag4DTask: SDS needs the encoded conditions (encode_conditions)")
        self.strategy = DensifyStrategy(config.densify, scene_extent=1.0, seed=config.seed)
        loss = config.loss
        self.reg_weights = LossWeights(
            plane_tv=loss.plane_tv,
            time_smoothness=loss.time_smoothness,
            time_l1=loss.time_l1,
            rigidity=loss.rigidity,
            isometry=loss.isometry,
        )
        self.optimizer = build_optimizer(model, config.lr)
        self.strategy_state = self.strategy.initial_state(model)
        self.history: list[dict[str, Any]] = []
        self.cond_counts = {"input": 0, "view": 0}

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict[str, torch.Tensor]:
        config, model, strategy, device = self.config, self.model, self.strategy, self.device
        static = step < config.static_steps
        if not static and not model.deform_enabled:
            self.optimizer.replace_parameters(model.enable_deformation(prepare=True))
            self.strategy_state = strategy.initial_state(model)
            LOGGER.info(f"step {step}: deformation on ({model.num_gaussians} Gaussians)")
        set_learning_rates(self.optimizer, config.lr, step, config.steps)
        model.before_step(step)
        gen = generator(config.seed, step)
        ramp = min((step + 1) / max(config.ramp_steps, 1), 1.0)
        terms: dict[str, torch.Tensor] = {}
        outputs = []

        # -- reference view at each of the step's frames (STAG4D's batch of 4) -------------
        count = max(config.views_per_step, 1)
        step_frames = (
            torch.full((count,), self.middle) if static else torch.randint(self.num_frames, (count,), generator=gen)
        )
        frame = int(step_frames[0])
        white = torch.ones(3, device=device)
        ref_index = step_frames.to(device)
        out = model.render(self.ref_cams[ref_index], white, self.step_options)
        strategy.step_pre_backward(out, step)
        outputs.append((out, self.ref_cams.width, self.ref_cams.height))
        terms.update(
            reference_losses(
                out.rgb, out.alpha, self.ref_images[ref_index], self.ref_alphas[ref_index], ramp, config.loss
            )
        )

        # -- anchored views (photometric) ------------------------------------------------
        if self.mv_weight and self.views_by_frame:
            if config.anchored_frames == "mixed" and not static:  # any views of any frames
                count = config.anchored_per_step or max(v.numel() for v in self.views_by_frame.values())
                index = torch.randperm(len(self.view_cams), generator=gen)[:count]
            else:
                have = sorted(self.views_by_frame)
                vf = frame if frame in self.views_by_frame else have[int(torch.randint(len(have), (1,), generator=gen))]
                if static:
                    vf = min(have, key=lambda f: abs(f - self.middle))
                index = self.views_by_frame[vf]
                if 0 < config.anchored_per_step < index.numel():
                    index = index[torch.randperm(index.numel(), generator=gen)[: config.anchored_per_step]]
            index = index.to(device)
            cams = self.view_cams[index]
            out = model.render(cams, white, self.step_options)
            strategy.step_pre_backward(out, step)
            outputs.append((out, cams.width, cams.height))
            terms["mv_rgb"] = ramp * config.loss.multiview_rgb * (out.rgb - self.view_images[index]).square().mean()
            terms["mv_alpha"] = (
                ramp * config.loss.multiview_alpha * (out.alpha - self.view_alphas[index]).square().mean()
            )

        # -- random views + SDS ----------------------------------------------------------
        if self.use_sds:
            terms["sds"] = self._sds(step, step_frames, gen, outputs)

        # -- regularisers ------------------------------------------------------------------
        if model.deform_enabled:
            times = self.ref_cams.times[[frame]]
            terms.update(weighted_regularizers(model.regularization(times), self.reg_weights))
        if config.loss.anisotropy:
            terms["anisotropy"] = config.loss.anisotropy * _anisotropy(model, config.loss.anisotropy_ratio)

        total = sum(terms.values())
        total.backward()
        stats: dict[str, int] = {}
        if strategy.active(step):
            for out_k, w_k, h_k in outputs[:-1]:
                strategy.accumulate(self.strategy_state, out_k, w_k, h_k)
            last, w_last, h_last = outputs[-1]
            stats = strategy.step_post_backward(model, self.optimizer, self.strategy_state, step, last, w_last, h_last)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if stats.get("total") is not None:
            LOGGER.info(
                f"step {step}: densified -> {stats['total']} Gaussians "
                f"(+{stats['cloned']} cloned, {stats['split']} split, -{stats['pruned']} pruned)"
            )
        return {"loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _sds(self, step: int, step_frames: torch.Tensor, gen: torch.Generator, outputs: list) -> torch.Tensor:
        """Render ``views_per_step`` random views (one at each of the step's frames) in one call and
        score them with Zero-1-to-3 SDS."""
        config, device = self.config, self.device
        count = config.views_per_step
        lo_el, hi_el = config.views.elevation_deg
        lo_az, hi_az = config.views.azimuth_deg
        elevation = lo_el + (hi_el - lo_el) * torch.rand(count, generator=gen)
        azimuth = lo_az + (hi_az - lo_az) * torch.rand(count, generator=gen)
        frames = step_frames[:count]  # one random view per reference frame, as STAG4D
        times = self.ref_cams.times.cpu()[frames]
        size = render_size(config, step)
        cams = orbit(elevation, azimuth, self.radius, self.fov, size, size, times).to(device)
        black = torch.rand(count, generator=gen) < config.views.black_background_prob
        background = torch.where(black[:, None], 0.0, 1.0).expand(count, 3).to(device)
        out = self.model.render(cams, background, self.step_options)
        self.strategy.step_pre_backward(out, step)
        outputs.append((out, size, size))
        use_input = (azimuth.abs() < config.sds.input_azimuth_deg) | (
            torch.rand(count, generator=gen) < config.sds.input_prob
        )
        condition, cond_pose = choose_conditions(
            self.conditions, frames, azimuth, use_input, self.views_by_frame, self.cond_counts
        )
        radius = torch.full((count,), self.radius)
        pose = zero123_pose_embedding(elevation, azimuth, radius, cond_pose[:, 0], cond_pose[:, 1], cond_pose[:, 2])
        low, high = timestep_range(config.sds.anneal, step)
        t = sample_timesteps(count, low, high, self.guidance.schedule.num_train_timesteps, gen)
        image = out.rgb.permute(0, 3, 1, 2)
        sds = self.guidance.sds(image, condition, pose.to(device), t, config.sds.guidance_scale, generator=gen)
        return config.sds.weight * sds.loss

    def describe(self, step: int, means: dict[str, float]) -> dict[str, Any]:
        return {"gaussians": self.model.num_gaussians, **{k: f"{v:.4g}" for k, v in means.items()}}

    def must_checkpoint(self, step: int) -> bool:
        return False

    def evaluate_due(self, step: int) -> bool:
        every = self.config.eval_every
        return self.evaluation is not None and bool(every) and (step % every == 0 or step == self.config.steps)

    def evaluate(self, step: int, train_time: float) -> None:
        metrics = evaluate_views(self.model, self.evaluation, self.options)[0]
        self.history.append(
            {"step": step, "train_time_s": round(train_time, 3), "num_gaussians": self.model.num_gaussians, **metrics}
        )

    # -- checkpoints ----------------------------------------------------------------------------------------
    def parameters(self):
        return self.model.parameters()

    def state(self) -> dict[str, Any]:
        return {
            "stag4d": True,
            "optimizer": self.optimizer.state_dict(),
            "densify": self.strategy.state_dict(self.strategy_state),
            "history": self.history,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if not state.get("stag4d"):
            raise ValueError("the checkpoint has no STAG4D training state to resume from")
        self.optimizer.load_state_dict(state["optimizer"])
        self.strategy_state = self.strategy.load_state(state["densify"], self.device)
        self.history = list(state.get("history", []))

    def write_checkpoint(self, folder: Path) -> None:
        self.model.save(folder)

    def checkpoint_info(self, step: int) -> dict[str, Any]:
        return {"num_gaussians": self.model.num_gaussians, "method": "stag4d"}


def optimise(
    reference: MultiViewVideo,
    views: MultiViewVideo | None,
    guidance,
    config: Stag4DConfig,
    run_dir: str | os.PathLike,
    evaluation: MultiViewVideo | None = None,
    resume: bool = False,
    progress: bool = True,
    device: torch.device | None = None,
) -> tuple[DynamicGaussians, dict[str, Any]]:
    """Optimise 4D Gaussians to the reference video (``front``-style, F frames with cameras and
    times), the anchored views (any frames, with cameras, times and ``frames``) and SDS from
    ``guidance`` (a :class:`gen4d.diffusion.zero123.Zero123Guidance`, or None to skip SDS).
    Checkpoints go to ``run_dir/checkpoint``; messages to the ``gen4d`` logger. Returns the model
    and a summary."""
    from gen4d.run.device import resolve_device

    run_dir = Path(run_dir)
    device = device or resolve_device(config.device)
    num_frames = len(reference)
    if num_frames < 2:
        raise ValueError(f"the reference video has {num_frames} frame(s); video-to-4D needs at least 2")
    if reference.alphas is None:
        raise ValueError("the reference video has no alpha; STAG4D needs RGBA frames (the mask loss)")
    if views is not None and len(views) and views.alphas is None:
        raise ValueError("anchored views need alpha (matte them first)")
    conditions = None
    if uses_sds(config, guidance):  # encoded once, before the seed is set (as the step draws assume)
        conditions = encode_conditions(guidance, reference, views, float(reference.cameras.fov_y_deg[0]))
    checkpoint = read_training_state(run_dir, device) if resume else None
    torch.manual_seed(config.seed)
    if checkpoint is not None:
        model = DynamicGaussians.load(checkpoint[0], device=device)
    else:
        gaussians = random_in_sphere(config.num_points, config.init_radius, config.init_opacity, 0, seed=config.seed)
        model = DynamicGaussians(gaussians, config.deform, deform_enabled=False).to(device)
    task = Stag4DTask(config, reference, views, guidance, model, device, evaluation, conditions)
    settings = LoopSettings(
        total_steps=config.steps,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
    )
    engine = Engine(run_dir, settings, device, progress=progress)
    start, train_time = 0, 0.0
    if checkpoint is not None:
        start, train_time = engine.restore(task, checkpoint[1])
        LOGGER.info(f"resumed at step {start} ({model.num_gaussians} Gaussians)")
    result = engine.run(task, start, train_time)
    model.eval()
    summary = {
        "steps": config.steps,
        "num_gaussians": model.num_gaussians,
        "train_time_s": round(result.train_time, 3),
        "history": task.history,
        "sds_conditions": task.cond_counts,  # SDS samples conditioned on the input frame / an anchored view (this process)
    }
    return model, summary
