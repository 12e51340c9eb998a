"""3DGS-as-MCMC densification (Kheradmand et al. 2024; gsplat's ``MCMCStrategy``), with the
same hooks as :class:`gen4d.densify.DensifyStrategy`.

Every ``every`` steps inside (start, stop):

* **relocate**: "dead" Gaussians (opacity <= ``min_opacity``) are moved onto live ones sampled
  with probability proportional to opacity; a sampled Gaussian and the copies placed on it
  share its opacity and scale so the rendered sum is preserved to first order
  (opacity ``1 - (1 - o)^(1/n)``, scale from the paper's binomial series, eq. 9);
* **add**: grow by ``growth`` (5 %) up to ``cap`` Gaussians the same way.

After every step the positions get noise ``R S S^T R^T eps * lr_means * noise_lr``, gated by
``sigmoid(-100 (o - 0.005))``: nearly transparent Gaussians explore, visible ones stay (SGLD).
The strategy also contributes L1 regularisers on opacities and scales
(:meth:`MCMCStrategy.loss_terms`). The count never exceeds ``cap``: run time and memory are
bounded up front, which suits a time budget.

All copies go through :func:`gen4d.densify.ops.reindex`, so parameters, Adam moments (zeroed on
the touched rows) and the deformation field's per-Gaussian state move together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from gen4d.config import check_non_negative, check_positive, check_range
from gen4d.densify import ops
from gen4d.densify.ops import DensifiableModel
from gen4d.gaussians.core import quaternion_to_matrix
from gen4d.render.types import RenderOutput

__all__ = ["MCMCConfig", "MCMCStrategy", "relocation"]

_MAX_COPIES = 51


@dataclass(frozen=True)
class MCMCConfig:
    """3DGS-MCMC settings (defaults: gsplat's MCMCStrategy and the paper)."""

    type_name: ClassVar[str] = "mcmc"
    cap: int = 300_000
    """Largest number of Gaussians."""
    growth: float = 0.05
    """Fraction added at each refinement (until the cap)."""
    start: int = 500
    """Refine after this step."""
    stop: int = 25_000
    """No refinement from this step on."""
    every: int = 100
    """Refine every this many steps."""
    min_opacity: float = 0.005
    """Gaussians at or below this opacity are relocated."""
    noise_lr: float = 5e5
    """Position noise scale, multiplied by the current position learning rate."""
    opacity_reg: float = 0.01
    """Weight of mean |opacity| in the loss."""
    scale_reg: float = 0.01
    """Weight of mean |scale| in the loss."""

    def __post_init__(self) -> None:
        check_positive(self, "cap", "every")
        check_non_negative(self, "growth", "start", "stop", "noise_lr", "opacity_reg", "scale_reg")
        check_range(self, "min_opacity", 0.0, 1.0)


@torch.no_grad()
def relocation(opacity: torch.Tensor, scales: torch.Tensor, copies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity (K,) and scales (K, 3) for a Gaussian shared by ``copies`` (K,) Gaussians (eq. 9)."""
    n = copies.clamp(1, _MAX_COPIES - 1).to(opacity.dtype)
    new_opacity = 1.0 - (1.0 - opacity).clamp_min(0) ** (1.0 / n)
    # denominator: sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k o_new^(k+1) / sqrt(k+1)
    i = torch.arange(1, _MAX_COPIES, device=opacity.device, dtype=opacity.dtype)  # (I,)
    k = torch.arange(0, _MAX_COPIES - 1, device=opacity.device, dtype=opacity.dtype)  # (Kk,)
    log_binom = torch.lgamma(i[:, None]) - torch.lgamma(k[None] + 1) - torch.lgamma((i[:, None] - k[None]).clamp_min(1))
    valid = (k[None] <= i[:, None] - 1).to(opacity.dtype)  # (I, Kk)
    coeff = torch.exp(log_binom) * valid * ((-1.0) ** k)[None] / torch.sqrt(k + 1)[None]  # (I, Kk)
    powers = new_opacity[:, None] ** (k[None] + 1)  # (K, Kk)
    terms = powers @ coeff.T  # (K, I): inner sums for each i
    upto = (i[None] <= n[:, None]).to(opacity.dtype)
    denominator = (terms * upto).sum(-1)
    new_scales = (opacity / denominator.clamp_min(1e-12))[:, None] * scales
    return new_opacity, new_scales


class MCMCStrategy:
    """3DGS-MCMC (module docstring); the hooks match :class:`gen4d.densify.DensifyStrategy`."""

    def __init__(self, config: MCMCConfig = MCMCConfig(), scene_extent: float = 1.0, seed: int = 0):
        if config.every <= 0 or config.cap <= 0:
            raise ValueError(f"MCMCConfig: every and cap must be > 0, got {config.every}, {config.cap}")
        self.config = config
        self.scene_extent = float(scene_extent)
        self.seed = seed

    def initial_state(self, model: DensifiableModel) -> dict[str, Any]:
        """No statistics: MCMC keeps no per-step state."""
        return {}

    def active(self, step: int) -> bool:
        """Whether ``step`` is inside (start, stop), where relocation and growth may run."""
        return self.config.start < step < self.config.stop

    def step_pre_backward(self, output: RenderOutput, step: int | None = None) -> None:
        """Nothing to keep: MCMC does not use 2D-mean gradients."""

    def loss_terms(self, model: DensifiableModel) -> dict[str, torch.Tensor]:
        """The opacity and scale L1 regularisers, weighted."""
        c = self.config
        terms = {}
        if c.opacity_reg:
            terms["mcmc_opacity"] = c.opacity_reg * torch.sigmoid(model.params["opacity_logits"]).mean()
        if c.scale_reg:
            terms["mcmc_scale"] = c.scale_reg * torch.exp(model.params["log_scales"]).mean()
        return terms

    @torch.no_grad()
    def step_post_backward(
        self,
        model: DensifiableModel,
        optimizers,
        state,
        step: int,
        output: RenderOutput,
        width: int = 0,
        height: int = 0,
    ) -> dict[str, int]:
        """Relocate and grow at the scheduled steps (host syncs there), then add the position noise
        (every step, on the device). ``output``, ``width`` and ``height`` are unused (the hooks'
        shared signature). Returns counts of what changed (empty on steps without refinement)."""
        stats: dict[str, int] = {}
        c = self.config
        if self.active(step) and step % c.every == 0:
            gen = torch.Generator(device=model.device).manual_seed(self.seed + step)
            stats = {"relocated": self.relocate(model, optimizers, gen), "added": self.add(model, optimizers, gen)}
            stats["total"] = model.num_gaussians
        self.inject_noise(model, optimizers, step)
        return stats

    # -- operations -------------------------------------------------------------------------
    def _sample(self, model: DensifiableModel, count: int, candidates: torch.Tensor, gen) -> torch.Tensor:
        opacity = torch.sigmoid(model.params["opacity_logits"].data[candidates])
        return candidates[torch.multinomial(opacity.clamp_min(1e-12), count, replacement=True, generator=gen)]

    def _shared_values(self, model: DensifiableModel, sampled: torch.Tensor, copies_per_source: torch.Tensor):
        opacity = torch.sigmoid(model.params["opacity_logits"].data[sampled])
        scales = torch.exp(model.params["log_scales"].data[sampled])
        new_opacity, new_scales = relocation(opacity, scales, copies_per_source)
        eps = torch.finfo(new_opacity.dtype).eps
        new_opacity = new_opacity.clamp(self.config.min_opacity, 1.0 - eps)
        return torch.logit(new_opacity), torch.log(new_scales.clamp_min(1e-12))

    def relocate(self, model: DensifiableModel, optimizers, gen) -> int:
        """Move the dead Gaussians onto live ones sampled by opacity; returns how many moved."""
        opacity = torch.sigmoid(model.params["opacity_logits"].data)
        dead = torch.nonzero(opacity <= self.config.min_opacity).squeeze(-1)
        alive = torch.nonzero(opacity > self.config.min_opacity).squeeze(-1)
        if dead.numel() == 0 or alive.numel() == 0:
            return 0
        sampled = self._sample(model, dead.numel(), alive, gen)
        counts = torch.bincount(sampled, minlength=model.num_gaussians)[sampled] + 1  # copies incl. the source
        logits, log_scales = self._shared_values(model, sampled, counts)
        index = torch.arange(model.num_gaussians, device=model.device)
        index[dead] = sampled
        overrides = {}
        for name, values in (("opacity_logits", logits), ("log_scales", log_scales)):
            tensor = model.params[name].data[index].clone()
            tensor[sampled] = values
            tensor[dead] = values
            overrides[name] = tensor
        ops.reindex(model, optimizers, index, fresh=torch.cat([sampled, dead]), overrides=overrides)
        return int(dead.numel())

    def add(self, model: DensifiableModel, optimizers, gen) -> int:
        """Grow by ``config.growth`` (up to the cap) with copies of Gaussians sampled by opacity."""
        current = model.num_gaussians
        target = min(self.config.cap, int(math.ceil(current * (1.0 + self.config.growth))))
        count = max(target - current, 0)
        if count == 0:
            return 0
        sampled = self._sample(model, count, torch.arange(current, device=model.device), gen)
        counts = torch.bincount(sampled, minlength=current)[sampled] + 1
        logits, log_scales = self._shared_values(model, sampled, counts)
        index = torch.cat([torch.arange(current, device=model.device), sampled])
        new_rows = torch.arange(current, current + count, device=model.device)
        overrides = {}
        for name, values in (("opacity_logits", logits), ("log_scales", log_scales)):
            tensor = model.params[name].data[index].clone()
            tensor[sampled] = values
            tensor[new_rows] = values
            overrides[name] = tensor
        ops.reindex(model, optimizers, index, fresh=torch.cat([sampled, new_rows]), overrides=overrides)
        return count

    def inject_noise(self, model: DensifiableModel, optimizers, step: int) -> None:
        """SGLD position noise scaled by the current position learning rate, gated by opacity."""
        found = ops.optimizer_param_state(optimizers, model.params["means"])
        if found is None or not self.config.noise_lr:
            return
        lr = found[1]["lr"]
        gen = torch.Generator(device=model.device).manual_seed(self.seed * 7919 + step)
        opacity = torch.sigmoid(model.params["opacity_logits"].data)
        gate = torch.sigmoid(-100.0 * (opacity - 0.005))  # ~1 for nearly transparent, ~0 from opacity ~0.05 up
        rot = quaternion_to_matrix(model.params["quats"].data)
        scales = torch.exp(model.params["log_scales"].data)
        cov = rot @ torch.diag_embed(scales.square()) @ rot.transpose(-1, -2)
        noise = torch.randn(model.params["means"].shape, generator=gen, device=model.device, dtype=opacity.dtype)
        model.params["means"].data += (cov @ noise[..., None]).squeeze(-1) * gate[:, None] * (lr * self.config.noise_lr)

    def state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """Nothing to save."""
        return {}

    def load_state(self, saved: dict[str, Any], device) -> dict[str, Any]:
        """Nothing to restore."""
        return {}
