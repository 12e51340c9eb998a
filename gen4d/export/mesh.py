"""An animated mesh of fixed topology baked from a 4D Gaussian model (the glb and mesh-seq exports).

1. **Surface** (canonical time): the opacity-weighted density ``D(x) = sum_i o_i exp(-d_i(x)^2 / 2)``
   of the canonical Gaussians (``d_i``: Mahalanobis distance to Gaussian i) is splatted onto a grid
   (each Gaussian touches only the voxels within ``cutoff`` standard deviations, in chunks of at most
   ``chunk`` voxel-Gaussian pairs), the parts of ``{D > level}`` smaller than ``min_island`` of the
   largest are dropped, and scikit-image's marching cubes extracts the surface ``D = level``. For one
   opaque Gaussian that surface projects to exactly the outline where its render's alpha is ``level``.
2. **Colour**: each vertex takes the density-weighted mean of the Gaussians' degree-0 colour there.
3. **Motion**: at each frame a vertex moves as the weighted mean of its ``neighbours`` nearest
   canonical Gaussians' rigid motion (the field's translation and rotation about the Gaussian's
   centre); weights ``o_i exp(-d_i^2 / 2)``. Scale changes of the Gaussians are not followed, and
   the topology is the canonical one at every time (parts that split or merge over time stretch).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gen4d.config import ConfigError, check_positive, check_range
from gen4d.gaussians.core import Gaussians, quaternion_to_matrix
from gen4d.io import atomic_path

__all__ = [
    "MeshConfig",
    "Mesh",
    "AnimatedMesh",
    "BakeError",
    "density_grid",
    "extract_mesh",
    "bake_mesh",
    "write_mesh_sequence",
]

INSTALL_HINT = "pip install 'gen4d[export]' (scikit-image)"


class BakeError(ValueError):
    """The model cannot be baked into a mesh (no surface, or the field gives non-finite motion)."""


@dataclass(frozen=True)
class MeshConfig:
    """How a mesh is extracted from the canonical Gaussians and animated."""

    resolution: int = 128
    """Grid cells along the longest side of the Gaussians' bounding box."""
    level: float = 0.5
    """Iso-level of the opacity-weighted density (0.5: where one opaque Gaussian renders alpha 0.5)."""
    cutoff: float = 3.0
    """Each Gaussian's density is evaluated out to this many standard deviations."""
    min_island: float = 0.05
    """Connected parts with fewer voxels than this fraction of the largest part are dropped."""
    neighbours: int = 8
    """K: canonical Gaussians whose motion moves each vertex."""
    chunk: int = 1 << 22
    """Voxel-Gaussian pairs evaluated at once (bounds the memory: about 100 bytes each)."""

    def __post_init__(self) -> None:
        if not 8 <= self.resolution <= 1024:
            raise ConfigError("resolution", f"expected 8..1024 cells, got {self.resolution}", "MeshConfig")
        check_range(self, "level", 1e-4, 100.0)
        check_range(self, "cutoff", 1.0, 10.0)
        check_range(self, "min_island", 0.0, 1.0)
        check_positive(self, "neighbours", "chunk")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh (numpy): vertices (V, 3) float32, faces (T, 3) int64 (counter-clockwise seen
    from outside), colors (V, 3) float32 display (sRGB) values in [0, 1]."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


@dataclass(frozen=True)
class AnimatedMesh:
    """One topology, ``positions`` (F, V, 3) float32 at ``times`` (F,) in [0, 1], played at ``fps``."""

    faces: np.ndarray
    colors: np.ndarray
    positions: np.ndarray
    times: np.ndarray
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    def frame(self, index: int) -> Mesh:
        return Mesh(self.positions[index], self.faces, self.colors)

    def normals(self) -> np.ndarray:
        """(F, V, 3) unit vertex normals (area-weighted face normals) of every frame."""
        return vertex_normals(self.positions, self.faces)


def vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(..., V, 3) unit area-weighted vertex normals of ``positions`` (..., V, 3)."""
    points, faces = torch.from_numpy(np.asarray(positions, np.float32)), torch.from_numpy(faces).long()
    corners = points[..., faces, :]  # (..., T, 3, 3)
    face_normals = torch.linalg.cross(corners[..., 1, :] - corners[..., 0, :], corners[..., 2, :] - corners[..., 0, :])
    normals = torch.zeros_like(points)
    for corner in range(3):
        normals.index_add_(-2, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1).numpy()


def write_mesh_sequence(mesh: AnimatedMesh, folder: str | os.PathLike) -> list[Path]:
    """``frame_XXXX.ply`` (binary PLY: vertex x, y, z, nx, ny, nz, red, green, blue; faces) per frame,
    each written atomically; returns the paths."""
    from plyfile import PlyData, PlyElement

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout = [(n, "f4") for n in ("x", "y", "z", "nx", "ny", "nz")] + [(n, "u1") for n in ("red", "green", "blue")]
    faces = np.empty(len(mesh.faces), dtype=[("vertex_indices", "i4", (3,))])
    faces["vertex_indices"] = mesh.faces
    colours = np.rint(np.clip(mesh.colors, 0, 1) * 255).astype(np.uint8)
    paths = []
    for index, (points, normals) in enumerate(zip(mesh.positions, mesh.normals())):
        vertices = np.empty(len(points), dtype=layout)
        for axis, name in enumerate("xyz"):
            vertices[name], vertices[f"n{name}"] = points[:, axis], normals[:, axis]
        for channel, name in enumerate(("red", "green", "blue")):
            vertices[name] = colours[:, channel]
        path = folder / f"frame_{index:04d}.ply"
        with atomic_path(path) as tmp:
            PlyData([PlyElement.describe(vertices, "vertex"), PlyElement.describe(faces, "face")]).write(str(tmp))
        paths.append(path)
    return paths


def _inverse_sqrt_covariance(gaussians: Gaussians) -> torch.Tensor:
    """(N, 3, 3) M with |M (x - mu)| = the Mahalanobis distance."""
    rotations = quaternion_to_matrix(gaussians.quats)
    return rotations.transpose(-1, -2) / torch.exp(gaussians.log_scales)[..., None]


@torch.no_grad()
def density_grid(gaussians: Gaussians, config: MeshConfig = MeshConfig()) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(grid (4, X, Y, Z) = density and density-weighted RGB, origin (3,) = centre of voxel 0, voxel size)
    of canonical Gaussians (N, ...); the grid has a margin of empty voxels on every side."""
    if gaussians.batched:
        raise ValueError("density_grid: expected canonical (unbatched) Gaussians (N, ...)")
    gaussians = gaussians.detach().to("cpu", torch.float32)
    means, opacity = gaussians.means, gaussians.opacities
    radius = config.cutoff * torch.exp(gaussians.log_scales).amax(-1)  # (N,) world units
    low, high = (means - radius[:, None]).amin(0), (means + radius[:, None]).amax(0)
    voxel = float((high - low).max()) / config.resolution
    if not (math.isfinite(voxel) and voxel > 0):
        raise BakeError("the canonical Gaussians span no volume (or are not finite): nothing to mesh")
    margin = 2
    origin = low - margin * voxel
    shape = (((high - low) / voxel).ceil().long() + 2 * margin + 1).tolist()
    grid = torch.zeros(shape[0] * shape[1] * shape[2], 4)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1])
    whiten = _inverse_sqrt_covariance(gaussians)
    values = torch.cat([torch.ones(len(means), 1), gaussians.rgb], dim=1) * opacity[:, None]  # (N, 4)
    centre = ((means - origin) / voxel).round().long()
    reach = (radius / voxel).ceil().long().clamp(1, config.resolution)
    for k in reach.unique().tolist():
        steps = torch.arange(-k, k + 1)
        offsets = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
        members = (reach == k).nonzero().squeeze(1)
        per_chunk = max(1, config.chunk // len(offsets))
        for start in range(0, len(members), per_chunk):
            ids = members[start : start + per_chunk]
            cells = centre[ids, None, :] + offsets  # (C, M, 3)
            delta = origin + cells * voxel - means[ids, None, :]
            mahalanobis = torch.einsum("cij,cmj->cmi", whiten[ids], delta).square().sum(-1)
            inside = (mahalanobis <= config.cutoff**2) & (cells >= 0).all(-1)
            inside &= (cells < torch.tensor(shape)).all(-1)
            weight = torch.exp(-0.5 * mahalanobis[inside])
            owner = ids[:, None].expand_as(mahalanobis)[inside]
            grid.index_add_(0, (cells[inside] * strides).sum(-1), values[owner] * weight[:, None])
    return grid.T.reshape(4, *shape), origin, voxel


def extract_mesh(canonical: Gaussians, config: MeshConfig = MeshConfig()) -> Mesh:
    """The cleaned iso-surface of the canonical Gaussians' density, with vertex colours."""
    try:
        from skimage.measure import label, marching_cubes
    except ImportError as err:
        raise ImportError(f"mesh export needs scikit-image: {INSTALL_HINT}") from err
    grid, origin, voxel = density_grid(canonical, config)
    density = grid[0].numpy()
    solid = density > config.level
    parts = label(solid, connectivity=1)
    sizes = np.bincount(parts.ravel())[1:]
    if sizes.size == 0:
        raise BakeError(
            f"the Gaussians' density never reaches level {config.level} (peak {density.max():.3g}); "
            "lower the iso-level (--level)"
        )
    dropped = np.flatnonzero(sizes < config.min_island * sizes.max()) + 1
    density = np.where(np.isin(parts, dropped), 0.0, density).astype(np.float32)
    # Inside (high density) -> outside: "descent" normals point outwards; skimage's faces are then
    # clockwise seen from outside, so reverse them for glTF's counter-clockwise front faces.
    vertices, faces, _, _ = marching_cubes(density, config.level, gradient_direction="descent", allow_degenerate=False)
    faces = faces[:, ::-1].astype(np.int64)
    colour = _sample(grid[1:] / grid[:1].clamp_min(1e-12), torch.from_numpy(vertices.astype(np.float32)))
    world = origin.numpy() + vertices * voxel
    return Mesh(world.astype(np.float32), np.ascontiguousarray(faces), colour.clamp(0, 1).numpy())


def _sample(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear samples (P, C) of ``volume`` (C, X, Y, Z) at fractional voxel indices ``points`` (P, 3)."""
    size = torch.tensor(volume.shape[1:], dtype=torch.float32)
    normalised = points / (size - 1) * 2 - 1  # grid_sample's last coordinate indexes the first axis
    grid = normalised.flip(-1)[None, None, None]  # (1, 1, 1, P, 3)
    out = torch.nn.functional.grid_sample(volume[None], grid, mode="bilinear", align_corners=True)
    return out[0, :, 0, 0].T


@torch.no_grad()
def _neighbours(canonical: Gaussians, vertices: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(index (V, K), weights (V, K) summing to 1) of the K nearest Gaussians of each vertex."""
    k = min(k, len(canonical))
    whiten = _inverse_sqrt_covariance(canonical)
    index, weights = [], []
    rows = max(1, chunk // max(len(canonical), 1))
    for start in range(0, len(vertices), rows):
        points = vertices[start : start + rows]
        nearest = torch.cdist(points, canonical.means).topk(k, largest=False).indices  # (C, K)
        delta = points[:, None, :] - canonical.means[nearest]
        mahalanobis = torch.einsum("ckij,ckj->cki", whiten[nearest], delta).square().sum(-1)
        # Clamped so that a vertex far from every Gaussian still gets a (flat) blend, never 0 / 0.
        weight = canonical.opacities[nearest].clamp_min(1e-6) * torch.exp(-0.5 * mahalanobis.clamp(max=60.0))
        index.append(nearest)
        weights.append(weight / weight.sum(-1, keepdim=True))
    return torch.cat(index), torch.cat(weights)


@torch.no_grad()
def bake_mesh(
    canonical: Gaussians,
    gaussians_at: Callable[[torch.Tensor], Gaussians],
    times: torch.Tensor,
    fps: float,
    config: MeshConfig = MeshConfig(),
    batch: int = 8,
) -> AnimatedMesh:
    """Extract the canonical mesh and move it to every time of ``times`` (F,) with
    ``gaussians_at(times (B,)) -> Gaussians (B, N, ...)`` (e.g. ``DynamicGaussians.at``)."""
    canonical = canonical.detach().to("cpu", torch.float32)
    mesh = extract_mesh(canonical, config)
    vertices = torch.from_numpy(mesh.vertices)
    index, weights = _neighbours(canonical, vertices, config.neighbours, config.chunk)
    rest = quaternion_to_matrix(canonical.quats)
    offset = vertices[:, None, :] - canonical.means[index]  # (V, K, 3) in the canonical frame
    times = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    frames = []
    for start in range(0, len(times), batch):
        chunk = times[start : start + batch]
        moved = gaussians_at(chunk).detach().to("cpu", torch.float32)
        for i, t in enumerate(chunk.tolist()):
            means, quats = moved.means[i], moved.quats[i]
            if not (torch.isfinite(means).all() and torch.isfinite(quats).all()):
                raise BakeError(f"the deformation field gives non-finite Gaussians at t = {t:.4g}: cannot bake it")
            turn = quaternion_to_matrix(quats)[index] @ rest[index].transpose(-1, -2)  # (V, K, 3, 3)
            targets = means[index] + (turn @ offset[..., None]).squeeze(-1)
            frames.append((weights[..., None] * targets).sum(1))
    positions = torch.stack(frames).numpy()
    if not np.isfinite(positions).all():
        raise BakeError("the baked vertex positions are not finite (degenerate rotations in the field)")
    return AnimatedMesh(mesh.faces, mesh.colors, positions.astype(np.float32), times.numpy(), float(fps))
