"""Host time per phase of a construction step, to see where a step's time goes.

    python bench/bench_phases.py --data ../shared/data/diffusion4d_sample --presets paper,default --steps 600

Wraps the phases of a step (batch, render, deformation, losses, backward, densification, Adam) with
``time.perf_counter`` and runs ``--steps`` coarse steps, then ``--steps`` fine steps, each after a
warm-up of 150 steps; prints milliseconds per step for each phase. No synchronisation is added: on a
GPU these are host times (the step is bound by the host), and a phase that waits for the device shows
that wait. Phases nest (``backward`` holds the autograd work of everything before it).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WARM = 150


def _wrap(owner, name: str, label: str, totals, calls) -> None:
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - start
            calls[label] += 1

    setattr(owner, name, timed)


def main() -> int:
    from gen4d.config import parse_assignments, set_fields
    from gen4d.data.dataset import load_dataset
    from gen4d.densify import strategy as densify
    from gen4d.gaussians import dynamic
    from gen4d.recon import construct, graphs, optim, step

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--presets", default="paper", help="NAME or NAME:key=value;key=value, comma-separated")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--out", default="bench_out/phases")
    args = parser.parse_args()
    totals: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)
    for owner, name, label in (
        (construct.ConstructTask, "step", "step (all)"),
        (step.TrainData, "batch", "batch"),
        (dynamic.DynamicGaussians, "render", "render"),
        (dynamic.DynamicGaussians, "at", "deformation (eager)"),
        (dynamic.DynamicGaussians, "regularization", "regularisers (eager)"),
        (graphs.StepGraphs, "deformation", "deformation (graph)"),
        (graphs.StepGraphs, "image_losses", "image losses (graph)"),
        (step, "image_losses", "image losses (eager)"),
        (torch.Tensor, "backward", "backward"),
        (densify.DensifyStrategy, "step_post_backward", "densify hooks"),
        (optim.Adam, "step", "adam"),
    ):
        _wrap(owner, name, label, totals, calls)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"# host ms per step, {device}, torch {torch.__version__}")
    dataset = load_dataset(args.data)
    for entry in args.presets.split(","):
        name, _, assignments = entry.partition(":")
        base = construct.PRESETS[name]
        if assignments:
            base = set_fields(base, parse_assignments(assignments))
        quiet = replace(base.output, ply=False, video=False, renders=False, lpips=False, evaluate=False)
        for stage, coarse, fine in (("coarse", WARM + args.steps, 0), ("fine", WARM, args.steps)):
            config = replace(construct.with_iterations(base, coarse, fine), output=quiet, checkpoint_every=0)
            run = Path(args.out) / f"{name}_{stage}"
            construct.reconstruct(dataset, config, run, overwrite=True, progress=False, echo=None, stop_after=WARM)
            sync()
            totals.clear()
            calls.clear()
            start = time.perf_counter()
            construct.reconstruct(dataset, config, run, resume=True, progress=False, echo=None)
            sync()
            wall = time.perf_counter() - start
            steps = calls["step (all)"]
            print(f"{entry} {stage}: {steps} steps in {wall:.2f} s = {1e3 * wall / steps:.2f} ms/step (with set-up)")
            for label in sorted(totals, key=lambda k: -totals[k]):
                print(f"    {label:24s} {1e3 * totals[label] / steps:7.3f} ms/step  ({calls[label]} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
