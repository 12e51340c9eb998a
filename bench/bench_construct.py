"""Benchmark of 4D construction (gen4d reconstruct) on a GPU: time, memory, held-out quality.

    python bench/bench_construct.py --data ../shared/data/diffusion4d_sample --presets paper,default

For each preset (and each ``--variant``) and each dataset it runs

1. a timed run: ``gen4d reconstruct`` in a fresh process (no intermediate evaluation), timed
   from spawn to exit (imports, CUDA initialisation, data load, training, every output:
   checkpoint, PLY frames, orbit video, renders, metrics), plus its own training time, peak GPU
   memory and PSNR / SSIM / LPIPS (when its weights are on disk) on the held-out views
   (Diffusion4D format: front_frame1..22 - front_frame23 repeats multi_frame23's pose and time;
   gen4d renders: the eval split);
2. unless ``--no-curves``, a second run of the same config measuring held-out PSNR every
   ``total / --curve-points`` steps (quality against iterations and training time; evaluation
   time is excluded from the times it reports).

gsplat JIT-compiles its CUDA extension on first use (about a minute): a warm-up render runs
first and its time is printed separately. Prints the device and the date; ``--json`` also
writes every number to a file.

Variants: ``--variant NAME=BASE:key=value;key=value`` adds a config derived from preset BASE,
e.g. ``--variant short=default:fine.iterations=1000;coarse.iterations=500`` or ``--variant
mcmc=default:densify=mcmc;densify.cap=150000`` (a union field takes a class name, then its fields).

``--untimed PRESETS``: those presets' runs (for example the ``paper`` reference, whose quality
is wanted but not its time) all run at once, before the timed runs, sharing the GPU; their
times are not reported. ``--results FILE`` writes one record per run (data, preset, device,
date, wall_s, train_s, psnr, ssim, iou, gaussians: the first held-out split) and ``--sheets
DIR`` a sheet of six held-out renders per run (``--sheet-truth``: the ground truth above them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen4d.config import from_dict, parse_assignments, set_fields, to_dict  # noqa: E402
from gen4d.recon.construct import PRESETS, ConstructConfig, reconstruct  # noqa: E402


def override(config: ConstructConfig, assignments: str) -> ConstructConfig:
    """``config`` with ``key=value;key=value`` dotted overrides (gen4d.config.set_fields)."""
    try:
        return set_fields(config, parse_assignments(assignments))
    except ValueError as err:
        raise SystemExit(f"--variant: {err}") from None


def configs(args) -> dict[str, ConstructConfig]:
    out = {}
    for name in filter(None, args.presets.split(",")):
        if name not in PRESETS:
            raise SystemExit(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
        out[name] = PRESETS[name]
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        base, _, assignments = rest.partition(":")
        if base not in PRESETS:
            raise SystemExit(f"--variant {spec!r}: unknown base preset {base!r}")
        out[name] = override(PRESETS[base], assignments)
    return out


def timed_run(data: str, config: ConstructConfig, run_dir: Path) -> tuple[dict, float]:
    """Run ``gen4d reconstruct`` in a fresh process (what a user runs) and time it from spawn to
    exit; returns (its metrics.json, wall seconds)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir.parent / f"{run_dir.name}_config.json"
    config_file.write_text(json.dumps(to_dict(config)))
    command = [sys.executable, "-m", "gen4d.cli", "reconstruct", str(data), "--out", str(run_dir),
               "--config", str(config_file), "--overwrite", "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(
            f"gen4d reconstruct failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads((run_dir / "metrics.json").read_text()), wall


def start_run(data: str, config: ConstructConfig, run_dir: Path) -> subprocess.Popen:
    """Start ``gen4d reconstruct`` in the background (an untimed run)."""
    # Quality only: no orbit video or PLY sequence (held-out renders and metrics are kept).
    config = from_dict(
        ConstructConfig, {**to_dict(config), "output": {**to_dict(config.output), "video": False, "ply": False}}
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir.parent / f"{run_dir.name}_config.json"
    config_file.write_text(json.dumps(to_dict(config)))
    command = [sys.executable, "-m", "gen4d.cli", "reconstruct", str(data), "--out", str(run_dir),
               "--config", str(config_file), "--overwrite", "--no-progress"]  # fmt: skip
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])


def write_sheet(dataset, run_dir: Path, split: str, path: Path, truth: bool, count: int = 6) -> None:
    """The run's held-out renders of six views spread over the split (one row), with the ground truth
    (on white) above them when ``truth`` (only for data the project makes: sheets of the shared data
    are committed without its images)."""
    from PIL import Image

    from gen4d.recon.outputs import image_names

    index = dataset.splits[split]
    names = image_names(dataset, index)
    rendered = [i for i, name in enumerate(names) if (run_dir / "renders" / split / f"{name}.png").is_file()]
    picks = [rendered[round(i * (len(rendered) - 1) / max(count - 1, 1))] for i in range(min(count, len(rendered)))]
    size, rows = dataset.width, 2 if truth else 1
    sheet = Image.new("RGB", (size * len(picks), size * rows), "white")
    for column, pick in enumerate(picks):
        if truth:
            rgb = dataset.images[index[pick]]
            if dataset.alphas is not None:
                alpha = dataset.alphas[index[pick]]
                rgb = rgb * alpha + (1 - alpha)
            sheet.paste(Image.fromarray((rgb.clamp(0, 1) * 255).round().byte().numpy()), (column * size, 0))
        render = Image.open(run_dir / "renders" / split / f"{names[pick]}.png").convert("RGB").resize((size, size))
        sheet.paste(render, (column * size, size * (rows - 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def warm_up() -> float:
    """Render once on the GPU so gsplat's one-time JIT compile is not inside a timed run."""
    from gen4d.cameras import orbit
    from gen4d.gaussians import random_in_sphere
    from gen4d.render import RenderOptions, render

    start = time.perf_counter()
    g = random_in_sphere(1000).to("cuda")
    g = g.with_(means=g.means.requires_grad_())
    out = render(g, orbit(0.0, [0.0, 90.0], 2.0, 40.0, 64, 64).to("cuda"), options=RenderOptions(backend="gsplat"))
    out.rgb.sum().backward()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder(s), comma-separated")
    parser.add_argument("--presets", default="paper,default", help="comma-separated presets (default: paper,default)")
    parser.add_argument("--variant", action="append", default=[], help="NAME=BASE:key=value;key=value (repeatable)")
    parser.add_argument(
        "--out", default="bench_out/construct", help="folder for the runs (default: bench_out/construct)"
    )
    parser.add_argument("--curve-points", type=int, default=8, help="held-out evaluations per curve run (default 8)")
    parser.add_argument("--no-curves", action="store_true", help="skip the quality-vs-iterations runs")
    parser.add_argument(
        "--curve-presets", default=None, help="comma-separated presets / variants that get a curve run (default: all)"
    )
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--untimed", default="", help="comma-separated presets run all at once first, not timed")
    parser.add_argument(
        "--results", default=None, help="write one record per run to this JSON file (docs/results/construct.json)"
    )
    parser.add_argument("--sheets", default=None, help="folder for sheets of held-out renders (one row per run)")
    parser.add_argument(
        "--sheet-truth", action="store_true", help="put the ground truth above the renders (for data you made yourself)"
    )
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("warning: no CUDA device; this benchmark is meant for a GPU (running on the CPU reference)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    try:
        import gsplat

        gsplat_version = gsplat.__version__
    except ImportError:
        gsplat_version = "not installed"
    print(f"# gen4d 4D construction benchmark  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# device: {device}; torch {torch.__version__}; gsplat {gsplat_version}; python {platform.python_version()}")
    results: dict = {"date": datetime.datetime.now().isoformat(), "device": device, "runs": []}
    if torch.cuda.is_available():
        warm = warm_up()
        print(f"# warm-up render (includes gsplat's one-time JIT compile when not cached): {warm:.1f} s")
        results["warm_up_s"] = warm

    out_root = Path(args.out)
    rows = []
    records = []
    sheet_data: dict = {}
    untimed = set(filter(None, args.untimed.split(",")))
    background = {}
    for data in filter(None, args.data.split(",")):
        for name, config in configs(args).items():
            if name in untimed:
                background[(data, name)] = start_run(data, config, out_root / Path(data).name / name / "timed")
    for (data, name), process in background.items():
        if process.wait() != 0:
            print(
                f"FAILED (untimed): {Path(data).name} / {name}; see {out_root / Path(data).name / name / 'timed.log'}",
                flush=True,
            )
    for data in filter(None, args.data.split(",")):
        data_name = Path(data).name
        for name, config in configs(args).items():
            run_dir = out_root / data_name / name
            try:
                if name in untimed:
                    metrics = json.loads((run_dir / "timed" / "metrics.json").read_text())
                    process_wall = float("nan")
                else:
                    metrics, process_wall = timed_run(data, config, run_dir / "timed")
                entry = {"data": data_name, "preset": name, "config": to_dict(config), "timed": metrics,
                         "process_wall_s": process_wall}  # fmt: skip
                wants_curve = (
                    args.curve_presets is None or name in args.curve_presets.split(",")
                ) and name not in untimed
                if not args.no_curves and wants_curve:
                    every = max(config.total_iterations // max(args.curve_points, 1), 1)
                    curve_config = from_dict(ConstructConfig, {**to_dict(config), "eval_every": every,
                                                               "output": {**to_dict(config.output), "ply": False, "video": False, "renders": False}})  # fmt: skip
                    curve = reconstruct(
                        data, curve_config, run_dir / "curve", progress=False, echo=None, overwrite=True
                    )
                    entry["curve"] = curve["history"]
            except Exception:  # report and go on with the other presets
                print(f"FAILED: {data_name} / {name}:\n{traceback.format_exc()}", flush=True)
                results["runs"].append({"data": data_name, "preset": name, "error": traceback.format_exc()})
                continue
            results["runs"].append(entry)
            held = [s for s in metrics["heldout"]] or ["train"]
            split = held[0]
            values = metrics["splits"][split]
            lp = "n/a" if values["lpips"] is None else f"{values['lpips']:.4f}"
            rows.append((data_name, name, config.coarse.iterations, config.fine.iterations, config.coarse.cameras_per_step,
                         process_wall, metrics["train_time_s"], metrics.get("peak_gpu_mib", float("nan")),
                         metrics["num_gaussians"], split, values["psnr"], values["ssim"], lp, metrics["wall_time_s"]))  # fmt: skip
            print(
                f"done: {data_name} / {name}: {split} PSNR {values['psnr']:.2f} IoU {values.get('iou')} in {process_wall:.1f} s; "
                f"turn {None if not metrics.get('turn') else {k: metrics['turn'].get(k) for k in ('kept', 'gain')}}",
                flush=True,
            )
            records.append({
                "data": data_name, "preset": name, "device": device, "date": results["date"][:10],
                "wall_s": None if name in untimed else round(process_wall, 1),
                "train_s": None if name in untimed else metrics["train_time_s"],
                "timing_note": "run concurrently with other untimed runs: no time reported" if name in untimed else
                "a fresh gen4d reconstruct process, spawn to exit, alone on the GPU",
                "heldout": split, "psnr": round(values["psnr"], 3), "ssim": round(values["ssim"], 4),
                "iou": None if values.get("iou") is None else round(values["iou"], 4),
                "gaussians": metrics["num_gaussians"],
                "turn": None if not metrics.get("turn") else
                {k: metrics["turn"].get(k) for k in ("kept", "gain", "largest_degrees")},
            })  # fmt: skip
            if args.results:  # after every run: a run cut short by a time limit keeps what it measured
                write_records(args.results, records)
            if args.sheets and split != "train":
                if data not in sheet_data:  # read once per dataset, not once per preset
                    from gen4d.data.dataset import load_dataset

                    sheet_data[data] = load_dataset(data)
                sheet = Path(args.sheets) / f"{data_name}_{name}.png"
                write_sheet(sheet_data[data], run_dir / "timed", split, sheet, args.sheet_truth)

    print()
    print("wall s = a fresh `gen4d reconstruct` process from start to exit (imports, CUDA init, data load, training,")
    print("all outputs); in-run s = the same without interpreter start-up and imports; train s = optimisation only.")
    print(
        "| data | preset | coarse | fine | cams/step | wall s | in-run s | train s | peak GPU MiB | Gaussians | held-out | PSNR | SSIM | IoU | LPIPS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r, record in zip(rows, records):
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.1f} | {r[13]:.1f} | {r[6]:.1f} | {r[7]:.0f} | {r[8]} | {r[9]} | {r[10]:.2f} | {r[11]:.4f} | {record['iou']} | {r[12]} |"
        )
    if not args.no_curves:
        print("\nQuality vs iterations and training time (held-out PSNR; evaluation time excluded):")
        for entry in results["runs"]:
            if "error" in entry or "curve" not in entry:
                continue
            keys = [k for k in (entry.get("curve") or [{}])[0] if k.endswith("_psnr")]
            points = ", ".join(
                f"{h['step']} it / {h['train_time_s']:.1f} s: " + "/".join(f"{h[k]:.2f}" for k in keys)
                for h in entry.get("curve", [])
            )
            print(f"  {entry['data']} / {entry['preset']} ({'/'.join(keys)}): {points}")
    by_data: dict = {}
    for record in records:
        by_data.setdefault(record["data"], {})[record["preset"]] = record
    gaps = []
    for data_name, runs in by_data.items():
        if "paper" in runs and "default" in runs:
            gap = runs["default"]["psnr"] - runs["paper"]["psnr"]
            gaps.append(gap)
            print(f"{data_name}: default - paper = {gap:+.2f} dB PSNR; default IoU {runs['default']['iou']}, "
                  f"wall {runs['default']['wall_s']} s")  # fmt: skip
    if gaps:
        ious = [
            runs["default"]["iou"]
            for runs in by_data.values()
            if "default" in runs and runs["default"]["iou"] is not None
        ]
        walls = [
            runs["default"]["wall_s"] for runs in by_data.values() if runs.get("default", {}).get("wall_s") is not None
        ]
        print(f"\ndefault - paper over {len(gaps)} datasets: mean {sum(gaps) / len(gaps):+.2f} dB, min {min(gaps):+.2f} dB "
              f"(target: mean >= +1.5, min >= 0); min IoU {min(ious) if ious else None} (target >= 0.95); "
              f"max wall {max(walls) if walls else None} s (target <= 30)")  # fmt: skip
    if args.results:
        write_records(args.results, records)
        print(f"run records written to {args.results}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nresults written to {args.json}")
    return 0


def write_records(path: str, records: list[dict]) -> None:
    """The run records as JSON, replaced atomically (a reader never sees half a file)."""
    from gen4d.io import atomic_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    sys.exit(main())
