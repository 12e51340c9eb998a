"""``gen4d eval``: render runs at the ground truth's cameras and times, write a Table-1-style report."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "eval"
HELP = (
    "evaluate runs against ground truth (Consistent4D or Diffusion4D protocol): PSNR, SSIM, LPIPS, CLIP, FVD, "
    "generation time -> REPORT/report.md + report.json"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.eval.core import EvalConfig

    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s) of one method (one per object)")
    parser.add_argument(
        "--gt",
        nargs="+",
        required=True,
        metavar="DATA",
        help="ground-truth dataset(s) (manifest folder or Diffusion4D folder): one per RUN, or one for all",
    )
    parser.add_argument("--out", required=True, metavar="REPORT", help="folder for report.md and report.json")
    parser.add_argument("--name", default=None, help="method name in the table (default: the first run's folder name)")
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="REPORT",
        help="earlier reports (report.json or its folder) to add as rows",
    )
    add_config_arguments(parser, EvalConfig, EvalConfig())


def run(args: argparse.Namespace) -> int:
    import torch

    from gen4d.config import apply_overrides
    from gen4d.data.dataset import load_dataset
    from gen4d.errors import UserError
    from gen4d.eval.core import EvalCase, EvalConfig, evaluate
    from gen4d.eval.report import load_report, markdown_report, read_generation_time, write_report

    config = apply_overrides(EvalConfig(), args)
    runs = [Path(r) for r in args.runs]
    gts = list(args.gt)
    if len(gts) == 1:
        gts = gts * len(runs)
    if len(gts) != len(runs):
        raise UserError(f"--gt: got {len(args.gt)} datasets for {len(runs)} runs; pass one per run, or one for all")
    for run_dir in runs:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"no such run folder: {run_dir}")
    compare = [load_report(p) for p in args.compare]
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")

    from gen4d.recon import load_run

    cases = []
    for run_dir, gt_path in zip(runs, gts):
        timing = read_generation_time(run_dir)
        cases.append(
            EvalCase(
                name=run_dir.name,
                model=load_run(run_dir, device=device),
                gt=load_dataset(gt_path),
                generation_time_s=None if timing is None else timing[0],
            )
        )
    report = evaluate(cases, config, method=args.name or runs[0].name)
    report["runs"] = [str(r) for r in runs]
    report["ground_truth"] = [str(g) for g in gts]
    json_path, md_path = write_report(report, args.out, compare)
    print(markdown_report(report, compare).split("\n\n**Counts")[0])
    print(f"\nwrote {md_path} and {json_path}")
    return 0
