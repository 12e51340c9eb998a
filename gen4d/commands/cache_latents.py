"""``gen4d cache-latents``: encode many training objects into a sharded latent cache for train-vdm."""

from __future__ import annotations

import argparse

NAME = "cache-latents"
HELP = (
    "encode a folder of many training objects (gen4d or Diffusion4D layout) into safetensors shards + index.json "
    "(parallel, resumable); train with `gen4d train-vdm --data.shards CACHE`"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.cli import number_type

    parser.add_argument("data", nargs="+", help="dataset folders, or folders holding many")
    parser.add_argument("--out", required=True, metavar="CACHE", help="cache folder (a rerun resumes it)")
    parser.add_argument("--codec", default="pixel", choices=["pixel", "vae"], help="latent space of the model")
    parser.add_argument(
        "--model",
        help="where the VAE / CLIP image encoder come from: the value train-vdm gets as --model.base or "
        "--model.init (a diffusers folder / hub id or a gen4d model folder); none for pixel models from scratch",
    )
    parser.add_argument(
        "--size",
        type=number_type(int, 8, 4096),
        default=64,
        help="image side the views are resampled to (train-vdm's --data.size)",
    )
    parser.add_argument(
        "--frames", type=number_type(int, 2, 1024), default=24, help="views per orbit (train-vdm's --data.num_frames)"
    )
    parser.add_argument("--per-shard", type=number_type(int, 1, 100000), default=64, help="objects per shard file")
    parser.add_argument(
        "--workers", type=number_type(int, 1, 1024), default=1, help="encoding processes (each writes whole shards)"
    )
    parser.add_argument("--device", default="cpu", help="device of the encoders (cpu, cuda, cuda:1 ...)")


def run(args: argparse.Namespace) -> int:
    from gen4d.train.shards import write_latent_cache

    index = write_latent_cache(
        args.data,
        args.out,
        codec=args.codec,
        model=args.model,
        size=args.size,
        num_frames=args.frames,
        per_shard=args.per_shard,
        workers=args.workers,
        device=args.device,
    )
    print(f"wrote {args.out}: {index['objects']} objects in {len(index['shards'])} shards ({index['codec']})")
    return 0
