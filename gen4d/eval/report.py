"""Evaluation reports: Table-1-style markdown + JSON, generation time from run logs.

A report is the dict :func:`gen4d.eval.core.evaluate` returns (``format: gen4d.eval/1``).
:func:`write_report` stores it as ``report.json`` and ``report.md``; earlier reports can be added
as extra rows (``compare``) when they used the same protocol, so methods evaluated by the same
script sit side by side.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gen4d.io import atomic_path, read_json, write_json

__all__ = ["read_generation_time", "format_duration", "markdown_report", "write_report", "load_report", "COLUMNS"]

# Column key, header, decimals; per protocol, in the order of the papers' tables.
COLUMNS: dict[str, list[tuple[str, str, int]]] = {
    "diffusion4d": [
        ("clip_f", "CLIP-F ↑", 3),
        ("clip_o", "CLIP-O ↑", 3),
        ("generation_time_s", "Generation time ↓", -1),
        ("ssim", "SSIM ↑", 3),
        ("psnr", "PSNR ↑", 2),
        ("lpips", "LPIPS ↓", 3),
        ("fvd", "FVD ↓", 1),
        ("iou", "Silhouette IoU ↑", 3),
    ],
    "consistent4d": [
        ("lpips", "LPIPS ↓", 3),
        ("clip", "CLIP ↑", 3),
        ("fvd", "FVD ↓", 1),
        ("psnr", "PSNR ↑", 2),
        ("ssim", "SSIM ↑", 3),
        ("iou", "Silhouette IoU ↑", 3),
        ("generation_time_s", "Generation time ↓", -1),
    ],
}

_WALL = re.compile(
    r"wall[_ ]?time(?:_s)?\s*[:=]\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(h|min|m|s|sec|seconds)?\b", re.I
)
_UNIT = {None: 1.0, "s": 1.0, "sec": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def read_generation_time(run_dir: str | os.PathLike) -> tuple[float, str] | None:
    """(seconds, source) of a run's wall time: ``RUN/metrics.json`` key ``wall_time_s`` (or
    ``generation_time_s``), else the last ``wall_time[_s]: <value> [s|min|h]`` line of
    ``RUN/log.txt``; None when neither says."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            data = read_json(metrics)
        except ValueError:
            data = {}
        for key in ("wall_time_s", "generation_time_s"):
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value), f"{metrics} ({key})"
    log = run_dir / "log.txt"
    if log.is_file():
        matches = _WALL.findall(log.read_text(errors="replace"))
        if matches:
            value, unit = matches[-1]
            return float(value) * _UNIT[unit.lower() if unit else None], str(log)
    return None


def format_duration(seconds: float | None) -> str:
    """'45 s', '8 min', '2 h 30 min' (as the papers write them)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min" if minutes >= 10 or float(minutes).is_integer() else f"{minutes:.1f} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _lpips_key(report: dict[str, Any]) -> str:
    return f"lpips_{report.get('config', {}).get('lpips_net', 'vgg')}"


def _cell(report: dict[str, Any], key: str, decimals: int) -> str:
    metrics = report["metrics"]
    if key == "lpips":
        key = _lpips_key(report)
    value = metrics.get(key)
    if value is None:
        skipped = report.get("skipped", {})
        return "skipped" if key in skipped or key.removesuffix("_s") in skipped else "-"
    if decimals < 0:
        return format_duration(value)
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{decimals}f}"


_COMPARED_SETTINGS = (
    "background",
    "size",
    "lpips_net",
    "clip_model",
    "clip_pre_resize",
    "prompt",
    "orbit_views",
    "eval_split",
)


def markdown_report(report: dict[str, Any], compare: Sequence[dict[str, Any]] = ()) -> str:
    """The report as markdown: a Table-1-style table (this method, then ``compare`` rows), the
    skipped metrics with how to enable them, counts, settings and per-case values."""
    protocol = report["protocol"]
    columns = COLUMNS[protocol]
    rows = [report, *compare]
    lpips_header = lambda r: f"LPIPS ({r.get('config', {}).get('lpips_net', 'vgg')}) ↓"  # noqa: E731
    headers = ["Method"] + [lpips_header(report) if key == "lpips" else title for key, title, _ in columns]
    lines = [f"# gen4d evaluation ({protocol} protocol)", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    for row in rows:
        lines.append(
            "| " + " | ".join([str(row.get("method", "?"))] + [_cell(row, k, d) for k, _, d in columns]) + " |"
        )
    lines.append("")
    warnings = []
    for other in compare:
        if other.get("protocol") != protocol:
            warnings.append(f"`{other.get('method')}` used the {other.get('protocol')} protocol, not {protocol}")
        diffs = [k for k in _COMPARED_SETTINGS if other.get("config", {}).get(k) != report.get("config", {}).get(k)]
        if diffs:
            warnings.append(
                f"`{other.get('method')}` differs in settings {diffs}: its numbers are not directly comparable"
            )
    if warnings:
        lines += ["**Warnings:**", ""] + [f"- {w}" for w in warnings] + [""]
    if report.get("skipped"):
        lines += ["**Skipped metrics** (how to enable them):", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in report["skipped"].items()]
        lines.append("")
    counts = report.get("counts", {})
    lines += [
        "**Counts:** "
        f"{counts.get('cases')} case(s), {counts.get('images')} image pairs, "
        f"{counts.get('clips_per_side')} clip(s) per side for FVD (frames per clip: {counts.get('clip_frames')}). "
        "FVD pools every clip of every case into one Gaussian per side; with fewer clips than the 400 I3D "
        "features it is biased and depends on the clip count, so compare FVD only at equal counts.",
        "",
    ]
    config = report.get("config", {})
    settings = ", ".join(f"{k}={config.get(k)!r}" for k in _COMPARED_SETTINGS if k in config)
    lines += [f"**Settings:** {settings}; device {report.get('device')}.", ""]
    for key, value in (report.get("notes") or {}).items():
        lines.append(f"- {key}: {value}")
    if report.get("notes"):
        lines.append("")
    cases = report.get("cases") or []
    if cases:
        metric_keys = sorted({k for case in cases for k in case.get("metrics", {})})
        lines += [
            "## Per case",
            "",
            "| Case | Ground truth | Images | " + " | ".join(metric_keys) + " | Generation time |",
        ]
        lines.append("|" + "---|" * (4 + len(metric_keys)))
        for case in cases:
            values = ["-" if case["metrics"].get(k) is None else f"{case['metrics'][k]:.4f}" for k in metric_keys]
            lines.append(
                f"| {case['name']} | {case['ground_truth']} | {case['images']} | "
                + " | ".join(values)
                + f" | {format_duration(case.get('generation_time_s'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """A stored report (``report.json`` or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != "gen4d.eval/1":
        raise ValueError(f"{path}: not a gen4d eval report (expected format 'gen4d.eval/1')")
    return data


def write_report(
    report: dict[str, Any], out: str | os.PathLike, compare: Sequence[dict[str, Any]] = ()
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into folder ``out`` (atomically); returns both paths."""
    out = Path(out)
    if out.suffix in (".json", ".md"):
        raise ValueError(f"--out: expected a folder for report.json and report.md, got a file name {out}")
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "report.json", report)
    md_path = out / "report.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown_report(report, compare))
    return json_path, md_path
