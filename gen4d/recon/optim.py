"""Optimiser and learning-rate schedule helpers for DynamicGaussians.

One Adam optimiser (:class:`Adam`) with one parameter group per canonical field (``means``,
``log_scales``, ``quats``, ``opacity_logits``, ``sh``) and one per deformation-field group
(``field.grid``, ``field.mlp``, ``field.control``, ``field.motion``, ``field.weights``), so densification can swap a field's tensor and
its moments (:mod:`gen4d.densify.ops`) and each group has its own schedule. Decaying rates follow
the 3DGS log-linear schedule: ``exp(lerp(log(initial), log(final), min(step / decay_steps, 1)))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch.optim.adam import adam as adam_update

from gen4d.config import check_non_negative, check_positive
from gen4d.densify.ops import optimizer_param_state
from gen4d.gaussians.dynamic import DynamicGaussians

__all__ = ["Adam", "LearningRates", "log_linear", "build_optimizer", "set_learning_rates", "learning_rates_at"]


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
    """Control-point positions and radii (SC-GS field), motion-basis centres and radii."""
    field_motion: float = 1.6e-3
    """Motion-basis tables (rotations, translations per time knot), initial."""
    field_motion_final: float = 1.6e-4
    """Motion-basis tables, after decay."""
    field_weights: float = 1e-2
    """Learned per-Gaussian blend logits of the motion bases (``learn_weights``)."""
    rigid_rotation: float = 5e-3
    """Learned whole-object rotation per time (axis-angle, radians; ``rigid``), initial."""
    rigid_rotation_final: float = 5e-4
    """Learned whole-object rotation, after decay."""
    rigid_translation: float = 2e-3
    """Learned whole-object translation per time, initial."""
    rigid_translation_final: float = 2e-4
    """Learned whole-object translation, after decay."""
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
        "field.motion": log_linear(step, lr.field_motion, lr.field_motion_final, steps),
        "field.weights": lr.field_weights,
        "rigid.rotation": log_linear(step, lr.rigid_rotation, lr.rigid_rotation_final, steps),
        "rigid.translation": log_linear(step, lr.rigid_translation, lr.rigid_translation_final, steps),
    }


class Adam:
    """Adam over parameter groups: the update of ``torch.optim.Adam`` (its functional form,
    ``torch.optim.adam.adam``; fused on CUDA, the single-tensor form elsewhere, as torch.optim.Adam
    chooses) with the same ``param_groups``, ``state`` and ``state_dict`` layout, so checkpoints of
    either load in the other.

    Why not ``torch.optim.Adam`` itself: constructing a ``torch.optim.Optimizer`` imports
    ``torch._dynamo`` (with sympy and the distributed packages: 1-3 s of every run's start-up) and
    its ``step`` adds per-call bookkeeping (hooks, graph-capture checks) to every training step."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool = False):  # fmt: skip
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": 0.0, "amsgrad": False,
                         "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
                         "fused": bool(fused), "decoupled_weight_decay": False}  # fmt: skip
        self.param_groups: list[dict[str, Any]] = [{**self.defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    def _new_state(self, param: torch.Tensor, fused: bool) -> dict[str, Any]:
        # As torch.optim.Adam: ``step`` on the parameter's device when fused, else a CPU scalar.
        step = (
            torch.zeros((), dtype=torch.float32, device=param.device)
            if fused
            else torch.tensor(0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32)
        )
        zeros = lambda: torch.zeros_like(param, memory_format=torch.preserve_format)  # noqa: E731
        return {"step": step, "exp_avg": zeros(), "exp_avg_sq": zeros()}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params, grads, avgs, squares, steps = [], [], [], [], []
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state.get(param)
                if not state:
                    state = self.state[param] = self._new_state(param, group["fused"])
                params.append(param)
                grads.append(param.grad)
                avgs.append(state["exp_avg"])
                squares.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            adam_update(params, grads, avgs, squares, [], steps, foreach=False if not group["fused"] else None,
                        fused=group["fused"], amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                        weight_decay=0.0, eps=group["eps"], maximize=False)  # fmt: skip

    def add_group(self, name: str, params: list[torch.Tensor], lr: float) -> None:
        """Optimise new parameters (made after the optimiser, e.g. a learned rigid motion) as group ``name``."""
        self.param_groups.append({**self.defaults, "name": name, "params": list(params), "lr": lr})

    def replace_parameters(self, replaced: dict[torch.Tensor, torch.Tensor]) -> None:
        """Optimise ``replaced[old]`` instead of ``old`` (a field's set-up made new parameter
        tensors, e.g. per-Gaussian ones of a new size); the old ones' moments are dropped."""
        for old, new in replaced.items():
            found = optimizer_param_state(self, old)
            if found is not None:
                _, group, position = found
                group["params"][position] = new
                self.state.pop(old, None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Optimizer.state_dict``'s layout: parameters numbered in group order."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            numbers = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": numbers})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (or ``torch.optim.Adam.state_dict``): moments cast to
        their parameter's device and dtype, ``step`` kept where this optimiser keeps it."""
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(mine["params"]) for g, mine in zip(groups, self.param_groups)
        ):
            raise ValueError("optimizer state: its parameter groups do not match this model's")
        self.state = {}
        for mine, stored in zip(self.param_groups, groups):
            for number, param in zip(stored["params"], mine["params"]):
                entry = saved["state"].get(number, saved["state"].get(str(number)))
                if not entry:
                    continue
                restored = {}
                for key, value in entry.items():
                    if key == "step":
                        device = param.device if mine.get("fused") else "cpu"
                        restored[key] = torch.as_tensor(value, dtype=torch.float32).to(device).clone()
                    elif isinstance(value, torch.Tensor):
                        restored[key] = value.to(device=param.device, dtype=param.dtype).clone()
                    else:
                        restored[key] = value
                self.state[param] = restored
            mine.update({k: v for k, v in stored.items() if k != "params"})
            if isinstance(mine.get("betas"), list):
                mine["betas"] = tuple(mine["betas"])


def build_optimizer(model: DynamicGaussians, lr: LearningRates, fused: bool | None = None) -> Adam:
    """Adam over the model's canonical parameters and deformation field, one named group each."""
    rates = learning_rates_at(lr, 0, 1)
    groups = [{"name": name, "params": [param], "lr": rates[name]} for name, param in model.params.items()]
    for name, params in model.field.param_groups().items():
        params = [p for p in params if p.requires_grad]
        if params:
            key = f"field.{name}"
            if key not in rates:
                raise ValueError(
                    f"deformation field group {name!r} has no learning rate (known: grid, mlp, control, motion, weights)"
                )
            groups.append({"name": key, "params": params, "lr": rates[key]})
    groups.extend(rigid_motion_groups(model, rates))
    if fused is None:
        fused = model.device.type == "cuda"
    return Adam(groups, lr=rates["means"], eps=lr.adam_eps, fused=bool(fused))


def rigid_motion_groups(model: DynamicGaussians, rates: dict[str, float]) -> list[dict[str, Any]]:
    """Parameter groups of the model's learned whole-object motion (none when it has none)."""
    if not model.turn.learnable:
        return []
    return [{"name": f"rigid.{name}", "params": [getattr(model.turn, name)], "lr": rates[f"rigid.{name}"]}
            for name in ("rotation", "translation")]  # fmt: skip


def set_learning_rates(
    optimizer: Adam, lr: LearningRates, step: int, stage_length: int, canonical_scale: float = 1.0
) -> None:
    """Set every named group's rate for ``step`` of the current stage; the canonical Gaussians'
    groups (not ``field.*`` or ``rigid.*``) are multiplied by ``canonical_scale``."""
    rates = learning_rates_at(lr, step, stage_length)
    for group in optimizer.param_groups:
        name = group.get("name")
        rate = rates.get(name, group["lr"])
        motion = name is None or name.startswith(("field.", "rigid."))
        group["lr"] = rate if motion else rate * canonical_scale
