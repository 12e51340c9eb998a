"""``gen4d export``: a run's 4D asset as a compact ``.splat4d`` file, a self-contained web player
(``.html``), a per-frame PLY sequence, an animated glTF mesh (``.glb``) or a per-frame mesh sequence."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

NAME = "export"
HELP = (
    "export a run's 4D asset: --format splat4d (one compact file), html (a web player with the asset inside), "
    "ply (one 3DGS PLY per frame), glb (an animated mesh with morph targets) or mesh-seq (one mesh PLY per frame)"
)
FOLDER_FORMATS = ("ply", "mesh-seq")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.cli import number_type
    from gen4d.config import add_config_arguments
    from gen4d.export.mesh import MeshConfig

    parser.add_argument("run", help="a gen4d run folder (with RUN/checkpoint)")
    parser.add_argument(
        "--format",
        choices=("splat4d", "html", "ply", "glb", "mesh-seq"),
        default="splat4d",
        help="what to write (default splat4d)",
    )
    parser.add_argument(
        "--out", required=True, help="splat4d, html, glb: the file to write; ply, mesh-seq: a new or empty folder"
    )
    parser.add_argument(
        "--frames",
        type=number_type(int, 0, 10000),
        default=0,
        help="frames over t in [0, 1] (0 = as many as the run's PLY sequence, else 24)",
    )
    parser.add_argument("--fps", type=number_type(float, 0, 240, low_open=True), default=24.0, help="playback rate")
    add_config_arguments(parser, MeshConfig, MeshConfig())


def check_out(out: Path, kind: str) -> None:
    """UserError unless ``out`` may be written: a new file or one gen4d wrote before (``is_own``
    for file formats), or a new or empty folder; its nearest existing parent must be writable."""
    from gen4d.errors import UserError
    from gen4d.export.gltf import is_glb
    from gen4d.export.splat4d import is_splat4d
    from gen4d.export.web_player import is_player_html

    if kind in FOLDER_FORMATS:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(
                f"--out {out}: exists and is not an empty folder; pass a new or empty folder for the frames"
            )
    elif out.is_dir() or (
        out.exists() and not {"splat4d": is_splat4d, "glb": is_glb, "html": is_player_html}[kind](out)
    ):
        what = "a gen4d player page" if kind == "html" else f"a .{kind} file"
        raise UserError(f"--out {out}: exists and is not {what}; gen4d will not overwrite it: choose another path")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() and existing != out):
        raise UserError(f"--out {out}: {existing} is a file, not a folder; pass a path you can write to")
    folder = existing if existing is None or existing.is_dir() else existing.parent
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {folder} is not writable; pass a location you can write to")


def frame_count(run_dir: Path, frames: int = 0) -> int:
    """``frames``, else as many frames as the run's PLY sequence, else 24."""
    return frames or len(list((Path(run_dir) / "ply").glob("frame_*.ply"))) or 24


def export_mesh(model, times, fps: float, config, out: Path, kind: str, run_dir: Path) -> Path:
    """Bake ``model`` (a DynamicGaussians) at ``times`` into a mesh and write it as ``kind`` (glb or
    mesh-seq) to ``out``; a field that cannot be baked is a UserError naming ``run_dir``."""
    from gen4d.errors import UserError
    from gen4d.export.gltf import write_glb
    from gen4d.export.mesh import BakeError, bake_mesh, write_mesh_sequence

    try:
        mesh = bake_mesh(model.canonical(), model.at, times, fps, config)
    except BakeError as err:
        raise UserError(f"{run_dir}: {err}") from None
    counts = f"{mesh.positions.shape[1]} vertices, {len(mesh.faces)} triangles, {mesh.num_frames} frames"
    if kind == "glb":
        path = write_glb(mesh, out)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {counts})")
        return path
    write_mesh_sequence(mesh, out)
    print(f"wrote {mesh.num_frames} mesh frames to {out} ({counts})")
    return out


def run(args: argparse.Namespace) -> int:
    from gen4d.config import apply_overrides
    from gen4d.errors import UserError
    from gen4d.export.mesh import MeshConfig
    from gen4d.export.ply_sequence import frame_times, write_ply_sequence
    from gen4d.export.splat4d import encode_splat4d, write_splat4d
    from gen4d.export.web_player import write_player_html
    from gen4d.recon.checkpoint import find_checkpoint, load_run

    run_dir, out = Path(args.run), Path(args.out)
    if find_checkpoint(run_dir) is None:
        raise UserError(
            f"{run_dir}: no checkpoint (RUN/checkpoint/model.safetensors); pass a finished gen4d run folder"
        )
    check_out(out, args.format)
    mesh_config = apply_overrides(MeshConfig(), args)
    frames = frame_count(run_dir, args.frames)
    model = load_run(run_dir)
    times = frame_times(frames)
    if args.format == "splat4d":
        path = write_splat4d(model.at(times), out, fps=args.fps)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {model.num_gaussians} Gaussians, {frames} frames)")
    elif args.format == "html":
        name = f"{run_dir.resolve().name}.splat4d"
        path = write_player_html(encode_splat4d(model.at(times), fps=args.fps), out, name)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB web player, {model.num_gaussians} Gaussians, "
              f"{frames} frames); open it in a browser")  # fmt: skip
    elif args.format == "ply":
        paths = write_ply_sequence(model.at, times, out)
        print(f"wrote {len(paths)} PLY frames to {out}")
    else:
        export_mesh(model, times, args.fps, mesh_config, out, args.format, run_dir)
    return 0
