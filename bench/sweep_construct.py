"""Settings sweep for 4D construction: many configs x datasets, several runs at once on one GPU.

    python bench/sweep_construct.py --data DIR[,DIR...] --variants default,default+ns+rig0.01 --json sweep.json

For choosing settings on data rendered for that purpose (never on a benchmark's held-out views).
Each run trains in-process with no outputs but the held-out metrics (PSNR, SSIM, silhouette IoU);
time the chosen preset with ``bench/bench_construct.py``. Variants are named by tokens on a
preset (see :func:`variant`), e.g. ``default+ns+rig0.01`` or, with ``--base demo``, ``base+ns``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# Variant tokens: name -> the dotted config fields it sets, from the token's number and the config so far.
TOKENS = {
    "ns": lambda n, c: {"deform.field.deform_scale": False},  # no scale deformation
    "rig": lambda n, c: {"loss.rigidity": float(n)},  # rigidity weight (anchors drawn: see variant)
    "iso": lambda n, c: {"loss.isometry": float(n)},  # isometry weight
    "anch": lambda n, c: {"deform.rigidity.samples": int(n)},  # rigidity anchors per step
    "sc": lambda n, c: {"coarse.orbit": False},  # coarse stage on the static orbit alone
    "fs": lambda n, c: {"fine.static_orbit": True},  # fine stage also on the static orbit
    "tw": lambda n, c: {"fine.time_window": float(n)},  # fine stage coarse-to-fine in time
    "ts": lambda n, c: {"loss.time_smoothness": float(n)},  # time-smoothness weight
    "alpha": lambda n, c: {"loss.alpha": float(n)},  # mask loss weight
    "nd": lambda n, c: {"fine.densify": False},  # no densification in the fine stage
    "clr": lambda n, c: {"fine.canonical_lr": float(n)},  # canonical learning-rate factor, fine stage
    "c": lambda n, c: {"coarse.iterations": int(n)},  # coarse steps
    "f": lambda n, c: {"fine.iterations": int(n)},  # fine steps
    "cams": lambda n, c: {"coarse.cameras_per_step": int(n), "fine.cameras_per_step": int(n)},  # images per step
    "tres": lambda n, c: {"deform.field.resolution": c.deform.field.resolution[:3] + (int(n),)},  # HexPlane time
    "sres": lambda n, c: {"deform.field.resolution": (int(n),) * 3 + c.deform.field.resolution[3:]},  # HexPlane space
    "cp": lambda n, c: {"deform.field": "control_points"},  # control-point field
}


def variant(name: str, base: str = "default"):
    """A config from a name: a preset, or ``BASE+token+token...`` with the tokens of :data:`TOKENS`
    (a name and an optional number, e.g. ``default+ns+rig0.01+c1000``; ``base`` is ``--base``)."""
    import re

    from gen4d.config import set_fields
    from gen4d.recon.construct import PRESETS

    head, *tokens = name.split("+")
    preset = base if head == "base" else head
    config = PRESETS[preset]
    for token in tokens:
        number = re.sub(r"^[a-z]+", "", token)
        key = token[: len(token) - len(number)]
        if key not in TOKENS:
            raise SystemExit(f"unknown variant token {token!r} in {name!r}; known: {', '.join(TOKENS)}")
        try:
            config = set_fields(config, TOKENS[key](number, config))
        except (AttributeError, ValueError) as err:
            raise SystemExit(f"variant token {token!r} in {name!r}: {err}") from None
    if (config.loss.rigidity or config.loss.isometry) and not config.deform.rigidity.samples:
        # rigidity / isometry weights need anchors: 4096 per step on the GPU preset, 512 elsewhere
        config = set_fields(config, {"deform.rigidity.samples": 4096 if preset == "default" else 512})
    return config


def run_one(job) -> dict:
    from gen4d.data.dataset import load_dataset
    from gen4d.recon.construct import reconstruct

    data, name, out, quick, base = job
    config = variant(name, base)
    if quick:  # a smoke test of the script itself
        config = replace(
            config, size=64, coarse=replace(config.coarse, iterations=20), fine=replace(config.fine, iterations=20)
        )
    config = replace(config, output=replace(config.output, ply=False, video=False, renders=False, lpips=False))
    dataset = load_dataset(data, size=config.size or None)
    start = time.perf_counter()
    metrics = reconstruct(
        dataset, config, Path(out) / Path(data).name / name, overwrite=True, progress=False, echo=None
    )
    wall = time.perf_counter() - start
    held = set(metrics["heldout"])
    result = {"data": Path(data).name, "variant": name, "wall_s": round(wall, 1), "gaussians": metrics["num_gaussians"]}
    for split, values in metrics["splits"].items():
        result[f"{split}_psnr"] = round(values["psnr"], 3)
        result[f"{split}_ssim"] = round(values["ssim"], 4)
        if split in held:  # silhouette IoU of the held-out views (gen4d.eval.split.silhouette_iou; None without alpha)
            iou = values.get("iou")
            result[f"{split}_iou"] = None if iou is None else round(iou, 4)
    return result


def worker(job):
    try:
        return run_one(job)
    except Exception:
        return {"data": Path(job[0]).name, "variant": job[1], "error": traceback.format_exc()[-2000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folders, comma-separated")
    parser.add_argument("--variants", required=True, help="comma-separated variant names (see variant())")
    parser.add_argument("--procs", type=int, default=4, help="runs at once (default 4)")
    parser.add_argument("--out", default="bench_out/sweep", help="folder for the runs")
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--base", default="default", help="preset the variants derive from (demo: CPU-sized)")
    parser.add_argument(
        "--quick", action="store_true", help="20 + 20 steps at 64 px (checks the script, not the settings)"
    )
    args = parser.parse_args()
    names = args.variants.split(",")
    for name in names:
        variant(name, args.base)  # fail on a bad name before any work
    jobs = [(d, n, args.out, args.quick, args.base) for n in names for d in args.data.split(",") if d]
    print(
        f"# sweep {datetime.datetime.now().isoformat(timespec='seconds')}: {len(jobs)} runs, {args.procs} at once",
        flush=True,
    )
    results = []
    # Several processes on one GPU time-slice it (measured: 8 at once ran each about 6x slower
    # than alone), so --procs > 1 only helps on a CPU with idle cores.
    if args.procs == 1:
        outputs = map(worker, jobs)
    else:
        outputs = mp.get_context("spawn").Pool(args.procs).imap_unordered(worker, jobs)
    for result in outputs:
        results.append(result)
        print(json.dumps(result), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    splits = sorted(
        {k[: -len("_psnr")] for r in results for k in r if k.endswith("_psnr") and not k.startswith("train")}
    )
    print(
        "\n| variant | data | "
        + " | ".join(f"{s} PSNR / SSIM / IoU" for s in splits)
        + " | train PSNR | Gaussians | s |"
    )
    for name in names:
        for r in sorted((r for r in results if r["variant"] == name), key=lambda r: r["data"]):
            if "error" in r:
                print(f"| {name} | {r['data']} | FAILED |")
                continue
            cells = " | ".join(
                f"{r.get(s + '_psnr', float('nan')):.2f} / {r.get(s + '_ssim', float('nan')):.3f} / {r.get(s + '_iou')}"
                for s in splits
            )
            print(
                f"| {name} | {r['data']} | {cells} | {r.get('train_psnr', float('nan')):.2f} | {r['gaussians']} | {r['wall_s']} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
