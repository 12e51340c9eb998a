"""``gen4d view``: the interactive viewer (browser) for a run's per-frame Gaussians."""

from __future__ import annotations

import argparse

NAME = "view"
HELP = (
    "view a run's 4D Gaussians in the browser with a time slider (a run: frames computed on demand from its "
    "checkpoint; a PLY folder or one PLY: those frames)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.cli import number_type

    parser.add_argument("path", help="a gen4d run folder, a folder of .ply files, or one .ply")
    parser.add_argument(
        "--ply", action="store_true", help="for a run folder: show its RUN/ply frames instead of the model"
    )
    parser.add_argument(
        "--port",
        type=number_type(int, 1, 65535),
        default=8080,
        help="port of the local web viewer (default 8080; the next free one when it is taken)",
    )
    parser.add_argument(
        "--fps", type=number_type(float, 0, 120, low_open=True), default=12.0, help="playback frames per second"
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gen4d.gaussians import load_ply
    from gen4d.recon.checkpoint import find_checkpoint, load_run
    from gen4d.viewer import find_ply_sequence, model_frames, serve, serve_model, splat_arrays

    if not args.ply and find_checkpoint(args.path) is not None:
        # Any time in [0, 1], computed from the canonical Gaussians and the field when the slider asks.
        serve_model(model_frames(load_run(args.path)), port=args.port, fps=args.fps)
        return 0
    files = find_ply_sequence(args.path)
    frames = [splat_arrays(load_ply(f)) for f in tqdm(files, desc="loading PLY frames", unit="frame")]
    serve(frames, port=args.port, fps=args.fps)  # prints the URL with the port actually served
    return 0
