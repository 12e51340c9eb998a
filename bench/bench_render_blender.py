"""Seconds per 256x256 frame of ``gen4d render`` (Blender Cycles on the CPU).

Renders the front set (T frames) of a procedural creature and of the Khronos Fox (from
../shared/assets/gltf, skipped if absent) at each sample count, with ``--threads`` render threads,
and prints one row per run: Cycles render seconds per frame (from the worker's timer) and the wall
time per frame including Blender start-up, import, normalisation over the sampled times.

    .venv/bin/python bench/bench_render_blender.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from gen4d.data.blender import RenderConfig, render_asset
from gen4d.io import read_json


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--samples", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument(
        "--fox", default=str(Path(os.environ.get("GEN4D_SHARED", root.parent / "shared")) / "assets/gltf/Fox.glb")
    )
    args = parser.parse_args()
    assets = ["procedural:5:cycles=1"] + ([args.fox] if Path(args.fox).is_file() else [])
    if len(assets) == 1:
        print(f"(Fox.glb not found at {args.fox}; benchmarking the procedural asset only)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
        f"threads {args.threads}; device {args.device}; {args.size}x{args.size}; {args.frames} frames; "
        f"date {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'asset':28s} {'samples':>7s} {'denoise':>7s} {'render s/frame':>15s} {'wall s/frame':>13s}")
    for asset in assets:
        for samples in args.samples:
            config = RenderConfig(
                sets=("front",),
                size=args.size,
                num_frames=args.frames,
                samples=samples,
                denoise=True,
                threads=args.threads,
                device=args.device,
            )
            with tempfile.TemporaryDirectory() as tmp:
                began = time.perf_counter()
                manifest = render_asset(asset, Path(tmp) / "r", config, progress=False)
                wall = time.perf_counter() - began
                per_frame = read_json(manifest)["render"]["seconds_per_image"]
            name = Path(asset).name if not asset.startswith("procedural:") else asset
            print(f"{name:28s} {samples:7d} {'on':>7s} {per_frame:15.3f} {wall / args.frames:13.3f}", flush=True)


if __name__ == "__main__":
    main()
