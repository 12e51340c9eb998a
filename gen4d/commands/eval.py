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

    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folder(s) of one method (one per object)")
    parser.add_argument(
        "--video",
        nargs="+",
        metavar="VIDEO",
        help="instead of runs: generated orbital video(s) (mp4 / gif / frame folder, one frame per ground-truth "
        "orbit view) scored directly against the ground-truth orbit (Diffusion4D* rows, no 4D construction)",
    )
    parser.add_argument(
        "--gt",
        nargs="+",
        required=True,
        metavar="DATA",
        help="ground-truth dataset(s) (manifest folder or Diffusion4D folder): one per RUN / VIDEO, or one for all",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="REPORT",
        help="folder for report.md and report.json (a new or empty folder, or an earlier report with --overwrite)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the earlier gen4d eval report in --out (report.json, .md)"
    )
    parser.add_argument("--name", default=None, help="method name in the table (default: the first run's folder name)")
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="REPORT",
        help="earlier reports (report.json or its folder) to add as rows",
    )
    add_config_arguments(parser, EvalConfig, EvalConfig())


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` where writing report.json / report.md could destroy a user's files: it must
    be a new or empty folder, or (with ``--overwrite``) hold an earlier gen4d eval report."""
    from gen4d.errors import UserError
    from gen4d.eval.report import load_report
    from gen4d.run.folder import check_output_folder

    def holds_report(folder: Path) -> bool:
        try:
            load_report(folder)
            return True
        except (OSError, ValueError):
            return False

    if out.suffix in (".json", ".md") and not out.is_dir():
        raise UserError(f"--out: expected a folder for report.json and report.md, got a file name {out}")
    if check_output_folder(out, "gen4d eval report (report.json)", holds_report) and not overwrite:
        raise UserError(
            f"--out {out} already holds a gen4d eval report; pass --overwrite to replace its report.json and "
            "report.md, or another --out"
        )


def run(args: argparse.Namespace) -> int:
    from gen4d.config import apply_overrides
    from gen4d.data.dataset import load_dataset
    from gen4d.errors import UserError
    from gen4d.eval.core import EvalCase, EvalConfig, evaluate
    from gen4d.eval.report import load_report, markdown_report, read_generation_time, write_report
    from gen4d.run.device import resolve_device

    config = apply_overrides(EvalConfig(), args)
    device = resolve_device(config.device)  # a bad --device fails before any work
    if args.video:
        return _run_videos(args, config)
    if not args.runs:
        raise UserError("pass run folders (RUN ...) or generated videos (--video VIDEO ...) to evaluate")
    runs = [Path(r) for r in args.runs]
    gts = list(args.gt)
    if len(gts) == 1:
        gts = gts * len(runs)
    if len(gts) != len(runs):
        raise UserError(f"--gt: got {len(args.gt)} datasets for {len(runs)} runs; pass one per run, or one for all")
    for run_dir in runs:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"no such run folder: {run_dir}")
    check_out(Path(args.out), args.overwrite)
    compare = [load_report(p) for p in args.compare]

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


def _run_videos(args: argparse.Namespace, config) -> int:
    import dataclasses

    from gen4d.data.dataset import load_dataset
    from gen4d.errors import UserError
    from gen4d.eval.core import evaluate
    from gen4d.eval.report import load_report, markdown_report, write_report
    from gen4d.eval.video import collect_video, read_video_frames, video_case

    if args.runs:
        raise UserError("pass either run folders or --video, not both")
    if config.protocol == "consistent4d":
        raise UserError("--protocol: a generated video is scored with the diffusion4d protocol")
    config = dataclasses.replace(config, protocol="diffusion4d")
    videos = [Path(v) for v in args.video]
    gts = list(args.gt) * (len(videos) if len(args.gt) == 1 else 1)
    if len(gts) != len(videos):
        raise UserError(
            f"--gt: got {len(args.gt)} datasets for {len(videos)} videos; pass one per video, or one for all"
        )
    for video in videos:
        if not video.exists():
            raise UserError(f"--video: no such file or folder: {video}")
    check_out(Path(args.out), args.overwrite)
    cases = [video_case(v.stem, read_video_frames(v), load_dataset(g)) for v, g in zip(videos, gts)]
    report = evaluate(cases, config, method=args.name or f"{videos[0].stem} (video)", collect=collect_video)
    report["videos"] = [str(v) for v in videos]
    report["ground_truth"] = [str(g) for g in gts]
    compare = [load_report(p) for p in args.compare]
    json_path, md_path = write_report(report, args.out, compare)
    print(markdown_report(report, compare).split("\n\n**Counts")[0])
    print(f"\nwrote {md_path} and {json_path}")
    return 0
