"""``gen4d train-vdm``: train / fine-tune the Diffusion4D 4D-aware video model (accelerate)."""

from __future__ import annotations

import argparse

NAME = "train-vdm"
HELP = (
    "train or fine-tune the Diffusion4D video model (L_ldm + omega L_mr, accelerate: mixed precision, "
    "gradient accumulation, multi-GPU / multi-node with `accelerate launch -m gen4d.cli train-vdm ...`)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.train.config import TRAIN_PRESETS, TrainConfig

    parser.add_argument("data", nargs="*", help="dataset folders (gen4d render output) or folders holding many")
    parser.add_argument(
        "--preset",
        default="small",
        choices=sorted(TRAIN_PRESETS),
        help="settings to start from: paper (fine-tune I2VGen-XL/VideoMV at 256px), small "
        "(pixel-space model from scratch, 64px), tiny (CPU smoke test); ignored when resuming",
    )
    parser.add_argument("--config", help="a config.json to start from instead of the preset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser, TrainConfig, TRAIN_PRESETS["small"])


def resolve_config(args: argparse.Namespace):
    """Preset / --config / the run's stored config, then the command-line overrides."""
    import copy
    from pathlib import Path

    from gen4d.config import apply_overrides, load_config
    from gen4d.run import is_run
    from gen4d.run.checkpoint import find_checkpoint
    from gen4d.train.config import TRAIN_PRESETS, TrainConfig

    out = getattr(args, "cfg:out", None)
    if out is None:
        raise ValueError("pass the run folder with --out RUN (an existing run is resumed from its last checkpoint)")
    stored = Path(out) / "config.json"
    if args.config:
        config = load_config(TrainConfig, args.config)
    elif (
        is_run(out) and stored.is_file() and find_checkpoint(out, "training_state.json") is not None
    ):  # resume the run's settings
        config = load_config(TrainConfig, stored)
    else:
        config = copy.deepcopy(TRAIN_PRESETS[args.preset])
    config = apply_overrides(config, args)
    config.out = out
    if args.data:
        config.data.paths = tuple(args.data)
    return config.validate()


def run(args: argparse.Namespace) -> int:
    from gen4d.train.vdm import train_vdm

    config = resolve_config(args)
    result = train_vdm(config, progress=not args.no_progress)
    if result["main"]:
        print(
            f"trained to step {result['step']} ({result['stopped_by']}); model: {result['model']}; "
            f"loss curve: {result['metrics']}"
        )
    return 0
