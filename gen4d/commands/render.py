"""``gen4d render``: ground-truth multi-view videos of an animated asset with Blender."""

from __future__ import annotations

import argparse

NAME = "render"
HELP = (
    "render an animated asset (.glb/.gltf/.fbx/.obj/.blend or procedural:SEED) with Blender into a gen4d "
    "dataset folder (RGBA PNGs + manifest.json): orbit, static_orbit, front, zero123pp, eval sets; "
    "--assets LIST renders many as Ray tasks into OUT/<asset id>/ with a resumable results file"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.commands._batch import add_batch_arguments
    from gen4d.config import add_config_arguments
    from gen4d.data.blender import PRESETS, RenderConfig

    parser.add_argument(
        "asset", nargs="?", help="asset file (.glb, .gltf, .fbx, .obj, .blend) or procedural:SEED[:key=value,...]"
    )
    parser.add_argument(
        "--out",
        help="output folder (PNGs + manifest.json; with --assets, one folder per asset); rerun to resume",
    )
    parser.add_argument(
        "--results", metavar="FILE", help="with --assets: the results file (default: OUT/results.jsonl)"
    )
    parser.add_argument(
        "--preset",
        default="diffusion4d",
        choices=sorted(PRESETS),
        help="base settings, overridden by the options below (default: diffusion4d)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a render of another asset / other settings in --out"
    )
    parser.add_argument("--list-clips", action="store_true", help="print the asset's animation clips and exit")
    parser.add_argument("--save-glb", metavar="PATH", help="procedural assets: also save the creature as a .glb file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_batch_arguments(parser)
    add_config_arguments(parser, RenderConfig, PRESETS["diffusion4d"])


def run(args: argparse.Namespace) -> int:
    from gen4d.config import apply_overrides
    from gen4d.data.blender import PRESETS, check_asset, inspect_asset, render_asset
    from gen4d.errors import UserError

    if (args.asset is None) == (args.assets is None):
        raise UserError("give one ASSET or --assets LIST (a text file, one asset a line)")
    if args.assets is not None:
        return _run_batch(args)
    asset = check_asset(args.asset)
    if args.list_clips:
        info = inspect_asset(asset)
        clips = info["clips"]
        print(f"{info['asset']['name']}: {len(clips)} clip(s)" + (" (no animation)" if not clips else ""))
        for i, clip in enumerate(clips):
            print(f"  {i}: {clip}" + ("  (default)" if i == 0 else ""))
        return 0
    if args.save_glb:
        from gen4d.data.procedural import is_procedural

        if not is_procedural(asset):
            raise UserError("--save-glb is for procedural:SEED assets")
        from gen4d.data.blender import export_procedural_glb

        print(f"saved {export_procedural_glb(asset, args.save_glb)}")
        if not args.out:
            return 0
    if not args.out:
        raise UserError("--out DIR is required (where the PNGs and manifest.json go)")
    config = apply_overrides(PRESETS[args.preset], args)
    manifest = render_asset(asset, args.out, config, overwrite=args.overwrite, progress=not args.no_progress)
    from gen4d.io import read_json

    data = read_json(manifest)
    counts: dict[str, int] = {}
    for image in data["images"]:
        counts[image["split"]] = counts.get(image["split"], 0) + 1
    clip = data.get("clip", {})
    sets = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(
        f"{manifest}: {len(data['images'])} images ({sets}) of {data['name']}, clip {clip.get('name')!r}, "
        f"{data['width']}x{data['height']}"
    )
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from gen4d.commands._batch import batch_from_args, items_from_args
    from gen4d.config import apply_overrides
    from gen4d.data.batch import render_threads
    from gen4d.data.blender import PRESETS
    from gen4d.data.blender_batch import render_assets
    from gen4d.errors import UserError

    if args.list_clips or args.save_glb or args.overwrite:
        raise UserError("--list-clips, --save-glb and --overwrite take a single ASSET, not --assets")
    if not args.out:
        raise UserError("--out DIR is required (each asset renders into DIR/<asset id>/)")
    batch = batch_from_args(args)
    items = items_from_args(args)
    config = apply_overrides(PRESETS[args.preset], args)
    if config.threads == 0:
        config = replace(config, threads=render_threads(batch))
    results = render_assets(items, args.out, config, batch, args.results, progress=not args.no_progress)
    listed = {item.entry for item in items}
    counts: dict[str, int] = {}
    for entry, record in results.items():
        if entry in listed:
            counts[record["status"]] = counts.get(record["status"], 0) + 1
            if record["status"] != "done":
                print(f"{entry}: {record['reason']}")
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"{args.results or args.out + '/results.jsonl'}: {len(listed)} assets ({summary})")
    failed = sum(n for status, n in counts.items() if status != "done")
    if failed:  # exit status 1: the batch ran, but not every asset was rendered
        print(f"{failed} of {len(listed)} assets not rendered (reasons above); fix them and rerun the same command")
    return 1 if failed else 0
