"""Time and peak GPU memory per stage of ``gen4d text`` / ``gen4d image`` (STAG4D route) with
FULL-SIZE random-weight models: SDXL base (1024 px), Stable Video Diffusion (img2vid-xt architecture,
576 x 1024), Zero123++ and Zero-1-to-3 XL ('random:full'). Same architectures, hence the same cost as
the public weights; the outputs are noise, so matting keys out the flat background colour (`color`).

The route runs as users run it (gen4d.pipeline.routes.run_route: load, run, delete, empty the CUDA
cache between stages); each stage's record (RUN/stages/NAME.json) gives its wall time (model build
included), its peak allocated GPU memory and, for SDXL / SVD, the mean denoising step time. Few
denoising steps keep the run short: multiply seconds_per_step by the real step count (SDXL 30,
SVD 25) and add the rest of the stage. One JSON line per stage.

On one GPU (about 3-5 minutes on an H100 / H200 with the defaults)::

    python bench/bench_routes.py
    python bench/bench_routes.py --svd-frames 25 --cpu-offload   # img2vid-xt's 25 frames, a 24 GB card

``--tiny`` runs the same with tiny models on the CPU (a smoke test of this script).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen4d.config import set_fields  # noqa: E402
from gen4d.pipeline.config import route_config  # noqa: E402
from gen4d.pipeline.routes import run_route  # noqa: E402


def settings(args) -> dict:
    size = "tiny" if args.tiny else "full"
    changes = {
        "device": "cpu" if args.tiny else "cuda",
        "matting": "color",
        "text_to_image.model": f"random:{size}",
        "text_to_image.size": 64 if args.tiny else args.sdxl_size,
        "text_to_image.steps": args.sdxl_steps,
        "text_to_image.cpu_offload": args.cpu_offload,
        "image_to_video.model": f"random:{size}",
        "image_to_video.frames": 3 if args.tiny else args.svd_frames,
        "image_to_video.width": 64 if args.tiny else args.width,
        "image_to_video.height": 48 if args.tiny else args.height,
        "image_to_video.steps": args.svd_steps,
        "image_to_video.decode_chunk_size": args.decode_chunk,
        "image_to_video.cpu_offload": args.cpu_offload,
        "stag4d.multiview.model": f"random:{size}",
        "stag4d.multiview.steps": args.mv_steps,
        "stag4d.sds.model": f"random:{size}",
        "stag4d.steps": args.stag4d_steps,
        "stag4d.static_steps": max(1, args.stag4d_steps // 4),
        "stag4d.output.round_frames": 8,
        "text_to_image.dtype": args.dtype,
        "image_to_video.dtype": args.dtype,
        "stag4d.multiview.dtype": args.dtype,
        "stag4d.sds.dtype": args.dtype,
    }
    if args.tiny:
        changes.update({"stag4d.device": "cpu", "stag4d.backend": "torch", "stag4d.input.size": 32,
                        "stag4d.num_points": 300, "stag4d.views.sizes": "16", "stag4d.views.size_steps": "",
                        "stag4d.output.video_size": 16})  # fmt: skip
    return changes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (smoke test)")
    parser.add_argument("--sdxl-size", type=int, default=1024, help="SDXL image side")
    parser.add_argument("--sdxl-steps", type=int, default=4, help="SDXL denoising steps (the route's default: 30)")
    parser.add_argument("--svd-frames", type=int, default=14, help="SVD frames (img2vid 14, img2vid-xt 25)")
    parser.add_argument("--width", type=int, default=1024, help="SVD width")
    parser.add_argument("--height", type=int, default=576, help="SVD height")
    parser.add_argument("--svd-steps", type=int, default=4, help="SVD denoising steps (the route's default: 25)")
    parser.add_argument("--decode-chunk", type=int, default=8, help="SVD frames decoded at once")
    parser.add_argument("--mv-steps", type=int, default=5, help="Zero123++ steps per frame (the stag4d preset: 75)")
    parser.add_argument("--stag4d-steps", type=int, default=100, help="STAG4D optimisation steps (fast preset: 2000)")
    parser.add_argument("--preset", default="fast", help="STAG4D preset of the last stage")
    parser.add_argument(
        "--dtype", default="float16", choices=["float16", "bfloat16"],
        help="weights dtype of every model (the route's default: float16; bfloat16 if random weights overflow it)",
    )  # fmt: skip
    parser.add_argument("--cpu-offload", action="store_true", help="SDXL / SVD with accelerate's model offload")
    parser.add_argument("--out", help="run folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (or --tiny for the CPU smoke test)")
    config = set_fields(route_config(args.preset), settings(args))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "cpu"
    error = None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "run"
        try:
            run_route("text", "a corgi running", out, config, progress=False, echo=None)
        except Exception as err:  # noqa: BLE001 - report the stages that finished, then the failure
            error = f"{type(err).__name__}: {err}"
        records = [
            json.loads(p.read_text()) for p in sorted((out / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime)
        ]
    for record in records:
        name = record["stage"]
        line = {"stage": name, "device": device, "seconds": record["seconds"],
                "peak_gpu_mib": record.get("peak_gpu_mib"), "peak_gpu_reserved_mib": record.get("peak_gpu_reserved_mib")}  # fmt: skip
        for key in ("seconds_per_step", "steps", "frames", "size", "timings", "num_gaussians", "backend"):
            if key in record:
                line[key] = record[key]
        print(json.dumps(line), flush=True)
    if error:
        print(json.dumps({"error": error, "device": device}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
