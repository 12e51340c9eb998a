"""``gen4d demo --out DIR``: 4D construction on gen4d's embedded default data."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "demo"
HELP = "the main job on the embedded default data: 4D construction -> orbit video + metrics (CPU: a few minutes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.recon.construct import PRESETS, ConstructConfig

    parser.add_argument("--out", default="demo_out", help="run directory (default: demo_out)")
    parser.add_argument("--data", default=None, help="dataset to use instead of the embedded default")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=None,
        help="settings (default: 'demo' on CPU, 'default' on a CUDA GPU)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted demo run (without it, a previous demo run in --out is replaced)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    add_config_arguments(parser, ConstructConfig, PRESETS["demo"])


def default_data():
    """The embedded default data set, or (when it is missing) gen4d's synthetic scene."""
    from gen4d.data.manifest import DEFAULT_DATASET

    if (DEFAULT_DATASET / "manifest.json").is_file():
        return DEFAULT_DATASET
    from gen4d.data.synthetic import synthetic_dataset

    print(f"embedded default data not found in {DEFAULT_DATASET}; using gen4d's synthetic scene")
    return synthetic_dataset(size=64, frames=12, eval_views=8)


def write_exports(out: Path, fps: float) -> tuple[Path | None, Path]:
    """The finished run as RUN/export/asset.glb (an animated mesh; skipped with a note without
    scikit-image) and RUN/player.html (a self-contained web player), as ``gen4d export`` writes them,
    from one load of the run's model at its frame times."""
    import torch

    from gen4d.commands.export import export_mesh, frame_count
    from gen4d.export.mesh import MeshConfig
    from gen4d.export.ply_sequence import frame_times
    from gen4d.export.splat4d import encode_splat4d
    from gen4d.export.web_player import write_player_html
    from gen4d.recon.checkpoint import load_run

    model, times = load_run(out), frame_times(frame_count(out))
    glb = None
    try:
        import skimage  # noqa: F401
    except ImportError:
        print("no glb: the mesh export needs scikit-image (pip install 'gen4d[export]')")
    else:
        glb = export_mesh(model, times, fps, MeshConfig(), out / "export" / "asset.glb", "glb", out)
    with torch.no_grad():
        frames = model.at(times)
    return glb, write_player_html(encode_splat4d(frames, fps), out / "player.html", name="demo.splat4d")


def run(args: argparse.Namespace) -> int:
    import torch

    from gen4d.config import apply_overrides, load_config
    from gen4d.recon.construct import ConstructConfig, preset, reconstruct
    from gen4d.run.folder import read_marker

    out = Path(args.out)
    marker = read_marker(out) if out.is_dir() else None
    stored = out / "config.json"
    if args.resume and args.preset is None and marker is not None and stored.is_file():
        config = load_config(ConstructConfig, stored)
    else:
        name = args.preset or ("default" if torch.cuda.is_available() else "demo")
        config = preset(name)
        print(f"gen4d demo: preset '{name}' on {'CUDA' if torch.cuda.is_available() else 'CPU'}")
    config = apply_overrides(config, args)
    # A rerun replaces the previous demo run in --out (only what gen4d wrote there); any other
    # folder is left to the run-folder policy, which refuses a user's non-empty folder.
    replace = not args.resume and marker is not None and marker.get("command") == "demo"
    if replace:
        print(f"replacing the previous run in {out} (use --resume to continue it instead)")
    data = args.data or default_data()
    metrics = reconstruct(data, config, out, resume=args.resume, overwrite=replace, progress=not args.no_progress,
                          command="demo")  # fmt: skip
    glb, player = write_exports(out, config.output.video_fps)
    print(f"\ndemo finished in {metrics['wall_time_s']:.0f} s")
    if config.output.video:
        print(f"  orbit video: {out / 'videos' / 'orbit.mp4'}  (gif: {out / 'videos' / 'orbit.gif'})")
    if glb is not None:
        print(f"  glb:         {glb}  (animated mesh: Blender, glTF viewers)")
    print(f"  web player:  {player}  (open it in a browser: the 4D asset is inside)")
    print(f"  metrics:     {out / 'metrics.json'}")
    for split, values in metrics["splits"].items():
        print(f"  {split:>6}: PSNR {values['psnr']:.2f} SSIM {values['ssim']:.3f} ({values['images']} images)")
    return 0
