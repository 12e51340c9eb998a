"""``gen4d export``: a run's 4D asset as a compact ``.splat4d`` file, a self-contained web player
(``.html``) or a per-frame PLY sequence."""

from __future__ import annotations

import argparse

NAME = "export"
HELP = (
    "export a run's 4D Gaussians: --format splat4d (one compact file), html (a web player with the asset "
    "inside) or ply (one 3DGS PLY per frame)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.cli import number_type

    parser.add_argument("run", help="a gen4d run folder (with RUN/checkpoint)")
    parser.add_argument(
        "--format", choices=("splat4d", "html", "ply"), default="splat4d", help="what to write (default splat4d)"
    )
    parser.add_argument("--out", required=True, help="splat4d, html: the file to write; ply: a new or empty folder")
    parser.add_argument(
        "--frames",
        type=number_type(int, 0, 10000),
        default=0,
        help="frames over t in [0, 1] (0 = as many as the run's PLY sequence, else 24)",
    )
    parser.add_argument("--fps", type=number_type(float, 0, 240, low_open=True), default=24.0, help="playback rate")


def frame_count(run_dir, frames: int = 0) -> int:
    """``frames``, else as many frames as the run's PLY sequence, else 24."""
    from pathlib import Path

    return frames or len(list((Path(run_dir) / "ply").glob("frame_*.ply"))) or 24


def check_output_file(out, is_ours, what: str) -> None:
    """UserError unless ``out`` can take a new file: it is missing or a file gen4d wrote
    (``is_ours(out)``), and no part of its folder path is a file or unwritable."""
    import os

    from gen4d.errors import UserError

    if out.is_dir() or (out.exists() and not is_ours(out)):
        raise UserError(f"--out {out}: exists and is not {what}; gen4d will not overwrite it: choose another path")
    folder = next((p for p in out.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise UserError(f"--out {out}: {folder} is a file, not a folder; choose another path")
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {folder} is not writable; choose a location you can write to")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gen4d.errors import UserError
    from gen4d.export.ply_sequence import frame_times, write_ply_sequence
    from gen4d.export.splat4d import encode_splat4d, is_splat4d, write_splat4d
    from gen4d.export.web_player import is_player_html, write_player_html
    from gen4d.recon.checkpoint import find_checkpoint, load_run

    run_dir, out = Path(args.run), Path(args.out)
    if find_checkpoint(run_dir) is None:
        raise UserError(
            f"{run_dir}: no checkpoint (RUN/checkpoint/model.safetensors); pass a finished gen4d run folder"
        )
    if args.format == "splat4d":
        check_output_file(out, is_splat4d, "a .splat4d file")
    elif args.format == "html":
        check_output_file(out, is_player_html, "a gen4d player page")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out {out}: exists and is not an empty folder; pass a new or empty folder for the PLY frames"
        )
    frames = frame_count(run_dir, args.frames)
    model = load_run(run_dir)
    times = frame_times(frames)
    if args.format == "splat4d":
        path = write_splat4d(model.at(times), out, fps=args.fps)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, {model.num_gaussians} Gaussians, {frames} frames)")
    elif args.format == "html":
        path = write_player_html(
            encode_splat4d(model.at(times), fps=args.fps), out, f"{run_dir.resolve().name}.splat4d"
        )
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB web player, {model.num_gaussians} Gaussians, "
              f"{frames} frames); open it in a browser")  # fmt: skip
    else:
        paths = write_ply_sequence(model.at, times, out)
        print(f"wrote {len(paths)} PLY frames to {out}")
    return 0
