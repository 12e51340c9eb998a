"""Topology changes of a model of Gaussians that keep everything in lockstep: the canonical
parameters, their optimiser state (Adam moments) and the deformation field's per-Gaussian
parameters (with their optimiser state) and caches.

The model is anything with the :class:`DensifiableModel` interface (gen4d's
``DynamicGaussians`` has it); this package does not import the model's own module.

Every change is one re-indexing ``new = old[index]`` along the Gaussian dimension; the last
``fresh`` rows are new Gaussians whose optimiser moments start at zero, and ``overrides`` sets
parameter values outright (e.g. the split children's positions and scales).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from gen4d.gaussians.core import quaternion_to_matrix

__all__ = ["DensifiableModel", "reindex", "duplicate", "split", "remove", "reset_opacity", "optimizer_param_state"]


@runtime_checkable
class DensifiableModel(Protocol):
    """What densification reads and changes on a model: the canonical per-Gaussian parameters
    (``params``: means, log_scales, quats, opacity_logits, sh, first dimension N) and the
    non-parameter tensors with one row per Gaussian (a deformation field's caches)."""

    params: nn.ParameterDict
    """name -> (N, ...) parameter; densification replaces them (and their optimiser state)."""

    @property
    def num_gaussians(self) -> int:
        """N."""
        ...

    @property
    def device(self) -> torch.device:
        """Where ``params`` live."""
        ...

    def per_gaussian_state(self) -> dict[str, torch.Tensor]:
        """name -> (N, ...) non-parameter tensors that must follow every re-indexing."""
        ...

    def set_per_gaussian_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace those tensors after a re-indexing."""
        ...

    def per_gaussian_parameters(self) -> dict[str, nn.Parameter]:
        """name -> (N, ...) parameters of the deformation field with one row per Gaussian; they
        follow every re-indexing with their optimiser state, as ``params`` do."""
        ...

    def set_per_gaussian_parameters(self, params: dict[str, nn.Parameter]) -> None:
        """Put the re-indexed parameters in place (the optimiser already holds them)."""
        ...


def _optimizers(optimizers) -> list:
    """One optimiser (anything with ``param_groups`` and ``state``: torch's or gen4d's Adam), a dict or a list of them."""
    if optimizers is None:
        return []
    if hasattr(optimizers, "param_groups"):
        return [optimizers]
    if isinstance(optimizers, dict):
        return list(optimizers.values())
    return list(optimizers)


def optimizer_param_state(optimizers, param: nn.Parameter) -> tuple[Any, dict, int] | None:
    """(optimizer, its param group, position in the group) holding ``param``, or None."""
    for opt in _optimizers(optimizers):
        for group in opt.param_groups:
            for position, p in enumerate(group["params"]):
                if p is param:
                    return opt, group, position
    return None


@torch.no_grad()
def reindex(
    model: DensifiableModel,
    optimizers,
    index: torch.Tensor,
    fresh: int | torch.Tensor = 0,
    overrides: dict[str, torch.Tensor] | None = None,
) -> None:
    """Replace every per-Gaussian tensor ``x`` of ``model`` by ``x[index]`` (``index`` (N',) long);
    rows ``fresh`` get zero optimiser moments (an int: the last ``fresh`` rows; a tensor: row
    indices or an (N',) bool mask); ``overrides`` name -> (N', ...) values."""
    overrides = overrides or {}
    count_new = int(index.shape[0])
    old_count = model.num_gaussians
    if isinstance(fresh, int):
        fresh_rows = slice(count_new - fresh, count_new) if fresh else None
    else:
        fresh_rows = fresh if fresh.numel() else None

    def swap(old: nn.Parameter, value: torch.Tensor) -> nn.Parameter:
        new = nn.Parameter(value.contiguous(), requires_grad=old.requires_grad)
        found = optimizer_param_state(optimizers, old)
        if found is not None:
            opt, group, position = found
            group["params"][position] = new
            state = opt.state.pop(old, None)
            if state is not None:
                for key, moment in list(state.items()):
                    if isinstance(moment, torch.Tensor) and moment.ndim > 0 and moment.shape[0] == old.shape[0]:
                        moment = moment[index].contiguous()
                        if fresh_rows is not None:
                            moment[fresh_rows] = 0
                        state[key] = moment
                opt.state[new] = state
        return new

    for name, old in list(model.params.items()):
        model.params[name] = swap(old, overrides.get(name, old.data[index]))
    # The field's per-Gaussian parameters (e.g. blend weights) and caches follow the same
    # re-indexing (a tensor of another size, e.g. a cache not filled yet, is left alone: the field
    # rebuilds it when it sees the new count).
    fields = {k: swap(v, v.data[index]) for k, v in model.per_gaussian_parameters().items() if v.shape[0] == old_count}
    if fields:
        model.set_per_gaussian_parameters(fields)
    extra = {k: v[index] for k, v in model.per_gaussian_state().items() if v.shape[0] == old_count}
    if extra:
        model.set_per_gaussian_state(extra)


def duplicate(model: DensifiableModel, optimizers, mask: torch.Tensor) -> int:
    """Clone the Gaussians selected by ``mask`` (N,) bool (3DGS clone); returns how many."""
    selected = torch.nonzero(mask).squeeze(-1)
    count = model.num_gaussians
    reindex(
        model, optimizers, torch.cat([torch.arange(count, device=mask.device), selected]), fresh=int(selected.numel())
    )
    return int(selected.numel())


def split(
    model: DensifiableModel,
    optimizers,
    mask: torch.Tensor,
    children: int = 2,
    scale_divisor: float = 1.6,
    generator: torch.Generator | None = None,
) -> int:
    """Replace each selected Gaussian by ``children`` samples from it with scales divided by
    ``scale_divisor`` (3DGS split); returns how many were split."""
    selected = torch.nonzero(mask).squeeze(-1)
    kept = torch.nonzero(~mask).squeeze(-1)
    k = int(selected.numel())
    if k == 0:
        return 0
    params = model.params
    index = torch.cat([kept, selected.repeat(children)])
    log_scales = params["log_scales"].data[selected]
    rotations = quaternion_to_matrix(params["quats"].data[selected])
    noise = torch.randn((children, k, 3), device=log_scales.device, dtype=log_scales.dtype, generator=generator)
    offsets = torch.einsum("kij,ckj->cki", rotations, torch.exp(log_scales)[None] * noise)
    child_means = (params["means"].data[selected][None] + offsets).reshape(children * k, 3)
    child_scales = (log_scales - math.log(scale_divisor)).repeat(children, 1)
    overrides = {
        "means": torch.cat([params["means"].data[kept], child_means]),
        "log_scales": torch.cat([params["log_scales"].data[kept], child_scales]),
    }
    reindex(model, optimizers, index, fresh=children * k, overrides=overrides)
    return k


def remove(model: DensifiableModel, optimizers, mask: torch.Tensor) -> int:
    """Delete the Gaussians selected by ``mask`` (N,) bool; returns how many."""
    count = int(mask.sum())
    if count:
        reindex(model, optimizers, torch.nonzero(~mask).squeeze(-1))
    return count


@torch.no_grad()
def reset_opacity(model: DensifiableModel, optimizers, value: float) -> None:
    """Clamp every opacity to at most ``value`` and zero its optimiser moments (3DGS reset)."""
    logit = math.log(value / (1 - value))
    param = model.params["opacity_logits"]
    param.data.clamp_(max=logit)
    found = optimizer_param_state(optimizers, param)
    if found is not None:
        state = found[0].state.get(param, {})
        for key, moment in state.items():
            if key != "step" and isinstance(moment, torch.Tensor) and moment.shape == param.shape:
                moment.zero_()
