"""``gen4d animate ASSET --out RUN``: a static mesh or 3DGS PLY -> 4D Gaussians with the static3d
Diffusion4D video model (static orbit -> orbital video -> 4D construction)."""

from __future__ import annotations

import argparse

NAME = "animate"
HELP = "static 3D (.glb/.gltf/.obj/.fbx mesh or 3DGS .ply) -> 4D Gaussians with the static3d video model (--model DIR)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.commands.image import add_route_arguments

    parser.add_argument("asset", help="a mesh (.glb .gltf .obj .fbx; rendered with Blender) or a 3DGS .ply")
    parser.add_argument("--prompt", help="optional text for a video model trained with a text encoder")
    add_route_arguments(parser, "animate")


def run(args: argparse.Namespace) -> int:
    from gen4d.commands.image import report, resolve_route_config
    from gen4d.pipeline.animate import animate

    config = resolve_route_config(args)
    result = animate(
        args.asset, args.out, config, prompt=args.prompt, resume=args.resume, overwrite=args.overwrite,
        stop_after=args.stop_after, progress=not args.no_progress,
    )  # fmt: skip
    report(result, "animate")
    return 0
