"""``gen4d convert-videomv``: a VideoMV / VGen checkpoint -> a gen4d video-model folder."""

from __future__ import annotations

import argparse

NAME = "convert-videomv"
HELP = (
    "convert a VideoMV (VGen UNetSD_I2VGen layout, with its per-frame camera embedding) checkpoint into a gen4d "
    "model folder for `gen4d sample-vdm` / `gen4d train-vdm --model.init`"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="VGen / VideoMV checkpoint: .pth (read with torch.load(weights_only=True) only) or .safetensors",
    )
    parser.add_argument("--out", required=True, help="new gen4d model folder (model.json, unet.safetensors, ...)")
    parser.add_argument(
        "--base",
        default="ali-vilab/i2vgen-xl",
        help="diffusers folder or hub id the VAE and CLIP encoders come from (VideoMV uses I2VGen-XL's); "
        "'none' to record none",
    )
    parser.add_argument("--variant", default="image", choices=["image", "static3d"], help="condition type")
    parser.add_argument("--frames", type=int, default=24, help="frames per video (VideoMV: 24)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (VideoMV: 256)")
    parser.add_argument("--fps", type=int, default=8, help="fps micro-condition (VideoMV: 8)")


def run(args: argparse.Namespace) -> int:
    from gen4d.diffusion.vdm.convert import convert_videomv
    from gen4d.errors import UserError

    for name in ("frames", "size", "fps"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name}: expected an integer >= 1, got {getattr(args, name)}")
    summary = convert_videomv(
        args.checkpoint,
        args.out,
        base=None if args.base.lower() == "none" else args.base,
        variant=args.variant,
        num_frames=args.frames,
        size=args.size,
        fps=args.fps,
    )
    config = summary["config"]
    print(
        f"wrote {summary['out']}: {summary['tensors']} tensors, UNet channels {list(config['block_out_channels'])}, "
        f"camera embedding {summary['camera_dim'] or 'none'}"
        + (f", dropped {summary['dropped']} LGM-refiner keys" if summary["dropped"] else "")
    )
    return 0
