"""PLY I/O in the standard 3DGS layout, which common 3DGS viewers open.

Vertex properties, all float32, in this order: ``x y z nx ny nz f_dc_0..2 f_rest_0..R-1
opacity scale_0..2 rot_0..3``; ``f_rest`` is channel-major (all red coefficients of degree >= 1,
then green, then blue), scales are log-scales, opacity a logit and rot a (w, x, y, z) quaternion,
exactly as the reference 3DGS code writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gen4d.gaussians.core import Gaussians
from gen4d.gaussians.sh import degree_from_bases
from gen4d.io import atomic_path

__all__ = ["save_ply", "load_ply"]


def _require_plyfile():
    try:
        import plyfile
    except ImportError as err:  # plyfile is a core dependency; this only fires on a broken install
        raise ImportError("PLY I/O needs plyfile: pip install plyfile") from err
    return plyfile


def save_ply(gaussians: Gaussians, path: str | os.PathLike) -> Path:
    """Write an unbatched Gaussian set to ``path`` (atomically)."""
    plyfile = _require_plyfile()
    gaussians.validate(finite=False)
    if gaussians.batched:
        raise ValueError("save_ply: expected an unbatched set (N, ...); index one set of the batch first")
    g = gaussians.detach().to("cpu", torch.float32)
    count, bases = len(g), g.sh.shape[-2]
    dc = g.sh[:, 0, :].numpy()
    rest = g.sh[:, 1:, :].permute(0, 2, 1).reshape(count, 3 * (bases - 1)).numpy()
    columns = [
        ("x", g.means[:, 0]), ("y", g.means[:, 1]), ("z", g.means[:, 2]),
        ("nx", torch.zeros(count)), ("ny", torch.zeros(count)), ("nz", torch.zeros(count)),
    ]  # fmt: skip
    columns = [(n, v.numpy()) for n, v in columns]
    columns += [(f"f_dc_{i}", dc[:, i]) for i in range(3)]
    columns += [(f"f_rest_{i}", rest[:, i]) for i in range(rest.shape[1])]
    columns += [("opacity", g.opacity_logits.numpy())]
    columns += [(f"scale_{i}", g.log_scales[:, i].numpy()) for i in range(3)]
    columns += [(f"rot_{i}", g.quats[:, i].numpy()) for i in range(4)]
    vertices = np.empty(count, dtype=[(name, "f4") for name, _ in columns])
    for name, values in columns:
        vertices[name] = values
    path = Path(path)
    with atomic_path(path) as tmp:
        plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")]).write(str(tmp))
    return path


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS-layout PLY (any SH degree 0..3)."""
    plyfile = _require_plyfile()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_ply: no such file {path}")
    try:
        vertex = plyfile.PlyData.read(str(path))["vertex"]
    except Exception as err:
        raise ValueError(f"load_ply: {path} is not a readable PLY with a 'vertex' element ({err})") from err
    names = set(vertex.data.dtype.names)
    required = (
        ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
        + [f"scale_{i}" for i in range(3)]
        + [f"rot_{i}" for i in range(4)]
    )
    missing = [n for n in required if n not in names]
    if missing:
        raise ValueError(f"load_ply: {path} lacks 3DGS properties {missing}")
    col = lambda n: torch.from_numpy(np.asarray(vertex[n], dtype=np.float32).copy())  # noqa: E731
    rest_names = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n.split("_")[-1]))
    bases = 1 + len(rest_names) // 3
    degree_from_bases(bases)
    count = len(vertex.data)
    sh = torch.zeros(count, bases, 3)
    sh[:, 0, :] = torch.stack([col(f"f_dc_{i}") for i in range(3)], -1)
    if rest_names:
        rest = torch.stack([col(n) for n in rest_names], -1).reshape(count, 3, bases - 1)
        sh[:, 1:, :] = rest.permute(0, 2, 1)
    return Gaussians(
        means=torch.stack([col("x"), col("y"), col("z")], -1),
        log_scales=torch.stack([col(f"scale_{i}") for i in range(3)], -1),
        quats=torch.stack([col(f"rot_{i}") for i in range(4)], -1),
        opacity_logits=col("opacity"),
        sh=sh,
    ).validate(finite=False)
