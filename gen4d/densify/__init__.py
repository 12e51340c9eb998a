"""Densification and pruning strategies with topology hooks that resize per-Gaussian state
(parameters, optimiser moments, deformation-field caches) in lockstep.

* :class:`DensifyStrategy` - 3DGS adaptive density control (gsplat DefaultStrategy; fixed or
  percentile gradient threshold);
* :class:`MCMCStrategy` - 3DGS-as-MCMC relocation / growth to a fixed cap (gsplat MCMCStrategy).
"""

from gen4d.densify.mcmc import MCMCConfig, MCMCStrategy, relocation
from gen4d.densify.ops import duplicate, reindex, remove, reset_opacity, split
from gen4d.densify.strategy import DensifyConfig, DensifyStrategy

__all__ = [
    "DensifyConfig",
    "DensifyStrategy",
    "MCMCConfig",
    "MCMCStrategy",
    "build_strategy",
    "relocation",
    "duplicate",
    "split",
    "remove",
    "reindex",
    "reset_opacity",
]


def build_strategy(kind: str, densify: DensifyConfig, mcmc: MCMCConfig, scene_extent: float = 1.0, seed: int = 0):
    """The strategy named ``kind`` ('default' or 'mcmc') with its config."""
    if kind == "default":
        return DensifyStrategy(densify, scene_extent=scene_extent, seed=seed)
    if kind == "mcmc":
        return MCMCStrategy(mcmc, scene_extent=scene_extent, seed=seed)
    raise ValueError(f"unknown densification strategy {kind!r}; expected 'default' or 'mcmc'")
