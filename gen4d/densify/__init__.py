"""Densification and pruning strategies with topology hooks that resize per-Gaussian state
(parameters, optimiser moments, deformation-field caches) in lockstep."""

from gen4d.densify.ops import duplicate, reindex, remove, reset_opacity, split
from gen4d.densify.strategy import DensifyConfig, DensifyStrategy

__all__ = ["DensifyConfig", "DensifyStrategy", "duplicate", "split", "remove", "reindex", "reset_opacity"]
