"""``gen4d curate``: Diffusion4D's curation filters over a folder of animated assets."""

from __future__ import annotations

import argparse

NAME = "curate"
HELP = (
    "render every asset under ASSETS_DIR or in --assets LIST (orbit, static orbit, front) as Ray tasks and "
    "apply Diffusion4D's curation filters (front-view SSIM, alpha leaving the frame, motion magnitude); "
    "one JSON line per asset"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.cli import number_type
    from gen4d.commands._batch import add_batch_arguments
    from gen4d.config import add_config_arguments
    from gen4d.data.curation import CurationConfig

    positive = number_type(int, 0, low_open=True)

    parser.add_argument(
        "assets_dir", nargs="?", metavar="ASSETS_DIR", help="folder searched recursively for .glb/.gltf/.fbx/.blend"
    )
    parser.add_argument(
        "--out", required=True, metavar="MANIFEST.jsonl", help="results, one JSON line per asset (resumable)"
    )
    parser.add_argument("--renders", metavar="DIR", help="where the curation renders go (default: <out stem>_renders)")
    parser.add_argument("--size", type=number_type(int, 8), default=128, help="render size in pixels (default 128)")
    parser.add_argument("--samples", type=positive, default=16, help="Cycles samples (default 16)")
    parser.add_argument("--frames", type=number_type(int, 2), default=24, help="T, orbit views and times (default 24)")
    parser.add_argument("--clip", default="", help="clip name or index (default: the first)")
    parser.add_argument(
        "--normalise-over",
        default="first",
        choices=["sampled", "first"],
        help="normalise the asset by its first time (default, as Diffusion4D's script: an asset that moves out of "
        "the unit cube leaves the frame and is rejected) or by every sampled time (its whole path shrunk into view)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="Cycles device")
    parser.add_argument("--seed", type=int, default=0, help="light / sampling seed")
    parser.add_argument("--drop-renders", action="store_true", help="delete each asset's renders after curating it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_batch_arguments(parser)
    add_config_arguments(parser, CurationConfig, CurationConfig())


def run(args: argparse.Namespace) -> int:
    from gen4d.commands._batch import batch_from_args, items_from_args
    from gen4d.config import apply_overrides
    from gen4d.data.blender import RenderConfig
    from gen4d.data.curation import CurationConfig, curate_assets
    from gen4d.errors import UserError

    if (args.assets_dir is None) == (args.assets is None):
        raise UserError("give one ASSETS_DIR or --assets LIST (a text file, one asset a line)")
    batch = batch_from_args(args)
    assets = items_from_args(args) if args.assets is not None else args.assets_dir
    config = apply_overrides(CurationConfig(), args)
    render_config = RenderConfig(
        sets=("orbit", "static_orbit", "front"),
        num_frames=args.frames,
        size=args.size,
        samples=args.samples,
        clip=args.clip,
        normalise_over=args.normalise_over,
        device=args.device,
        seed=args.seed,
    )
    results = curate_assets(
        assets,
        args.out,
        render_config,
        config,
        renders_dir=args.renders,
        batch=batch,
        progress=not args.no_progress,
        keep_renders=not args.drop_renders,
    )
    counts: dict[str, int] = {}
    for record in results.values():
        counts[record["decision"]] = counts.get(record["decision"], 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no assets found"
    print(f"{args.out}: {len(results)} assets ({summary})")
    if counts.get("error"):  # exit status 1: the batch ran, but some assets could not be judged
        print(f"{counts['error']} assets could not be curated (their reasons are in {args.out})")
    return 1 if counts.get("error") else 0
