"""Training steps per second of 4D construction (no outputs), for before/after comparisons.

    python bench/bench_steps.py --data ../shared/data/diffusion4d_sample --presets default,paper --steps 600

Runs each preset for ``--steps`` steps in the fine (dynamic) stage and in the coarse stage
separately (a short warm-up first, excluded), synchronising the GPU only around the timed span,
and prints steps per second. Run it from two checkouts to compare code versions; with
``--sync-debug`` it also counts host-device synchronisations per step through
``torch.cuda.set_sync_debug_mode("warn")``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from gen4d.config import load_config, parse_assignments, set_fields
    from gen4d.data.dataset import load_dataset
    from gen4d.recon.construct import PRESETS, ConstructConfig, reconstruct, with_iterations

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument(
        "--presets",
        default="default,paper",
        help="NAME (a preset), NAME=CONFIG.json or NAME=PRESET:key=value;key=value, comma-separated",
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--out", default="bench_out/steps")
    parser.add_argument("--sync-debug", action="store_true", help="count host-device syncs (slower; separate runs)")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        help="also profile this many steps of each stage (torch.profiler) and print the top ops",
    )
    args = parser.parse_args()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"# steps/s {datetime.datetime.now().isoformat(timespec='seconds')} {device} torch {torch.__version__}")
    print(f"# code: {Path(__file__).resolve().parents[1]}")
    dataset = load_dataset(args.data)
    for entry in args.presets.split(","):
        name, _, spec = entry.partition("=")
        if ":" in spec:  # NAME=BASE:key=value;key=value
            source, _, assignments = spec.partition(":")
            base = set_fields(PRESETS[source], parse_assignments(assignments))
        else:
            base = load_config(ConstructConfig, spec) if spec else PRESETS[name]
        quiet = replace(base.output, ply=False, video=False, renders=False, lpips=False, evaluate=False)
        for stage in ("coarse", "fine"):
            warm = 50
            # The coarse timing includes the run's set-up; the fine one resumes after warm coarse steps.
            coarse, fine = (warm + args.steps, 0) if stage == "coarse" else (warm, args.steps)
            config = replace(with_iterations(base, coarse, fine), output=quiet, log_every=100, checkpoint_every=0)
            run = Path(args.out) / f"{name}_{stage}"
            if stage == "fine":
                reconstruct(dataset, config, run, overwrite=True, progress=False, echo=None, stop_after=warm)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            start = time.perf_counter()
            reconstruct(
                dataset, config, run, resume=stage == "fine", overwrite=stage == "coarse", progress=False, echo=None
            )
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            steps = args.steps if stage == "fine" else coarse
            print(
                f"{name} {stage}: {steps} steps in {elapsed:.2f} s = {steps / elapsed:.1f} steps/s "
                f"({base.coarse.cameras_per_step if stage == 'coarse' else base.fine.cameras_per_step} images/step)",
                flush=True,
            )
            if args.profile:
                profile_steps(dataset, config, Path(args.out) / f"{name}_profile_{stage}", warm, args.profile, stage)
            if args.sync_debug and torch.cuda.is_available():
                count = 0

                def counting(*a, **k):
                    nonlocal count
                    count += 1

                sync_config = replace(
                    config,
                    coarse=replace(config.coarse, iterations=warm + 100),
                    fine=replace(config.fine, iterations=100 if stage == "fine" else 0),
                )
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        reconstruct(
                            dataset,
                            sync_config,
                            Path(args.out) / f"{name}_{stage}_sync",
                            overwrite=True,
                            progress=False,
                            echo=None,
                        )
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                syncs = sum("synchroniz" in str(w.message) for w in caught)
                total = sync_config.total_iterations
                print(
                    f"{name} {stage}: {syncs} host-device syncs in {total} steps (whole run incl. set-up) = {syncs / total:.1f} per step",
                    flush=True,
                )
    return 0


def profile_steps(dataset, config, run: Path, warm: int, steps: int, stage: str = "fine") -> None:
    """Profile ``steps`` steps of ``stage`` after ``warm`` coarse ones (the run's set-up and the first
    5 steps excluded); print where CPU and GPU time go, kernel launches per step and, on CUDA, the
    source lines of the host-device synchronisations inside the steps."""
    import collections
    import traceback

    from torch.profiler import ProfilerActivity, profile, schedule

    from gen4d.recon.construct import ConstructTask, reconstruct, with_iterations

    config = with_iterations(config, warm, steps) if stage == "fine" else with_iterations(config, warm + steps, 0)
    reconstruct(dataset, config, run, overwrite=True, progress=False, echo=None, stop_after=warm)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    skip = 5
    active = max(steps - skip, 1)
    syncs: collections.Counter = collections.Counter()
    original = ConstructTask.step

    def step(self, index):  # bench-only wrapper: marks step boundaries for the profiler schedule
        out = original(self, index)
        prof.step()
        return out

    def on_sync(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            frames = [f for f in traceback.extract_stack()[:-2] if "warnings" not in f.filename]
            where = next(
                (f for f in reversed(frames) if "/gen4d/" in f.filename or "/gsplat/" in f.filename), frames[-1]
            )
            syncs[f"{Path(where.filename).name}:{where.lineno} {where.name}"] += 1

    ConstructTask.step = step
    shown = warnings.showwarning
    try:
        with profile(activities=activities, schedule=schedule(wait=1, warmup=skip - 1, active=active)) as prof:
            if torch.cuda.is_available():
                warnings.simplefilter("always")
                warnings.showwarning = on_sync
                torch.cuda.set_sync_debug_mode("warn")
            reconstruct(dataset, config, run, resume=True, progress=False, echo=None)
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
    finally:
        ConstructTask.step = original
        warnings.showwarning = shown
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
    table = prof.key_averages()
    for key in (
        ("self_cpu_time_total", "self_device_time_total") if torch.cuda.is_available() else ("self_cpu_time_total",)
    ):
        print(f"## profile of {active} {stage} steps, top ops by {key}")
        print(table.table(sort_by=key, row_limit=25, max_name_column_width=60))
    launches = sum(e.count for e in table if e.key.startswith("cudaLaunchKernel"))
    print(f"## kernel launches: {launches} in {active} steps = {launches / active:.0f} per step", flush=True)
    if syncs:
        print(f"## host-device syncs during the whole resumed run ({steps} steps + set-up + outputs), by source line:")
        for where, count in syncs.most_common(25):
            print(f"   {count:6d}  {where}")


if __name__ == "__main__":
    sys.exit(main())
