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


def build_strategy(
    config: DensifyConfig | MCMCConfig, scene_extent: float = 1.0, seed: int = 0
) -> DensifyStrategy | MCMCStrategy:
    """The strategy that ``config``'s class selects."""
    if isinstance(config, DensifyConfig):
        return DensifyStrategy(config, scene_extent=scene_extent, seed=seed)
    if isinstance(config, MCMCConfig):
        return MCMCStrategy(config, scene_extent=scene_extent, seed=seed)
    raise TypeError(f"build_strategy: expected a DensifyConfig or MCMCConfig, got {type(config).__name__}")
