"""The deformation-field interface: (canonical Gaussians, times) -> Gaussians at those times.

A field is an ``nn.Module`` with

* ``forward(canonical: Gaussians (N, ...), times: Tensor (B,)) -> Gaussians (B, N, ...)``:
  one deformed set per time (time is always an explicit argument; a field holds no "current
  time");
* ``regularization(canonical, times) -> dict[str, Tensor]``: named scalar regularisers (plane TV,
  time smoothness, ARAP, ...), weighted by the caller's loss config;
* ``per_gaussian_state() -> dict[str, Tensor]``: tensors with one row per canonical Gaussian
  (first dimension N) that densification must resize in lockstep with the Gaussians
  (:mod:`gen4d.densify` calls ``set_per_gaussian_state`` after every topology change);
  ``per_gaussian_parameters()`` the same for parameters (their optimiser state follows them);
* ``prepare(canonical)``: called once when the deformation is switched on (end of the static
  stage), e.g. to place control points on the trained canonical Gaussians;
* ``param_groups() -> dict[str, list[Parameter]]``: parameters by learning-rate group
  (e.g. "grid" and "mlp").
"""

from __future__ import annotations

import torch
from torch import nn

from gen4d._checks import check_shape
from gen4d.gaussians.core import Gaussians

__all__ = ["DeformationField", "check_times"]


def check_times(times: torch.Tensor) -> torch.Tensor:
    """Validate a (B,) tensor of normalised times (values are not checked, to avoid host syncs)."""
    if not isinstance(times, torch.Tensor):
        raise TypeError(f"times: expected a torch.Tensor of shape (B,), got {type(times).__name__}")
    check_shape("times", times, ("B",))
    if not times.is_floating_point():
        raise TypeError(f"times: expected a float tensor of normalised times in [0, 1], got {times.dtype}")
    return times


class DeformationField(nn.Module):
    """Base class of deformation fields (see the module docstring for the contract)."""

    kind: str = "base"
    capturable: bool = False
    """Whether a step through the field may be captured as a CUDA graph: its output is a pure
    function of its parameters and inputs (no caches changed inside a step)."""

    def forward(self, canonical: Gaussians, times: torch.Tensor) -> Gaussians:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularization(self, canonical: Gaussians, times: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def per_gaussian_state(self) -> dict[str, torch.Tensor]:
        return {}

    def set_per_gaussian_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no per-Gaussian state; got {sorted(state)}")

    def per_gaussian_parameters(self) -> dict[str, nn.Parameter]:
        return {}

    def set_per_gaussian_parameters(self, params: dict[str, nn.Parameter]) -> None:
        if params:
            raise ValueError(f"{type(self).__name__} has no per-Gaussian parameters; got {sorted(params)}")

    def prepare(self, canonical: Gaussians) -> None:
        """Hook run once when the deformation is switched on (default: nothing)."""

    def before_step(self, means: torch.Tensor, step: int) -> None:
        """Hook run by a training step before its renders, with the canonical positions (N, 3,
        detached); default: nothing. Caches refreshed on a schedule of training steps are refreshed
        here, so ``forward`` stays free of side effects (evaluation renders change nothing)."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"mlp": [p for p in self.parameters() if p.requires_grad]}
