"""Canonical 3D Gaussians, spherical harmonics, PLY I/O (deformation fields live in gen4d.deform)."""

from gen4d.gaussians.core import Gaussians, from_points, quaternion_to_matrix, random_in_sphere
from gen4d.gaussians.ply import load_ply, save_ply

__all__ = ["Gaussians", "from_points", "random_in_sphere", "quaternion_to_matrix", "load_ply", "save_ply"]
