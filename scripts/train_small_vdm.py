"""Train gen4d's small Diffusion4D-style video model from scratch and measure what it can do.

Two subcommands:

``prepare`` (CPU machine with bpy): render procedural animated creatures (gen4d.data.procedural)
with ``gen4d render`` into a data folder: per asset the 24-view orbit V and the static orbit V-bar
at 64 x 64 RGBA (about 0.4 MB per asset). Resumable; rerun to complete.

    python scripts/train_small_vdm.py prepare --out runs/vdm_data/small64 --count 64

``train`` (GPU machine; no bpy needed): within a fixed time budget
  1. a 3D-aware base model on the static orbits (task=static; plays VideoMV's role),
  2. the 4D-aware model fine-tuned from it with the motion embedding and L_mr (omega = 1),
  3. the same without L_mr (omega = 0), for the ablation,
then, on held-out assets, prints the training curves, the motion-control check (Pearson / Spearman
correlation between requested m and m measured on generated videos) and the ablation (motion and
fidelity with / without L_mr and the 3D-aware guidance), and writes everything to OUT/report.json.

    python scripts/train_small_vdm.py train --data runs/vdm_data/small64 --out runs/small_vdm --minutes 6
    accelerate launch --multi_gpu --num_processes 2 scripts/train_small_vdm.py train --data ... --out ... --minutes 6

The budget is split 25 / 37.5 / 37.5 % over the three trainings (--minutes covers training only;
evaluation adds about a minute). Re-running resumes / skips finished phases (--fresh starts over).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------------ prepare


def asset_names(count: int, seed: int = 0) -> list[str]:
    """Procedural asset names: varied creatures, motions and magnitudes, ~1 in 10 motionless."""
    rng = random.Random(seed)
    names = []
    for i in range(count):
        creature = 1000 + i
        if i % 10 == 9:
            names.append(f"procedural:{creature}:motion=still")
        else:
            names.append(f"procedural:{creature}:magnitude={round(rng.uniform(0.15, 1.0), 2)}")
    return names


def prepare(args: argparse.Namespace) -> int:
    from gen4d.data.blender import RenderConfig, render_asset

    out = Path(args.out)
    config = RenderConfig(sets=("orbit", "static_orbit"), num_frames=args.frames, size=args.size, samples=args.samples)
    names = asset_names(args.count, args.seed)
    started = time.time()
    for i, name in enumerate(names):
        folder = out / name.replace("procedural:", "p").replace(":", "_").replace("=", "").replace(",", "_")
        t0 = time.time()
        try:
            render_asset(name, folder, config, progress=False)
        except (ValueError, RuntimeError) as err:  # an asset that cannot be rendered is skipped, not fatal
            print(f"[{i + 1}/{len(names)}] {name}: skipped ({err})", flush=True)
            continue
        (folder / "render.log").unlink(missing_ok=True)
        print(f"[{i + 1}/{len(names)}] {name} -> {folder} ({time.time() - t0:.0f} s)", flush=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(names)} assets in {out}: {size / 1e6:.1f} MB, {time.time() - started:.0f} s")
    return 0


# -------------------------------------------------------------------------------------------- train


def split_data(data: Path, held_out: int) -> tuple[list[Path], list[Path]]:
    from gen4d.train.data import find_datasets

    folders = find_datasets([data])
    if len(folders) <= held_out:
        raise SystemExit(f"{data}: {len(folders)} datasets; need more than --held-out {held_out}")
    rng = random.Random(1234)
    test = sorted(rng.sample(folders, held_out))
    return [f for f in folders if f not in test], test


def phase_config(args, name: str, train: list[Path], minutes: float, **changes):
    from gen4d.config import set_fields
    from gen4d.train.config import TRAIN_PRESETS

    config = copy.deepcopy(TRAIN_PRESETS["small"])
    config.data.paths = tuple(str(p) for p in train)
    config.data.size = args.size
    config.data.num_frames = args.frames
    config.model.arch = args.arch
    config.out = str(Path(args.out) / name)
    config.optim.minutes = minutes
    config.optim.steps = args.max_steps
    config.optim.batch_size = args.batch_size
    config.optim.lr = args.lr
    config.optim.warmup_steps = args.warmup
    config.optim.mixed_precision = args.mixed_precision
    config.log_every = 10
    config.checkpoint_every = 500
    config.seed = args.seed
    return set_fields(config, changes)


def run_phase(config) -> dict:
    from gen4d.train.vdm import train_vdm

    model = Path(config.out) / "model" / "model.json"
    if model.is_file():
        print(f"{config.out}: already trained (delete it or pass --fresh to retrain)")
        return {"step": None, "model": str(model.parent), "main": True}
    started = time.time()
    result = train_vdm(config, progress=False)
    result["wall_s"] = round(time.time() - started, 1)
    return result


def curve(run: Path, points: int = 8) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return []
    # average the logged losses in `points` windows
    out = []
    size = max(1, math.ceil(len(rows) / points))
    for i in range(0, len(rows), size):
        window = rows[i : i + size]
        out.append(
            {
                "step": window[-1]["step"],
                "loss": sum(r["loss"] for r in window) / len(window),
                "ldm": sum(r["ldm"] for r in window) / len(window),
                "mr": sum(r["mr"] for r in window) / len(window),
                "elapsed_s": window[-1]["elapsed_s"],
            }
        )
    return out


def _pearson(x: list[float], y: list[float]) -> float:
    xs, ys = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    denom = float(xs.norm() * ys.norm())
    return float((xs * ys).sum()) / denom if denom > 0 else float("nan")


def _spearman(x: list[float], y: list[float]) -> float:
    rank = lambda v: torch.tensor(v, dtype=torch.float64).argsort().argsort().double()  # noqa: E731
    return _pearson(rank(x).tolist(), rank(y).tolist())


@torch.no_grad()
def sample_batch(model, clips, index, motions, w1, w2, steps, seed, static: bool = False):
    """Generate videos for clips[index] (condition: V's first view) at the given motions (one per row).
    Returns decoded (rgb, alpha) (B, T, H, W, .) on the CPU."""
    from gen4d.diffusion.vdm.model import VideoCondition, image_condition_latents, null_condition
    from gen4d.diffusion.vdm.sampling import ddim_sample, guided_output

    device = model.device
    z_front = clips.latents[index][:, :, 0].to(device).float()
    latents = image_condition_latents(z_front, clips.latents.shape[2])
    cond = VideoCondition(latents=latents)
    null = null_condition(cond, keep_latents=model.spec.null_condition == "keep_latents")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(index),) + tuple(clips.latents.shape[1:]), generator=gen).to(device)
    if static:
        base = model.base_unet if model.base_unet is not None else model.unet
        fn = lambda z, t: guided_output(  # noqa: E731
            base,
            None,
            model.spec.variant,
            z,
            t,
            cond,
            null,
            w1=w1,
            w2=0.0,
            fps=model.spec.fps,
        )
    else:
        moving = VideoCondition(latents=latents, motion=torch.tensor(motions, dtype=torch.float32, device=device))
        fn = lambda z, t: guided_output(  # noqa: E731
            model.unet,
            model.base_unet,
            model.spec.variant,
            z,
            t,
            moving,
            null,
            w1=w1,
            w2=w2,
            fps=model.spec.fps,
        )
    z0 = ddim_sample(fn, model.schedule, noise, steps)
    rgb, alpha = model.codec.decode(z0)
    return rgb.cpu(), alpha.cpu()


def white(rgb, alpha):
    return rgb * alpha + (1 - alpha)


def evaluate(args, train: list[Path], test: list[Path]) -> dict:
    from gen4d.diffusion.vdm.components import load_video_model
    from gen4d.metrics.image import psnr
    from gen4d.metrics.motion import motion_magnitude
    from gen4d.train.data import load_clips

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    models = {name: load_video_model(out / name / "model", device=device) for name in ("d4_mr", "d4_nomr")}
    codec = models["d4_mr"].codec
    clips = load_clips(test, args.size, args.frames, codec.encode, "pixel:eval", dtype=torch.float32)
    gt_rgb, gt_alpha = codec.decode(clips.latents)
    st_rgb, st_alpha = codec.decode(clips.static_latents)
    gt_v, gt_vbar = white(gt_rgb, gt_alpha), white(st_rgb, st_alpha)
    n = len(clips)
    index = torch.arange(n)
    stats = models["d4_mr"].spec.motion_stats
    report: dict = {
        "held_out": [p.name for p in test],
        "held_out_paths": [str(p) for p in test],
        "train_assets": len(train),
        "motion_stats": stats,
        "gt_motion": clips.motion.tolist(),
    }

    # static orbit V-bar' from the base model (same noise), the reference for measured motion
    sv_rgb, sv_alpha = sample_batch(
        models["d4_mr"], clips, index, None, args.static_guidance - 1, 0.0, args.steps, seed=7, static=True
    )
    gen_vbar = white(sv_rgb, sv_alpha)
    report["static_psnr_vs_gt_static"] = float(psnr(gen_vbar.flatten(0, 1), gt_vbar.flatten(0, 1)).mean())

    # motion control: requested m on a grid of the training distribution, measured on the results
    grid = [0.0, stats["q10"], stats["median"], stats["q90"], stats["max"]]
    requested, measured_gen, measured_gt = [], [], []
    rows_index = index.repeat_interleave(len(grid))
    rows_m = grid * n
    rgb, alpha = sample_batch(models["d4_mr"], clips, rows_index, rows_m, args.w1, args.w2, args.steps, seed=7)
    v = white(rgb, alpha)
    for r in range(len(rows_m)):
        requested.append(rows_m[r])
        measured_gen.append(float(motion_magnitude(v[r], gen_vbar[rows_index[r]])))
        measured_gt.append(float(motion_magnitude(v[r], gt_vbar[rows_index[r]])))
    report["motion_control"] = {
        "grid": grid,
        "requested": requested,
        "measured_vs_generated_static": measured_gen,
        "measured_vs_gt_static": measured_gt,
        "pearson": _pearson(requested, measured_gen),
        "spearman": _spearman(requested, measured_gen),
        "pearson_vs_gt_static": _pearson(requested, measured_gt),
        "mean_measured_by_request": [sum(measured_gen[i :: len(grid)]) / n for i in range(len(grid))],
    }

    # ablation at each held-out asset's own m: L_mr x 3D-aware guidance
    ablation = {}
    for name in ("d4_nomr", "d4_mr"):
        for w2 in (0.0, args.w2):
            rgb, alpha = sample_batch(
                models[name], clips, index, clips.motion.tolist(), args.w1, w2, args.steps, seed=11
            )
            v = white(rgb, alpha)
            m = [float(motion_magnitude(v[i], gen_vbar[i])) for i in range(n)]
            ablation[f"{'with' if name == 'd4_mr' else 'without'} L_mr, w2={w2}"] = {
                "mean_measured_m": sum(m) / n,
                "mean_abs_m_error": sum(abs(a - b) for a, b in zip(m, clips.motion.tolist())) / n,
                "psnr_vs_gt_orbit": float(psnr(v.flatten(0, 1), gt_v.flatten(0, 1)).mean()),
            }
    report["ablation"] = ablation
    report["gt_mean_m"] = float(clips.motion.mean())
    from gen4d.data.dataset import load_dataset

    report["held_out_front_image"] = load_dataset(test[0]).split("orbit").files[0]
    return report


def train(args: argparse.Namespace) -> int:
    import shutil

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    train_set, test_set = split_data(Path(args.data), args.held_out)
    budget = args.minutes
    phases = [
        ("base", phase_config(args, "base", train_set, 0.25 * budget, task="static")),
        (
            "d4_mr",
            phase_config(
                args,
                "d4_mr",
                train_set,
                0.375 * budget,
                task="4d",
                **{"model.init": str(out / "base" / "model"), "mr_weight": args.omega},
            ),
        ),
        (
            "d4_nomr",
            phase_config(
                args,
                "d4_nomr",
                train_set,
                0.375 * budget,
                task="4d",
                **{"model.init": str(out / "base" / "model"), "mr_weight": 0.0},
            ),
        ),
    ]
    results, main = {}, True
    for name, config in phases:
        result = run_phase(config)
        main = result.get("main", True)
        results[name] = {k: result.get(k) for k in ("step", "stopped_by", "wall_s", "clips")}
    if not main:
        return 0
    report = {
        "phases": results,
        "curves": {name: curve(out / name) for name, _ in phases},
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
    }
    started = time.time()
    report.update(evaluate(args, train_set, test_set))
    report["eval_s"] = round(time.time() - started, 1)
    weights = out / "d4_mr" / "model"
    report["weights_mb"] = round(sum(p.stat().st_size for p in weights.iterdir()) / 1e6, 2)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return 0


def print_report(report: dict) -> None:
    print("\n== training (loss averaged in windows) ==")
    for name, rows in report["curves"].items():
        phase = report["phases"].get(name, {})
        print(f"{name}: {phase.get('step')} steps ({phase.get('stopped_by')}), {phase.get('wall_s')} s")
        for r in rows:
            print(
                f"  step {r['step']:6d}  loss {r['loss']:.4f}  ldm {r['ldm']:.4f}  mr {r['mr']:.3e}  t {r['elapsed_s']:.0f}s"
            )
    mc = report["motion_control"]
    print("\n== motion control (held-out conditions; m measured against the base model's static orbit) ==")
    for m, got in zip(mc["grid"], mc["mean_measured_by_request"]):
        print(f"  requested m {m:.4f} -> measured {got:.4f}")
    print(
        f"  Pearson {mc['pearson']:.3f}  Spearman {mc['spearman']:.3f}  (vs ground-truth static orbit: "
        f"Pearson {mc['pearson_vs_gt_static']:.3f})"
    )
    print(f"\n== ablation (held-out, m = each asset's own; ground-truth mean m {report['gt_mean_m']:.4f}) ==")
    print(f"  {'setting':28s} {'mean m':>9s} {'|m err|':>9s} {'PSNR':>7s}")
    for name, row in report["ablation"].items():
        print(
            f"  {name:28s} {row['mean_measured_m']:9.4f} {row['mean_abs_m_error']:9.4f} {row['psnr_vs_gt_orbit']:7.2f}"
        )
    print(
        f"\nstatic orbit from the base model: PSNR {report['static_psnr_vs_gt_static']:.2f} vs ground truth; "
        f"weights {report['weights_mb']} MB; eval {report['eval_s']} s"
    )
    out = Path(report["settings"]["out"])
    front = report.get("held_out_front_image")
    print("\nimage -> orbital video -> 4D on a held-out asset:")
    print(f"  gen4d sample-vdm {out / 'd4_mr' / 'model'} --image {front} --out {out / 'gen'}")
    print(f"  gen4d reconstruct {out / 'gen'} --out {out / 'recon'} --preset demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="render the training data (needs bpy)")
    p.add_argument("--out", default="runs/vdm_data/small64")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--samples", type=int, default=16, help="Cycles samples per pixel (denoised)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=prepare)
    t = sub.add_parser("train", help="train base + 4D models within a time budget and evaluate them")
    t.add_argument("--data", default="runs/vdm_data/small64")
    t.add_argument("--out", default="runs/small_vdm")
    t.add_argument("--minutes", type=float, default=6.0, help="training budget over the three phases")
    t.add_argument("--size", type=int, default=64)
    t.add_argument("--frames", type=int, default=24)
    t.add_argument("--arch", default="small", help="UNet preset (tiny for a CPU smoke test)")
    t.add_argument("--held-out", type=int, default=6)
    t.add_argument("--batch-size", type=int, default=16, help="global batch")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="learning-rate warm-up steps per phase (a few-minute phase makes only a few hundred steps)",
    )
    t.add_argument("--omega", type=float, default=1.0, help="weight of L_mr")
    t.add_argument(
        "--max-steps", type=int, default=100000, help="step cap per phase (the time budget normally stops first)"
    )
    t.add_argument("--mixed-precision", default="bf16", choices=["no", "fp16", "bf16"])
    t.add_argument("--steps", type=int, default=50, help="DDIM steps at evaluation")
    t.add_argument("--w1", type=float, default=7.0)
    t.add_argument("--w2", type=float, default=0.5)
    t.add_argument("--static-guidance", type=float, default=7.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--fresh", action="store_true", help="delete OUT first")
    t.set_defaults(func=train)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
