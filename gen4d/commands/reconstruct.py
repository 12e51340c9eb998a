"""``gen4d reconstruct DATA --out RUN``: 4D construction from posed, timed images."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "reconstruct"
HELP = "4D construction: optimise 4D Gaussians (canonical + deformation) to a multi-view video dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.recon.construct import DEFAULT_PRESET, PRESETS, ConstructConfig

    parser.add_argument("data", help="dataset: a gen4d render folder (manifest.json) or a Diffusion4D folder")
    parser.add_argument(
        "--out", required=True, help="run directory (config, checkpoint, ply, videos, renders, metrics)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help=f"settings to start from (default: {DEFAULT_PRESET} on a CUDA GPU, demo on a CPU; with --resume: the "
             "run's stored config)",
    )  # fmt: skip
    parser.add_argument("--config", default=None, help="a config.json to start from (e.g. another run's)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint with RUN/config.json")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run in --out (deletes only the files gen4d wrote there)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    add_config_arguments(parser, ConstructConfig, PRESETS[DEFAULT_PRESET])


def resolve_config(args: argparse.Namespace):
    """Preset / stored / given config, then the --a.b overrides."""
    from gen4d.config import apply_overrides, load_config
    from gen4d.recon.construct import ConstructConfig, preset
    from gen4d.run import is_run

    stored = Path(args.out) / "config.json"
    if args.config:
        base = load_config(ConstructConfig, args.config)
    elif args.resume and args.preset is None and is_run(args.out) and stored.is_file():
        base = load_config(ConstructConfig, stored)
    else:
        base = preset(args.preset or default_preset_name(args))
    return apply_overrides(base, args)


def cpu_minutes(config) -> float:
    """A rough wall time in minutes of ``config`` on a small CPU (2 cores, torch reference
    rasteriser): about 0.1 s per rendered 96 px image per step, growing with the pixel count."""
    side = config.size or 128  # 0 = as stored; gen4d's default data is 128 px
    coarse, fine = config.coarse, config.fine
    images = coarse.iterations * coarse.cameras_per_step + fine.iterations * fine.cameras_per_step
    return images * 0.1 * (side / 96) ** 2 / 60


def default_preset_name(args: argparse.Namespace) -> str:
    """The preset when none is given: the GPU preset on CUDA; on a CPU the CPU-sized 'demo' preset
    (the GPU preset would take about 40 minutes there), with a note saying so."""
    import torch

    from gen4d.recon.construct import DEFAULT_PRESET, PRESETS

    device = getattr(args, "cfg:device", None) or "auto"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return DEFAULT_PRESET
    demo, gpu = PRESETS["demo"], PRESETS[DEFAULT_PRESET]
    print(
        f"gen4d reconstruct: no CUDA GPU, so preset 'demo' ({demo.total_iterations} steps at {demo.size} px, "
        f"roughly {cpu_minutes(demo):.0f} min on 2 cores); the GPU preset '{DEFAULT_PRESET}' "
        f"({gpu.total_iterations} steps, roughly {cpu_minutes(gpu):.0f} min here) runs with "
        f"--preset {DEFAULT_PRESET}"
    )
    return "demo"


def run(args: argparse.Namespace) -> int:
    from gen4d.recon.construct import reconstruct

    config = resolve_config(args)
    out = Path(args.out)
    metrics = reconstruct(
        args.data, config, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(f"run: {out}")
    print(f"  metrics: {out / 'metrics.json'}")
    if config.output.video:
        print(f"  video:   {out / 'videos' / 'orbit.mp4'} (and orbit.gif)")
    if config.output.ply:
        print(f"  frames:  {out / 'ply'} (view with: gen4d view {out})")
    for split, values in metrics["splits"].items():
        lp = f" LPIPS {values['lpips']:.3f}" if values.get("lpips") is not None else ""
        print(f"  {split:>6}: PSNR {values['psnr']:.2f} SSIM {values['ssim']:.3f}{lp} ({values['images']} images)")
    return 0
