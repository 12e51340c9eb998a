"""``gen4d text "PROMPT" --out RUN``: a prompt -> 4D Gaussians (STAG4D route: SDXL image, SVD video,
matting, STAG4D; or the Diffusion4D route with a trained text video model)."""

from __future__ import annotations

import argparse

NAME = "text"
HELP = "text -> 4D Gaussians: SDXL + Stable Video Diffusion + matting + STAG4D (default), or --route diffusion4d --model DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.commands.image import add_route_arguments

    parser.add_argument("prompt", help="the object to make, e.g. \"a corgi running\" (a suffix asking for one whole "
                        "object on a white background is added: --text_to_image.prompt_suffix)")  # fmt: skip
    add_route_arguments(parser, "text")


def run(args: argparse.Namespace) -> int:
    from gen4d.commands.image import report, resolve_route_config
    from gen4d.pipeline.routes import check_prompt, run_route

    prompt = check_prompt(args.prompt)  # before any folder is made
    config = resolve_route_config(args)
    result = run_route(
        "text", prompt, args.out, config, resume=args.resume, overwrite=args.overwrite,
        stop_after=args.stop_after, progress=not args.no_progress,
    )  # fmt: skip
    report(result, "text")
    return 0
