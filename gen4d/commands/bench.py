"""``gen4d bench``: the 4D-construction benchmark over datasets x presets, one table."""

from __future__ import annotations

import argparse

NAME = "bench"
HELP = "benchmark 4D construction over datasets and presets: quality, time, peak memory, device in one table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gen4d.config import add_config_arguments
    from gen4d.eval.bench import BenchConfig

    parser.add_argument(
        "datasets", nargs="+", metavar="DATA", help="datasets (manifest folders or Diffusion4D folders)"
    )
    parser.add_argument(
        "--out", required=True, help="benchmark folder (one run folder per dataset x preset, bench.md, bench.json)"
    )
    parser.add_argument("--force", action="store_true", help="rerun runs that already finished (default: reuse them)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser, BenchConfig, BenchConfig())


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gen4d.config import apply_overrides
    from gen4d.eval.bench import BenchConfig, bench_markdown, run_bench

    config = apply_overrides(BenchConfig(), args)
    rows = run_bench(args.datasets, config, args.out, force=args.force, progress=not args.no_progress)
    print(bench_markdown(rows))
    print(f"wrote {Path(args.out) / 'bench.md'} and {Path(args.out) / 'bench.json'}")
    return 0
