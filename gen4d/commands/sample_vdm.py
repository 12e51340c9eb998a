"""``gen4d sample-vdm``: generate a 4D orbital video (and its static orbit) as a gen4d dataset."""

from __future__ import annotations

import argparse

NAME = "sample-vdm"
HELP = (
    "generate the T-view orbital video of a 4D asset from an image, a static orbit or a prompt with the "
    "Diffusion4D video model (DDIM + 3D-aware guidance); writes a dataset for `gen4d reconstruct`"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.diffusion.vdm.pipeline import SampleConfig

    parser.add_argument(
        "model",
        help="a gen4d model folder (RUN/model from train-vdm) or a diffusers base "
        "(folder or hub id, e.g. ali-vilab/i2vgen-xl) with --weights",
    )
    parser.add_argument("--out", required=True, help="output dataset folder (manifest.json + PNGs)")
    parser.add_argument(
        "--image",
        help="condition image: RGBA with a transparent background, or matted with rembg (--condition.matting); "
        "the object is recentred in a square, never stretched",
    )
    parser.add_argument(
        "--static", help="static-3D condition: a dataset with a 'static_orbit' split (static3d variant)"
    )
    parser.add_argument("--prompt", help="text prompt (text variant)")
    parser.add_argument("--weights", help="fine-tuned UNet safetensors for a diffusers base model")
    parser.add_argument("--base", help="where the VAE / CLIP encoders / base UNet come from (overrides model.json)")
    parser.add_argument("--variant", choices=["image", "static3d", "text"], help="variant of a diffusers base model")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="weights dtype (auto: float16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--name", help="dataset name (default: the output folder's name)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, SampleConfig, SampleConfig())


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from gen4d.config import apply_overrides
    from gen4d.data.video_input import load_image_input
    from gen4d.diffusion.vdm.components import load_video_model
    from gen4d.diffusion.vdm.pipeline import (
        SampleConfig,
        generate_dataset,
        static_orbit_condition,
    )

    config = apply_overrides(SampleConfig(), args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype)
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    started = time.perf_counter()
    # The image first: a bad one fails before the (slow) model load.
    image = load_image_input(args.image, config.condition) if args.image else None
    model = load_video_model(
        args.model, weights=args.weights, variant=args.variant, base=args.base, device=device, dtype=dtype
    )
    static = static_orbit_condition(args.static) if args.static else None
    loaded = time.perf_counter()
    out = Path(args.out)
    meta = {
        "generator": {
            "command": "gen4d sample-vdm",
            "model": str(args.model),
            "weights": args.weights,
            "image": args.image,
            "static": args.static,
            "load_s": round(loaded - started, 3),
        }
    }
    video, result, seconds = generate_dataset(
        model, out, image=image, static_video=static, prompt=args.prompt, config=config,
        progress=not args.no_progress, meta=meta, name=args.name,
    )  # fmt: skip
    measured = "" if result.measured_motion is None else f", measured m {result.measured_motion:.4g}"
    print(
        f"wrote {len(video)} views ({', '.join(video.splits)}) to {out} in {seconds:.1f} s "
        f"(requested m {result.motion:.4g}{measured}); next: {next_command(out)}"
    )
    return 0


def next_command(dataset) -> str:
    """The command that turns the generated dataset into 4D Gaussians (printed as a hint)."""
    import shlex
    from pathlib import Path

    dataset = Path(dataset)
    run = dataset.with_name(dataset.name + "_4d")
    return f"gen4d reconstruct {shlex.quote(str(dataset))} --out {shlex.quote(str(run))}"
