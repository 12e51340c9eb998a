"""STAG4D benchmark: time and peak GPU memory per stage, with full-size random-weight models
(same architecture = same cost as the real weights; the outputs are meaningless).

Parts (``--parts``, default all):

* ``zero123pp`` - Zero123++ (SD2 UNet, 960 x 640 grid, CFG 4, fp16) per frame at 75 steps: anchor
  off (1 frame; 4 frames in one batch), anchor on in 'batch' mode (frame 0 recomputed inside each
  batch of 1 + 4 frames) and in 'cache' mode (frame 0 recorded once, fp16 cache on the GPU), the
  cache's size, and the extra memory of each anchor mode;
* ``sds`` - one Zero-1-to-3 XL SDS step (4 views at 256 px, CFG 5, fp16) forward + backward;
* ``video`` - the whole ``gen4d video`` run for a 30-frame synthetic RGBA video with the ``fast``
  preset (Zero123++ 30 steps + anchor, 2000 STAG4D steps with SDS, outputs), per-stage times;
* ``oracle`` - quality of the oracle run (ground-truth Zero123++ views, SDS off, ``fast`` preset
  otherwise, or each ``--oracle-variant``): held-out eval PSNR / SSIM against steps and training time, for each dataset given
  with ``--oracle-data`` (default: the shipped procedural default set; render glTF assets first,
  see below).

Run on one GPU (about 6-8 minutes for all parts on an H100, plus the gsplat JIT compile on first
use)::

    .venv/bin/python bench/bench_stag4d.py
    # oracle on real glTF assets: render them first (Blender, CPU), then pass the folders
    .venv/bin/gen4d render ../shared/assets/gltf/Fox.glb --sets front,zero123pp,eval --size 256 \\
        --samples 16 --zero123pp_version v1.2 --out /tmp/fox --no-progress
    .venv/bin/python bench/bench_stag4d.py --parts oracle --oracle-data /tmp/fox

``--tiny`` runs every part with tiny models on the CPU (a smoke test of this script, no timings
worth reading).
"""

from __future__ import annotations

import argparse
import dataclasses as dc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen4d.diffusion.anchor import AnchorCache, AnchorSpec  # noqa: E402
from gen4d.diffusion.zero123pp import MultiViewConfig, Zero123Plus  # noqa: E402

RESULTS: dict = {}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")


def allocated_gb() -> float:
    return torch.cuda.memory_allocated() / 1e9 if torch.cuda.is_available() else float("nan")


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def report(name: str, **values):
    RESULTS[name] = values
    shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"[{name}] {shown}", flush=True)


# ---------------------------------------------------------------------------------------
def bench_zero123pp(device, tiny: bool):
    dtype = torch.float32 if tiny else torch.float16
    model = Zero123Plus.tiny() if tiny else Zero123Plus.full_size("v1.2", device=device).to(device, dtype)
    steps = 3 if tiny else 75
    images = torch.rand(9, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    base = MultiViewConfig(steps=steps, dtype="float32" if tiny else "float16")
    weights_gb = allocated_gb()
    # warm-up (cuDNN / SDPA kernel choice)
    model.generate(images[:1], dc.replace(base, steps=2, anchor_weight=0.0))

    reset_peak()
    _, t = timed(lambda: model.generate(images[:1], dc.replace(base, anchor_weight=0.0)))
    off_peak = peak_gb()
    report("zero123pp.anchor_off.1_frame", seconds_per_frame=t, peak_gb=off_peak, weights_gb=weights_gb)

    reset_peak()
    _, t = timed(lambda: model.generate(images[:4], dc.replace(base, anchor_weight=0.0, frames_per_batch=4)))
    off4_peak = peak_gb()
    report("zero123pp.anchor_off.4_frames_batched", seconds_per_frame=t / 4, peak_gb=off4_peak)

    # Steady state of 'batch' mode: frames 5..8 anchored by frame 0 recomputed in the same batch.
    cfg = dc.replace(base, anchor_weight=0.5, anchor_mode="batch", frames_per_batch=5)
    reset_peak()
    _, t = timed(lambda: model.generate(images, cfg, frames=[5, 6, 7, 8]))
    batch_peak = peak_gb()
    report(
        "zero123pp.anchor_batch.1+4_rows",
        seconds_per_frame=t / 4,
        peak_gb=batch_peak,
        anchor_extra_gb_vs_4_frames=batch_peak - off4_peak,
        compute_overhead="1 extra row per batch (here +25%)",
    )

    # 'cache' mode: record frame 0 once, then 4 later frames read the fp16 cache.
    cache = AnchorCache(dtype=torch.float16)
    cond = model.encode_conditions(images[:5].to(device))
    reset_peak()
    _, t_record = timed(lambda: model._denoise(cond, [0], base, AnchorSpec(0.5, 0, "cache", cache, record=True)))
    record_peak = peak_gb()
    _, t_read = timed(lambda: model._denoise(cond, [1, 2, 3, 4], base, AnchorSpec(0.5, 0, "cache", cache)))
    cache_peak = peak_gb()
    report(
        "zero123pp.anchor_cache",
        record_seconds=t_record,
        seconds_per_later_frame=t_read / 4,
        cache_gb=cache.nbytes() / 1e9,
        cache_gb_estimate=model.anchor_cache_bytes(steps) / 1e9,
        peak_gb=cache_peak,
        record_peak_gb=record_peak,
    )
    cache.clear()
    model = None  # free the weights before the next part
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
def bench_sds(device, tiny: bool):
    from gen4d.cameras import zero123_pose_embedding
    from gen4d.diffusion.zero123 import Zero123Guidance

    guidance = Zero123Guidance.tiny() if tiny else Zero123Guidance.full_size(device=device).to(device, torch.float16)
    cond = guidance.encode_condition(torch.rand(4, 3, 256, 256, device=device))
    pose = zero123_pose_embedding(torch.zeros(4), torch.tensor([30.0, 90.0, -60.0, 150.0]), torch.full((4,), 2.0)).to(
        device
    )
    renders = torch.rand(4, 3, 256, 256, device=device, requires_grad=True)
    gen = torch.Generator().manual_seed(0)

    def step():
        out = guidance.sds(renders, cond, pose, torch.randint(20, 980, (4,), generator=gen), 5.0, gen)
        out.loss.backward()
        renders.grad = None

    for _ in range(3):
        step()
    reset_peak()
    count = 3 if tiny else 20
    _, t = timed(lambda: [step() for _ in range(count)])
    report("sds.zero123xl.4_views_256px", seconds_per_step=t / count, peak_gb=peak_gb())
    guidance = None  # noqa: F841 - free the weights
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
def synthetic_video(folder: Path, frames: int, size: int) -> Path:
    """RGBA frames of a two-blob creature waving (object in the middle, transparent around)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:size, 0:size] / size
    for i in range(frames):
        phase = 2 * np.pi * i / frames
        rgba = np.zeros((size, size, 4), np.uint8)
        body = ((xs - 0.5) / 0.18) ** 2 + ((ys - 0.55) / 0.25) ** 2 <= 1
        head = (xs - 0.5) ** 2 + (ys - 0.25 - 0.02 * np.sin(phase)) ** 2 <= 0.1**2
        arm = (np.abs(ys - 0.5 + 0.1 * np.sin(phase) * (xs - 0.65)) < 0.03) & (xs > 0.6) & (xs < 0.85)
        rgba[body] = (40, 90, 200, 255)
        rgba[head] = (220, 180, 60, 255)
        rgba[arm] = (200, 40, 40, 255)
        Image.fromarray(rgba).save(folder / f"{i}_rgba.png")
    return folder


def bench_video(device, tiny: bool, work: Path):
    from gen4d.recon.stag4d import preset, run_video_to_4d

    frames = 4 if tiny else 30
    video = synthetic_video(work / "video_frames", frames, 96 if tiny else 512)
    config = preset("fast")
    config = dc.replace(
        config,
        multiview=dc.replace(config.multiview, model="random:tiny" if tiny else "random:full", version="v1.2"),
        sds=dc.replace(config.sds, model="random:tiny" if tiny else "random:full"),
    )
    if tiny:
        config = dc.replace(config, device="cpu", steps=6, static_steps=2, num_points=500, input=dc.replace(config.input, size=32),
                            multiview=dc.replace(config.multiview, steps=2), views=dc.replace(config.views, sizes=(16, 32)),
                            output=dc.replace(config.output, video_size=32, round_frames=8))  # fmt: skip
    reset_peak()
    result, t = timed(
        lambda: run_video_to_4d(video, work / "video_run", config, "zero123pp", progress=False, echo=None)
    )
    report(
        f"video.fast.{frames}_frames",
        total_seconds=t,
        **{k: float(v) for k, v in result["timings"].items()},
        steps=config.steps,
        gaussians=result["num_gaussians"],
        peak_gb=peak_gb(),
        seconds_per_optim_step=result["timings"]["optimise_s"] / config.steps,
    )


# ---------------------------------------------------------------------------------------
def bench_oracle(device, tiny: bool, data: list[str], work: Path, variants: list[str]):
    from gen4d.config import parse_assignments, set_fields
    from gen4d.data.manifest import DEFAULT_DATASET
    from gen4d.recon.stag4d import preset, run_video_to_4d

    runs = []
    for spec in variants or ["fast="]:
        label, _, changes = spec.partition("=")
        base, _, _ = label.partition("+")
        fields = parse_assignments(changes)
        runs += [(folder, label, set_fields(preset(base), fields)) for folder in data or [str(DEFAULT_DATASET)]]
    for folder, label, config in runs:
        config = dc.replace(config, sds=dc.replace(config.sds, weight=0.0), eval_every=250,
                            output=dc.replace(config.output, videos=False, ply=False, renders=False))  # fmt: skip
        if tiny:
            config = dc.replace(config, device="cpu", steps=20, static_steps=5, eval_every=10, num_points=500,
                                input=dc.replace(config.input, size=32), anchored_per_step=2)  # fmt: skip
        name = Path(folder).name + ("" if label == "fast" else f".{label}")
        reset_peak()
        result, t = timed(
            lambda folder=folder, name=name, config=config: run_video_to_4d(
                folder, work / f"oracle_{name}", config, f"oracle:{folder}", progress=False, echo=None
            )
        )
        curve = [
            (h["step"], round(h["train_time_s"], 1), round(h["psnr"], 2), round(h["ssim"], 3))
            for h in result["history"]
        ]
        report(f"oracle.{name}", psnr=result["eval"]["psnr"], ssim=result["eval"]["ssim"], eval_images=result["eval"]["images"],
               total_seconds=t, optimise_seconds=result["timings"]["optimise_s"], peak_gb=peak_gb(),
               curve_step_time_psnr_ssim=curve)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="zero123pp,sds,video,oracle", help="comma-separated parts to run")
    parser.add_argument(
        "--oracle-data",
        action="append",
        default=[],
        help="gen4d dataset folder with front, zero123pp and eval splits (repeatable)",
    )
    parser.add_argument(
        "--oracle-variant",
        action="append",
        default=[],
        help="LABEL=field=value;field=value: an oracle run of preset LABEL (or BASE+name) with dotted overrides "
        "(repeatable; default: the fast preset)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU (smoke test of this script)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    tiny = args.tiny
    if not tiny and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (use --tiny for a CPU smoke test)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if tiny else "cuda")
    print(f"device: {torch.cuda.get_device_name(0) if not tiny else 'cpu'}; torch {torch.__version__}", flush=True)
    if not tiny:
        # gsplat compiles its CUDA extension on first use: do it before any timing.
        from gen4d.cameras import orbit
        from gen4d.gaussians import random_in_sphere
        from gen4d.render import render

        _, t = timed(lambda: render(random_in_sphere(100, device=device), orbit(0.0, 0.0).to(device)))
        print(f"warm-up render (gsplat JIT if first use): {t:.1f} s", flush=True)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for part in parts:
            if part == "zero123pp":
                bench_zero123pp(device, tiny)
            elif part == "sds":
                bench_sds(device, tiny)
            elif part == "video":
                bench_video(device, tiny, work)
            elif part == "oracle":
                bench_oracle(device, tiny, args.oracle_data, work, args.oracle_variant)
            else:
                print(f"unknown part {part!r}", file=sys.stderr)
                return 2
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
