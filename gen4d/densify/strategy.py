"""Adaptive density control as a strategy with gsplat-style hooks.

:class:`DensifyStrategy` follows 3DGS / gsplat's ``DefaultStrategy``: accumulate the norm of
each Gaussian's 2D-mean gradient over the renders of a step (in NDC units, i.e. pixels scaled
by half the image size, times the number of cameras since the loss averages over them),
divide by how often it was visible, and every ``every`` steps inside [start, stop)

* grow the Gaussians whose mean gradient exceeds the threshold: clone the small ones
  (max scale <= ``percent_dense`` x scene extent), split the large ones in ``split_children``
  with scales / ``split_scale_divisor``;
* prune the transparent ones (opacity < ``prune_opacity``), optionally too large / too small
  ones and ones with too large screen radius;
* optionally reset opacities every ``reset_every`` steps.

The threshold is fixed (``threshold_mode="fixed"``, 3DGS / 4DGS: 2e-4) or a percentile of the
current statistics (``"percentile"``: the value at the top ``percentile`` % of the non-zero
accumulated gradients, STAG4D's choice for SDS gradients whose scale drifts).

Hooks (call both every training step)::

    state = strategy.initial_state(model)
    out = model.render(cameras)
    strategy.step_pre_backward(out)            # retain the 2D-mean gradient
    loss.backward()
    stats = strategy.step_post_backward(model, optimizers, state, step, out, width, height)

The state is a plain dict of tensors; topology changes go through :mod:`gen4d.densify.ops`,
which keeps the model's parameters, optimiser moments and the field's per-Gaussian state in
lockstep. The per-step accumulation runs on the device without host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from gen4d.config import check_non_negative, check_positive, check_range
from gen4d.densify import ops
from gen4d.densify.ops import DensifiableModel
from gen4d.render.types import RenderOutput

__all__ = ["DensifyConfig", "DensifyStrategy"]


@dataclass(frozen=True)
class DensifyConfig:
    """When and how to grow and prune Gaussians (defaults: 3DGS / gsplat DefaultStrategy)."""

    type_name: ClassVar[str] = "adaptive"
    enabled: bool = True
    """Run adaptive density control at all."""
    start: int = 500
    """First step (global step count) at which to refine."""
    stop: int = 15000
    """No refinement from this step on (statistics stop being gathered too)."""
    every: int = 100
    """Refine every this many steps."""
    threshold_mode: Literal["fixed", "percentile"] = "fixed"
    """'fixed': grow where the mean gradient > grad_threshold; 'percentile': where it is in the top
    `percentile` percent of the non-zero accumulated gradients (STAG4D)."""
    grad_threshold: float = 2e-4
    """Fixed threshold on the mean NDC 2D-mean gradient norm."""
    percentile: float = 2.5
    """Top percentage of non-zero gradients grown in percentile mode (STAG4D: 2.5)."""
    percent_dense: float = 0.01
    """Clone if max scale <= percent_dense x scene extent, else split."""
    split_children: int = 2
    """Gaussians a split one is replaced by."""
    split_scale_divisor: float = 1.6
    """Scales of split children are divided by this."""
    prune_opacity: float = 0.005
    """Prune Gaussians with opacity below this."""
    prune_max_scale: float = 0.0
    """Prune Gaussians with max scale > this x scene extent (0 = off)."""
    prune_min_scale: float = 0.0
    """Prune Gaussians with max scale < this x scene extent (0 = off)."""
    prune_screen_size: float = 0.0
    """Prune Gaussians whose screen radius exceeded this fraction of the image side (0 = off)."""
    reset_every: int = 3000
    """Reset opacities every this many steps (0 = never; STAG4D: never)."""
    reset_value: float = 0.01
    """Opacity after a reset (clamped to at most this)."""
    max_gaussians: int = 0
    """Upper bound on the number of Gaussians (0 = unbounded); growth keeps the largest gradients."""

    def __post_init__(self) -> None:
        check_positive(self, "every", "split_children", "split_scale_divisor")
        check_non_negative(
            self,
            "start",
            "stop",
            "grad_threshold",
            "percent_dense",
            "prune_opacity",
            "prune_max_scale",
            "prune_min_scale",
            "prune_screen_size",
            "reset_every",
            "max_gaussians",
        )
        check_range(self, "percentile", 0.0, 100.0)
        check_range(self, "reset_value", 0.0, 1.0)


class DensifyStrategy:
    """3DGS-style adaptive density control with gsplat's hook names (module docstring)."""

    def __init__(self, config: DensifyConfig = DensifyConfig(), scene_extent: float = 1.0, seed: int = 0):
        if config.every <= 0:
            raise ValueError(f"DensifyConfig.every: expected > 0, got {config.every}")
        if not 0 < config.percentile < 100:
            raise ValueError(f"DensifyConfig.percentile: expected in (0, 100), got {config.percentile}")
        if scene_extent <= 0:
            raise ValueError(f"scene_extent: expected > 0, got {scene_extent}")
        self.config = config
        self.scene_extent = float(scene_extent)
        self.seed = seed

    # -- state ------------------------------------------------------------------------------
    def initial_state(self, model: DensifiableModel) -> dict[str, Any]:
        """Zeroed statistics (N,) on the model's device: 2D-gradient sums, visibility counts, max radii."""
        count, device = model.num_gaussians, model.device
        return {
            "grad2d": torch.zeros(count, device=device),
            "count": torch.zeros(count, device=device),
            "radii": torch.zeros(count, device=device),
        }

    def _reset_stats(self, model: DensifiableModel, state: dict[str, Any]) -> None:
        state.update(self.initial_state(model))

    def loss_terms(self, model: DensifiableModel) -> dict[str, torch.Tensor]:
        """Extra loss terms the strategy asks for (none for this one; see MCMCStrategy)."""
        return {}

    def active(self, step: int) -> bool:
        """Whether statistics are gathered at ``step`` (from one refinement interval before start)."""
        c = self.config
        return c.enabled and c.start - c.every < step < c.stop

    # -- hooks ------------------------------------------------------------------------------
    def step_pre_backward(self, output: RenderOutput, step: int | None = None) -> None:
        """Ask autograd to keep the 2D-mean gradient (only while statistics are gathered)."""
        if (step is None or self.active(step)) and output.means2d.requires_grad:
            output.means2d.retain_grad()

    @torch.no_grad()
    def accumulate(self, state: dict[str, Any], output: RenderOutput, width: int, height: int) -> None:
        """Add one render's 2D-mean gradient norms and visibility (images ``width`` x ``height``) to
        ``state`` on the device (no host sync)."""
        grad = output.means2d_grad()
        if grad is None:
            return
        cams = grad.shape[0]
        # NDC units (x W/2, y H/2), times the camera count since the loss averages over cameras;
        # Python scalars keep this free of host-device copies.
        norms = torch.hypot(grad[..., 0] * (width / 2.0 * cams), grad[..., 1] * (height / 2.0 * cams))  # (C, N)
        visible = output.visible.to(norms.dtype)
        if state["grad2d"].shape[0] != norms.shape[1]:
            raise RuntimeError(
                f"densify state holds {state['grad2d'].shape[0]} Gaussians but the render has {norms.shape[1]}; "
                "call strategy.initial_state(model) after changing the model outside the strategy"
            )
        state["grad2d"] += (norms * visible).sum(0)
        state["count"] += visible.sum(0)
        if self.config.prune_screen_size > 0:
            radius = output.radii.max(-1).values.to(norms.dtype) / float(max(width, height))
            state["radii"] = torch.maximum(state["radii"], radius.max(0).values)

    @torch.no_grad()
    def step_post_backward(
        self,
        model: DensifiableModel,
        optimizers,
        state: dict[str, Any],
        step: int,
        output: RenderOutput,
        width: int,
        height: int,
    ) -> dict[str, int]:
        """Accumulate this step's statistics; refine at the scheduled steps. Returns counts of
        what changed (empty dict on steps without refinement)."""
        c = self.config
        if not self.active(step):
            return {}
        self.accumulate(state, output, width, height)
        stats: dict[str, int] = {}
        if step >= c.start and step % c.every == 0:
            stats = self.refine(model, optimizers, state, step)
        if c.reset_every > 0 and step > 0 and step % c.reset_every == 0:
            ops.reset_opacity(model, optimizers, c.reset_value)
            stats["reset"] = 1
        return stats

    # -- refinement -------------------------------------------------------------------------
    def threshold(self, mean_grad: torch.Tensor) -> torch.Tensor:
        """The growth threshold (a 0-d tensor) for the mean gradients (N,) (config.threshold_mode)."""
        if self.config.threshold_mode == "fixed":
            return torch.as_tensor(self.config.grad_threshold, device=mean_grad.device)
        if self.config.threshold_mode == "percentile":
            nonzero = mean_grad[mean_grad > 0]
            if nonzero.numel() == 0:
                return torch.as_tensor(float("inf"), device=mean_grad.device)
            return torch.quantile(nonzero.float(), 1.0 - self.config.percentile / 100.0)
        raise ValueError(f"DensifyConfig.threshold_mode: {self.config.threshold_mode!r} is not 'fixed' or 'percentile'")

    @torch.no_grad()
    def refine(self, model: DensifiableModel, optimizers, state: dict[str, Any], step: int) -> dict[str, int]:
        """Clone, split and prune from the statistics in ``state`` (reads counts back: a host sync),
        then reset them; returns the counts."""
        c = self.config
        mean_grad = state["grad2d"] / state["count"].clamp_min(1.0)
        grow = mean_grad > self.threshold(mean_grad)
        if c.max_gaussians > 0:
            room = max(c.max_gaussians - model.num_gaussians, 0)
            if int(grow.sum()) > room:
                keep = torch.zeros_like(grow)
                if room:
                    keep[torch.topk(torch.where(grow, mean_grad, -1.0), room).indices] = True
                grow = keep
        max_scale = torch.exp(model.params["log_scales"].data).max(-1).values
        small = max_scale <= c.percent_dense * self.scene_extent
        gen = torch.Generator(device=model.device).manual_seed(self.seed + step)
        cloned = ops.duplicate(model, optimizers, grow & small)
        # The clones were appended at the end: they are not split this round.
        split_mask = torch.cat([grow & ~small, torch.zeros(cloned, dtype=torch.bool, device=grow.device)])
        splitted = ops.split(model, optimizers, split_mask, c.split_children, c.split_scale_divisor, generator=gen)
        # Prune
        opacity = torch.sigmoid(model.params["opacity_logits"].data)
        max_scale = torch.exp(model.params["log_scales"].data).max(-1).values
        prune = opacity < c.prune_opacity
        if c.prune_max_scale > 0:
            prune |= max_scale > c.prune_max_scale * self.scene_extent
        if c.prune_min_scale > 0:
            prune |= max_scale < c.prune_min_scale * self.scene_extent
        if c.prune_screen_size > 0:
            # Screen radii follow the Gaussians through growth: clones copy their parent's, split
            # children start at 0.
            radii = torch.cat([state["radii"], state["radii"][grow & small]])[~split_mask]
            radii = torch.cat([radii, radii.new_zeros(model.num_gaussians - radii.shape[0])])
            prune |= radii > c.prune_screen_size
        if bool(prune.all()):
            # Never delete everything: keep the most opaque Gaussian.
            prune[torch.argmax(opacity)] = False
        pruned = ops.remove(model, optimizers, prune)
        self._reset_stats(model, state)
        return {"cloned": cloned, "split": splitted, "pruned": pruned, "total": model.num_gaussians}

    def state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` as CPU tensors, for a checkpoint."""
        return {k: v.detach().cpu() for k, v in state.items()}

    def load_state(self, saved: dict[str, Any], device) -> dict[str, Any]:
        """The state from :meth:`state_dict`'s output, on ``device``."""
        return {k: v.to(device) for k, v in saved.items()}
