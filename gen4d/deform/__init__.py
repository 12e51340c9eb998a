"""Deformation fields: (canonical Gaussians, times (B,)) -> Gaussians (B, N, ...) at those times.

* :class:`HexPlaneField` - HexPlane grid + MLP (4DGS / STAG4D), the default;
* :class:`ControlPointField` - sparse control points with K-nearest blending and ARAP (SC-GS).

Pick one with :class:`DeformConfig` and :func:`build_field`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gen4d.deform.base import DeformationField, check_times
from gen4d.deform.control_points import (
    ControlPointConfig,
    ControlPointField,
    farthest_point_sampling,
    quaternion_multiply,
)
from gen4d.deform.hexplane import HexPlaneConfig, HexPlaneField, HexPlaneGrid
from gen4d.deform.rigidity import RigidityConfig, rigidity_terms

__all__ = [
    "DeformConfig",
    "DeformationField",
    "HexPlaneConfig",
    "HexPlaneField",
    "HexPlaneGrid",
    "ControlPointConfig",
    "ControlPointField",
    "RigidityConfig",
    "rigidity_terms",
    "build_field",
    "check_times",
    "farthest_point_sampling",
    "quaternion_multiply",
]


@dataclass(frozen=True)
class DeformConfig:
    """Which deformation field to use and its sizes."""

    kind: Literal["hexplane", "control_points"] = "hexplane"
    """'hexplane' (HexPlane + MLP, 4DGS / STAG4D) or 'control_points' (SC-GS)."""
    hexplane: HexPlaneConfig = field(default_factory=HexPlaneConfig)
    """HexPlane sizes (used when kind = 'hexplane')."""
    control_points: ControlPointConfig = field(default_factory=ControlPointConfig)
    """Control-point sizes (used when kind = 'control_points')."""
    rigidity: RigidityConfig = field(default_factory=RigidityConfig)
    """Local-rigidity regularisers of the motion, for either field (off by default)."""


def build_field(config: DeformConfig) -> DeformationField:
    """A freshly initialised field (identity deformation) for ``config``."""
    if config.kind == "hexplane":
        return HexPlaneField(config.hexplane)
    if config.kind == "control_points":
        return ControlPointField(config.control_points)
    raise ValueError(f"DeformConfig.kind: unknown field {config.kind!r}; expected 'hexplane' or 'control_points'")
