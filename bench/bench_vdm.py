"""Benchmark the Diffusion4D video model at full size with random weights (I2VGen-XL architecture).

Measures, on the GPU(s) it runs on:
  * training: optimiser steps / s and videos / s at 24 x 256 x 256 (latents 4 x 24 x 32 x 32), bf16
    autocast, AdamW on every UNet weight, L = L_ldm + L_mr, for several per-GPU batch sizes, and the
    peak GPU memory of each;
  * sampling: one 24-frame 256 x 256 video, 50 DDIM steps with eq. 3's 3-way guidance, fp16: with a
    separate frozen base UNet (2 forwards per step: [cond; uncond] + base) and with shared weights
    (1 forward of 3 rows per step), plus the VAE decode of the 24 frames (SD-VAE architecture).

    python bench/bench_vdm.py                                # 1 GPU: training + sampling (< 5 min on an H100)
    accelerate launch --multi_gpu --num_processes 2 bench/bench_vdm.py --train-only    # 2 GPUs (DDP): training
    python bench/bench_vdm.py --tiny                         # CPU smoke test of this script

Compare the 2-GPU videos/s with the 1-GPU figure at the same per-GPU batch for the scaling efficiency.
Random weights: the numbers are speed and memory only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gen4d.diffusion.schedule import NoiseSchedule  # noqa: E402
from gen4d.diffusion.vdm.model import (  # noqa: E402
    VideoCondition,
    add_motion_embedding,
    build_unet,
    image_condition_latents,
    null_condition,
)
from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS, unet_preset  # noqa: E402
from gen4d.diffusion.vdm.sampling import ddim_sample, guided_output  # noqa: E402

SD_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    sample_size=256,
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_unet(preset: str, device, dtype=torch.float32, motion=True):
    with torch.device(device):  # initialise the weights on the device (fast for 1.4 B parameters)
        unet = build_unet("image", unet_preset(preset, "image"))
    if dtype != torch.float32:
        unet = unet.to(dtype)
    if motion:
        add_motion_embedding(unet)
        unet.time_embedding.motion.to(device=device, dtype=dtype)
    return unet


def bench_training(args, accelerator) -> list[dict]:
    from gen4d.train.step import vdm_loss

    device = accelerator.device
    schedule = NoiseSchedule.from_diffusers_config(SCHEDULE_PRESETS["stable_diffusion"])
    rows = []
    for batch in args.batches:
        torch.manual_seed(0)
        unet = make_unet(args.preset, device)
        unet.train()
        opt = torch.optim.AdamW(unet.parameters(), lr=3e-5)
        model, opt = accelerator.prepare(unet, opt)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        shape = (batch, 4, args.frames, args.latent, args.latent)
        timings = []
        try:
            for step in range(args.warmup + args.iters):
                z0, zbar, noise = (torch.randn(shape, device=device) for _ in range(3))
                cond = VideoCondition(
                    text=torch.zeros(batch, 0, unet.config.cross_attention_dim, device=device),
                    image_embeds=torch.randn(batch, unet.config.cross_attention_dim, device=device),
                    latents=image_condition_latents(z0[:, :, 0], args.frames),
                    motion=torch.rand(batch, device=device) * 0.05,
                )
                t = torch.randint(0, 1000, (batch,), device=device)
                sync(device)
                start = time.perf_counter()
                with accelerator.autocast():
                    loss, _ = vdm_loss(model, "image", schedule, z0, zbar, cond, t, noise, mr_weight=1.0, fps=16)
                accelerator.backward(loss)
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync(device)
                if step >= args.warmup:
                    timings.append(time.perf_counter() - start)
            step_s = sorted(timings)[len(timings) // 2]
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows.append(
                {
                    "per_gpu_batch": batch,
                    "gpus": accelerator.num_processes,
                    "step_s": step_s,
                    "videos_per_s": batch * accelerator.num_processes / step_s,
                    "peak_gib": peak,
                    "status": "ok",
                }
            )
        except torch.cuda.OutOfMemoryError:
            rows.append(
                {
                    "per_gpu_batch": batch,
                    "gpus": accelerator.num_processes,
                    "step_s": float("nan"),
                    "videos_per_s": float("nan"),
                    "peak_gib": float("nan"),
                    "status": "out of memory",
                }
            )
        del model, opt, unet
        accelerator.free_memory()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


@torch.no_grad()
def bench_sampling(args, device) -> list[dict]:
    import diffusers

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    schedule = NoiseSchedule.from_diffusers_config(SCHEDULE_PRESETS["stable_diffusion"])
    torch.manual_seed(0)
    unet = make_unet(args.preset, device, dtype).eval()
    base = make_unet(args.preset, device, dtype, motion=False).eval()
    cross = unet.config.cross_attention_dim
    image_latent = torch.randn(1, 4, args.latent, args.latent, device=device, dtype=dtype)
    cond = VideoCondition(
        text=torch.zeros(1, 0, cross, device=device, dtype=dtype),
        image_embeds=torch.randn(1, cross, device=device, dtype=dtype),
        latents=image_condition_latents(image_latent, args.frames),
    ).with_motion(0.02)
    null = null_condition(cond)
    noise = torch.randn(1, 4, args.frames, args.latent, args.latent, device=device)
    rows = []
    for label, base_unet in (("separate base (2 forwards/step)", base), ("shared weights (1 forward/step)", None)):

        def fn(z, t, unet=unet, base_unet=base_unet):
            return guided_output(unet, base_unet, "image", z.to(dtype), t, cond, null, w1=7.0, w2=0.5, fps=16)

        ddim_sample(fn, schedule, noise, num_steps=2)  # warm-up
        sync(device)
        start = time.perf_counter()
        ddim_sample(fn, schedule, noise, num_steps=args.sample_steps)
        sync(device)
        rows.append({"mode": label, "steps": args.sample_steps, "seconds": time.perf_counter() - start})
    del unet, base
    with torch.device(device):
        vae = diffusers.AutoencoderKL(
            **(
                SD_VAE
                if not args.tiny
                else dict(SD_VAE, block_out_channels=(8, 8, 8, 8), norm_num_groups=4, layers_per_block=1)
            )
        )
    vae = (vae.to(dtype) if dtype != torch.float32 else vae).eval()
    z = torch.randn(args.frames, 4, args.latent, args.latent, device=device, dtype=dtype)
    vae.decode(z[:2])
    sync(device)
    start = time.perf_counter()
    for i in range(0, args.frames, 8):
        vae.decode(z[i : i + 8])
    sync(device)
    rows.append(
        {
            "mode": f"VAE decode of the {args.frames} frames (chunks of 8)",
            "steps": 0,
            "seconds": time.perf_counter() - start,
        }
    )
    if device.type == "cuda":
        rows.append(
            {
                "mode": "peak GPU memory while sampling (GiB)",
                "steps": 0,
                "seconds": torch.cuda.max_memory_allocated(device) / 2**30,
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny UNet, 4 frames, 8 x 8 latents (CPU smoke test)")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--sample-only", action="store_true")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help="per-GPU batch sizes")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-steps", type=int, default=50)
    args = parser.parse_args(argv)
    args.preset, args.frames, args.latent = ("tiny", 4, 8) if args.tiny else ("full", 24, 32)
    if args.tiny:
        args.batches, args.iters, args.warmup, args.sample_steps = [1, 2], 2, 1, 3

    from accelerate import Accelerator

    accelerator = Accelerator(
        mixed_precision="bf16" if torch.cuda.is_available() else "no", cpu=not torch.cuda.is_available()
    )
    device = accelerator.device
    main_process = accelerator.is_main_process
    if main_process:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        params = (
            sum(p.numel() for p in build_unet("image", unet_preset("tiny", "image")).parameters())
            if args.tiny
            else None
        )
        print(
            f"device: {name} x {accelerator.num_processes}; UNet preset {args.preset} (I2VGen-XL architecture, random "
            f"weights); video {args.frames} x {args.latent * 8} x {args.latent * 8} (latents 4 x {args.frames} x "
            f"{args.latent} x {args.latent})" + (f"; {params} parameters" if params else "")
        )
    if not args.sample_only:
        rows = bench_training(args, accelerator)
        if main_process:
            print("\ntraining (bf16 autocast, AdamW, L_ldm + L_mr)")
            print(f"{'GPUs':>4} {'batch/GPU':>9} {'s/step':>8} {'videos/s':>9} {'peak GiB':>9}  status")
            for r in rows:
                print(
                    f"{r['gpus']:>4} {r['per_gpu_batch']:>9} {r['step_s']:8.3f} {r['videos_per_s']:9.2f} "
                    f"{r['peak_gib']:9.1f}  {r['status']}"
                )
    accelerator.wait_for_everyone()
    if not args.train_only and main_process:
        if accelerator.num_processes > 1:
            print("\nsampling skipped under several processes (run it on one GPU)")
        else:
            rows = bench_sampling(args, device)
            print(
                f"\nsampling one video: DDIM {args.sample_steps} steps, eq. 3 guidance (w1 = 7, w2 = 0.5), "
                f"{'fp16' if device.type == 'cuda' else 'fp32'}"
            )
            for r in rows:
                print(f"  {r['mode']:45s} {r['seconds']:8.2f}" + (" s" if "GiB" not in r["mode"] else ""))
            print("  target: under 15 s for one video (UNet steps + decode) on one H100 / H200")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
