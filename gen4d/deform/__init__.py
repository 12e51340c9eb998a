"""Deformation fields: (canonical Gaussians, times (B,)) -> Gaussians (B, N, ...) at those times.

* :class:`HexPlaneField` - HexPlane grid + MLP (4DGS / STAG4D), the default;
* :class:`ControlPointField` - sparse control points with K-nearest blending and ARAP (SC-GS);
* :class:`MotionBasesField` - a few rigid motions per time blended by distance (Shape of Motion's
  motion bases).

Pick one with :class:`DeformConfig` and :func:`build_field`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gen4d.deform.base import DeformationField, check_times
from gen4d.deform.control_points import (
    ControlPointConfig,
    ControlPointField,
    farthest_point_sampling,
    quaternion_multiply,
)
from gen4d.deform.hexplane import HexPlaneConfig, HexPlaneField, HexPlaneGrid
from gen4d.deform.motion_bases import MotionBasesConfig, MotionBasesField
from gen4d.deform.rigidity import RigidityConfig, rigidity_anchors, rigidity_terms

__all__ = [
    "DeformConfig",
    "DeformationField",
    "HexPlaneConfig",
    "HexPlaneField",
    "HexPlaneGrid",
    "ControlPointConfig",
    "ControlPointField",
    "MotionBasesConfig",
    "MotionBasesField",
    "RigidityConfig",
    "rigidity_anchors",
    "rigidity_terms",
    "build_field",
    "check_times",
    "farthest_point_sampling",
    "quaternion_multiply",
]


@dataclass(frozen=True)
class DeformConfig:
    """Which deformation field to use, its sizes, and the rigidity regularisers."""

    field: HexPlaneConfig | ControlPointConfig | MotionBasesConfig = dataclasses.field(default_factory=HexPlaneConfig)
    """The field, chosen by its config's class: 'hexplane' (HexPlaneConfig), 'control_points'
    (ControlPointConfig) or 'motion_bases' (MotionBasesConfig)."""
    rigidity: RigidityConfig = dataclasses.field(default_factory=RigidityConfig)
    """Local-rigidity regularisers of the motion, for either field (off by default)."""

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """The stored layout of gen4d before typed unions (``kind`` beside both sub-configs) read as
        the current one (``field: {"type": kind, ...}``); current dicts pass unchanged."""
        if "field" in data or not {"kind", "hexplane", "control_points"} & set(data):
            return data
        kind = data.pop("kind", "hexplane")
        hexplane, control_points = data.pop("hexplane", {}), data.pop("control_points", {})
        chosen = {"hexplane": hexplane, "control_points": control_points}.get(kind, {})
        return {"field": {"type": kind, **chosen} if isinstance(chosen, dict) else chosen, **data}


def build_field(config: DeformConfig) -> DeformationField:
    """A freshly initialised field (identity deformation) for ``config``."""
    if isinstance(config.field, HexPlaneConfig):
        return HexPlaneField(config.field)
    if isinstance(config.field, ControlPointConfig):
        return ControlPointField(config.field)
    if isinstance(config.field, MotionBasesConfig):
        return MotionBasesField(config.field)
    raise TypeError(
        f"DeformConfig.field: expected a HexPlaneConfig, ControlPointConfig or MotionBasesConfig, got {config.field!r}"
    )
