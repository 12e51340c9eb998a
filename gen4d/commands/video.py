"""``gen4d video INPUT --out RUN``: video -> 4D Gaussians with STAG4D (see gen4d.recon.stag4d)."""

from __future__ import annotations

import argparse

NAME = "video"
HELP = "video (frames, mp4/gif/webm, or a dataset's front video) -> 4D Gaussians with STAG4D"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.recon.stag4d import PRESETS, Stag4DConfig

    parser.add_argument(
        "input", help="folder of 0_rgba.png, 1_rgba.png, ... / RGB frames, a video file, or a gen4d dataset folder"
    )
    parser.add_argument("--out", required=True, help="run folder (outputs, checkpoint, cached multi-views)")
    parser.add_argument(
        "--preset", default="stag4d", choices=sorted(PRESETS), help="'stag4d' (published settings) or 'fast' (ours)"
    )
    parser.add_argument(
        "--multiview",
        default="zero123pp",
        help="anchored views: 'zero123pp' (generate, cached in RUN/multiview), 'oracle:DIR' (ground-truth zero123pp "
        "renders of dataset DIR; INPUT must be that dataset) or 'none'",
    )
    parser.add_argument("--config", help="a config.json of an earlier run to start from (instead of the preset)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint (same settings)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier video run in --out (deletes only the files gen4d wrote there)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser, Stag4DConfig, PRESETS["stag4d"])


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gen4d.config import apply_overrides, load_config
    from gen4d.recon.stag4d import Stag4DConfig, preset, run_video_to_4d

    config = load_config(Stag4DConfig, args.config) if args.config else preset(args.preset)
    config = apply_overrides(config, args)
    if not Path(args.input).exists():
        raise FileNotFoundError(f"no such input: {args.input}")
    result = run_video_to_4d(
        args.input,
        args.out,
        config,
        args.multiview,
        resume=args.resume,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    line = f"done: {result['num_gaussians']} Gaussians in {result['wall_time_s']:.1f} s -> {args.out}"
    if "eval" in result:
        line += f"; held-out PSNR {result['eval']['psnr']:.2f} SSIM {result['eval']['ssim']:.3f}"
    print(line)
    return 0
