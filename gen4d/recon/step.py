"""The pieces of a 4D-construction step, reused by STAG4D: the initial model, the training batches
(:class:`TrainData`), the photometric losses and :func:`training_step` (render, losses, backward,
densification hooks, Adam step)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from gen4d.data.dataset import MultiViewVideo
from gen4d.densify import DensifyStrategy, MCMCStrategy
from gen4d.gaussians.core import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon import losses as L
from gen4d.recon.graphs import StepGraphs
from gen4d.recon.losses import LossWeights, image_losses
from gen4d.render import RenderOptions
from gen4d.run.rng import generator

__all__ = ["StepLosses", "TrainData", "check_dataset", "image_losses", "initial_model", "scene_extent", "training_step"]


def scene_extent(dataset: MultiViewVideo) -> float:
    """3DGS's scene extent: 1.1 x the largest camera distance from the cameras' mean centre."""
    centres = dataset.cameras.centers
    return 1.1 * float((centres - centres.mean(0)).norm(dim=-1).max().clamp_min(1e-3))


def initial_model(config: Any, device: torch.device) -> DynamicGaussians:
    """Random canonical Gaussians in a ball + a fresh (identity) field; deformation off.

    ``config``: a :class:`gen4d.recon.construct.ConstructConfig` (its ``init``, ``deform`` and
    ``seed``; not imported here, since construct imports this module)."""
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
        raise ValueError(
            f"{dataset.name}: images are {dataset.width}x{dataset.height}; expected at least 11x11 (SSIM window)"
        )


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

    def pool(self, static_orbit: bool, orbit: bool = True, reach: float = 1.0) -> torch.Tensor:
        """Indices a stage trains on: the orbit video V, plus (``static_orbit``) the static orbit
        V-bar when the dataset has it; ``orbit=False`` leaves V out (the static orbit alone, when
        present). ``reach`` < 1 keeps the images up to that fraction of the time range (from the
        first time on; coarse-to-fine in time)."""
        index = self.dataset.splits["orbit"]
        if static_orbit and self.dataset.has_split("static_orbit"):
            static = self.dataset.splits["static_orbit"]
            index = torch.cat([index, static]) if orbit else static
        if reach < 1.0:
            times = self.dataset.cameras.times[index]  # CPU: no device work
            first, last = float(times.min()), float(times.max())
            index = index[times <= first + reach * (last - first) + 1e-6]
        return index

    def batch(self, pool: torch.Tensor, count: int, step: int, background: str):
        gen = generator(self.seed, step)
        pick = pool[torch.randperm(pool.numel(), generator=gen)[: min(count, pool.numel())]]
        k = pick.numel()
        if background == "random":
            bg = torch.rand(k, 3, generator=gen)
        else:
            bg = torch.full((k, 3), 1.0 if background == "white" else 0.0)
        # Drawn on the CPU generator (the same batches on every device); on CUDA the two small
        # host->device copies go from pinned memory without blocking the host.
        bg = _to_device(bg, self.device)
        pick_dev = _to_device(pick, self.device)
        rgb = self.images[pick_dev]
        alpha = None if self.alphas is None else self.alphas[pick_dev]
        target = rgb if alpha is None else rgb * alpha + bg[:, None, None, :] * (1 - alpha)
        return self.cameras[pick_dev], target, alpha, bg


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class StepLosses:
    """Loss terms of one step (device tensors; read them only at logging steps)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    mse: torch.Tensor


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
    graphs: StepGraphs | None = None,
) -> tuple[StepLosses, dict[str, int]]:
    """One optimisation step: render all ``cameras`` in one call, losses, backward, densification
    hooks, Adam step. Returns the losses and the densification stats (empty if nothing changed).
    ``graphs``: replay the fixed-shape parts as CUDA graphs where they apply (same maths;
    :mod:`gen4d.recon.graphs`); the returned terms are then valid until the next step."""
    # Inputs were checked where they entered; value checks here would sync with the device every step.
    # The set at the cameras' times is made once and shared by the render and the regularisers.
    times = cameras.times.to(model.device)
    model.before_step(step)
    captured = graphs.deformation(model, times, weights) if graphs is not None else None
    at, regs = captured if captured is not None else (model.at(times) if model.deform_enabled else None, None)
    output = model.render(cameras, background, replace(options, check_values=False), at=at)
    if strategy is not None:
        strategy.step_pre_backward(output, step)
    terms = graphs.image_losses(output, target, alpha, weights, lpips_model) if graphs is not None else None
    if terms is None:
        terms = image_losses(output, target, alpha, weights, lpips_model)
    if regs is not None:
        terms.update(regs)
    elif model.deform_enabled:
        terms.update(L.weighted_regularizers(model.regularization(times, at=at), weights))
    if strategy is not None:
        terms.update(strategy.loss_terms(model))
    total = sum(terms.values())
    total.backward()
    stats: dict[str, int] = {}
    if strategy is not None and strategy_state is not None:
        stats = strategy.step_post_backward(
            model, optimizer, strategy_state, step, output, cameras.width, cameras.height
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        mse = (output.rgb.detach() - target).square().mean()
    return StepLosses(total.detach(), {k: v.detach() for k, v in terms.items()}, mse), stats
