"""``gen4d image IMAGE --out RUN``: one image -> 4D Gaussians (STAG4D route: SVD video, matting,
STAG4D; or the Diffusion4D route with a trained video model). Also the options shared with
``gen4d text`` and ``gen4d animate``."""

from __future__ import annotations

import argparse

NAME = "image"
HELP = "image -> 4D Gaussians: Stable Video Diffusion + matting + STAG4D (default), or --route diffusion4d --model DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the input image (one object; RGBA with a transparent background preferred)")
    add_route_arguments(parser, "image")


def add_route_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """--out, presets, resume / overwrite / stop-after, and every RouteConfig field as --a.b."""
    from gen4d.cli import number_type
    from gen4d.config import add_config_arguments
    from gen4d.pipeline.config import RouteConfig, route_config
    from gen4d.recon.presets import PRESETS as CONSTRUCT_PRESETS
    from gen4d.recon.stag4d import PRESETS as STAG4D_PRESETS

    stages = {
        "image": "image, video, matting, stag4d (STAG4D route) or image, orbit, construct (diffusion4d route)",
        "text": "image, video, matting, stag4d (STAG4D route) or orbit, construct (diffusion4d route)",
        "animate": "static, orbit, construct",
    }[kind]
    parser.add_argument("--out", required=True, help="run folder (every stage's outputs; see docs)")
    if kind != "animate":
        parser.add_argument(
            "--stag4d-preset", choices=sorted(STAG4D_PRESETS), default=None,
            help="settings of the STAG4D stage (default: stag4d, the published ones; 'fast' is ours)",
        )  # fmt: skip
    parser.add_argument(
        "--construct-preset", choices=sorted(CONSTRUCT_PRESETS), default=None,
        help="settings of the 4D construction stage (diffusion4d route / animate; default: 'default' on CUDA, 'demo' on a CPU)",
    )  # fmt: skip
    parser.add_argument("--config", help="a config.json of an earlier run to start from")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished stage")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in --out (deletes only what gen4d wrote)"
    )
    parser.add_argument(
        "--stop-after", metavar="STAGE", help=f"stop after this stage ({stages}); continue with --resume"
    )
    parser.add_argument(
        "--motion",
        type=number_type(float, 0.0),
        help="motion magnitude m of the Diffusion4D video model (--sample.motion)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser, RouteConfig, route_config())


def resolve_route_config(args: argparse.Namespace):
    """Preset / stored / given config, then --motion and the --a.b overrides."""
    from pathlib import Path

    import torch

    from gen4d.config import apply_overrides, load_config, set_fields
    from gen4d.pipeline.config import RouteConfig, route_config
    from gen4d.run import is_run

    stored = Path(args.out) / "config.json"
    presets = (getattr(args, "stag4d_preset", None), args.construct_preset)
    if args.config:
        base = load_config(RouteConfig, args.config)
    elif args.resume and presets == (None, None) and is_run(args.out) and stored.is_file():
        base = load_config(RouteConfig, stored)
    else:
        device = getattr(args, "cfg:device", None) or "auto"
        gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        base = route_config(presets[0] or "stag4d", presets[1] or ("default" if gpu else "demo"))
    config = apply_overrides(base, args)
    if args.motion is not None:
        config = set_fields(config, {"sample.motion": args.motion})
    return config


def report(result: dict, kind: str) -> None:
    from pathlib import Path

    run = Path(result["run"])
    done = ", ".join(f"{name} {record.get('seconds', 0):.1f} s" for name, record in result["stages"].items())
    if not result["finished"]:
        print(f"stopped: {done}; inspect {run}, then continue with: gen4d {kind} ... --out {run} --resume")
        return
    final = "stag4d" if (run / "stag4d" / "metrics.json").is_file() else "construct"
    print(f"done ({done}) -> {run / final} (videos/, ply/; view with: gen4d view {run / final})")


def run(args: argparse.Namespace) -> int:
    from gen4d.pipeline.routes import run_route

    config = resolve_route_config(args)
    result = run_route(
        "image", args.image, args.out, config, resume=args.resume, overwrite=args.overwrite,
        stop_after=args.stop_after, progress=not args.no_progress,
    )  # fmt: skip
    report(result, "image")
    return 0
