"""Optimiser and learning-rate schedule helpers for DynamicGaussians.

One Adam optimiser with one parameter group per canonical field (``means``, ``log_scales``,
``quats``, ``opacity_logits``, ``sh``) and one per deformation-field group (``field.grid``,
``field.mlp``, ``field.control``), so densification can swap a field's tensor and its moments
(:mod:`gen4d.densify.ops`) and each group has its own schedule. Decaying rates follow the 3DGS
log-linear schedule: ``exp(lerp(log(initial), log(final), min(step / decay_steps, 1)))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from gen4d.config import check_non_negative, check_positive
from gen4d.gaussians.dynamic import DynamicGaussians

__all__ = ["LearningRates", "log_linear", "build_optimizer", "set_learning_rates", "learning_rates_at"]


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates; ``*_final`` values are reached after ``decay_steps`` (log-linear)."""

    means: float = 1.6e-3
    """Canonical positions, initial."""
    means_final: float = 1.6e-5
    """Canonical positions, after decay."""
    sh: float = 2.5e-3
    """SH colour coefficients (degree >= 1 use sh / 20, as 3DGS)."""
    opacity: float = 5e-2
    """Opacity logits."""
    scales: float = 5e-3
    """Log-scales."""
    quats: float = 1e-3
    """Quaternions."""
    field_mlp: float = 1.6e-3
    """Deformation MLP, initial."""
    field_mlp_final: float = 1.6e-4
    """Deformation MLP, after decay."""
    field_grid: float = 1.6e-2
    """HexPlane grid, initial."""
    field_grid_final: float = 1.6e-3
    """HexPlane grid, after decay."""
    field_control: float = 1e-3
    """Control-point positions and radii (SC-GS field)."""
    decay_steps: int = 0
    """Steps of the decay within a stage (0 = the stage's length)."""
    adam_eps: float = 1e-15
    """Adam epsilon (3DGS / STAG4D: 1e-15)."""

    def __post_init__(self) -> None:
        check_non_negative(self, *(f.name for f in fields(self) if f.name != "adam_eps"))
        check_positive(self, "adam_eps")


def log_linear(step: int, initial: float, final: float, steps: int) -> float:
    """3DGS's exponential (log-linear) decay from ``initial`` to ``final`` over ``steps``."""
    if steps <= 0 or initial <= 0 or final <= 0:
        return initial
    t = min(max(step / steps, 0.0), 1.0)
    return math.exp(math.log(initial) * (1 - t) + math.log(final) * t)


def learning_rates_at(lr: LearningRates, step: int, stage_length: int) -> dict[str, float]:
    """Group name -> learning rate at ``step`` of a stage of ``stage_length`` steps."""
    steps = lr.decay_steps or stage_length
    return {
        "means": log_linear(step, lr.means, lr.means_final, steps),
        "log_scales": lr.scales,
        "quats": lr.quats,
        "opacity_logits": lr.opacity,
        "sh": lr.sh,
        "field.mlp": log_linear(step, lr.field_mlp, lr.field_mlp_final, steps),
        "field.grid": log_linear(step, lr.field_grid, lr.field_grid_final, steps),
        "field.control": lr.field_control,
    }


def build_optimizer(model: DynamicGaussians, lr: LearningRates, fused: bool | None = None) -> torch.optim.Adam:
    """Adam over the model's canonical parameters and deformation field, one named group each."""
    rates = learning_rates_at(lr, 0, 1)
    groups = [{"name": name, "params": [param], "lr": rates[name]} for name, param in model.params.items()]
    for name, params in model.field.param_groups().items():
        params = [p for p in params if p.requires_grad]
        if params:
            key = f"field.{name}"
            if key not in rates:
                raise ValueError(f"deformation field group {name!r} has no learning rate (known: grid, mlp, control)")
            groups.append({"name": key, "params": params, "lr": rates[key]})
    if fused is None:
        fused = model.device.type == "cuda"
    return torch.optim.Adam(groups, lr=rates["means"], eps=lr.adam_eps, fused=bool(fused))


def set_learning_rates(
    optimizer: torch.optim.Optimizer, lr: LearningRates, step: int, stage_length: int, canonical_scale: float = 1.0
) -> None:
    """Set every named group's rate for ``step`` of the current stage; the canonical Gaussians'
    groups (not ``field.*``) are multiplied by ``canonical_scale``."""
    rates = learning_rates_at(lr, step, stage_length)
    for group in optimizer.param_groups:
        name = group.get("name")
        rate = rates.get(name, group["lr"])
        group["lr"] = rate if name is None or name.startswith("field.") else rate * canonical_scale
