"""The 4D-construction benchmark: :func:`gen4d.recon.construct.reconstruct` over datasets x presets,
one table of quality, time, peak memory and device.

Each (dataset, preset) run lives in ``OUT/<dataset>__<preset>/`` (a normal run folder); a run
whose ``metrics.json`` exists is reused, a run with only a checkpoint is resumed, so an
interrupted benchmark continues where it stopped. ``OUT/bench.json`` and ``OUT/bench.md`` are
rewritten (atomically) after every run.

Quality columns come from the run's own held-out evaluation (``metrics.json``: the ``eval``
split if the dataset has one, else the held-out ``front`` frames, else the training orbit - the
``split`` column says which). ``full_eval`` additionally runs :func:`gen4d.eval.evaluate` (the
Consistent4D / Diffusion4D protocol, CLIP and FVD included when their weights exist) and stores
its report in ``RUN/eval/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from gen4d.config import ConfigError, check_non_negative
from gen4d.io import atomic_path, read_json, write_json

__all__ = ["BenchConfig", "run_bench", "bench_markdown", "bench_row"]


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark and how."""

    presets: tuple[str, ...] = ("default",)
    """Reconstruction presets to run on every dataset (gen4d.recon.construct.PRESETS)."""
    iterations: tuple[int, ...] = ()
    """(coarse, fine) iterations overriding the presets' (smoke runs); empty = the presets'."""
    size: int = 0
    """Training image size override (0 = the preset's)."""
    device: str = "auto"
    """'auto' (CUDA if available), 'cpu', 'cuda[:i]'."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser backend."""
    outputs: bool = True
    """Write the runs' PLY sequence / videos / renders (part of the measured wall time) or skip them."""
    full_eval: bool = False
    """Also run the gen4d eval protocol on every run (report in RUN/eval)."""

    def __post_init__(self) -> None:
        check_non_negative(self, "size")
        if self.iterations and (len(self.iterations) != 2 or min(self.iterations) < 0):
            raise ConfigError(
                "iterations", f"expected two integers >= 0 (coarse, fine), got {self.iterations!r}", "BenchConfig"
            )
        if not self.presets:
            raise ConfigError("presets", "expected at least one preset name, got none", "BenchConfig")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


def _construct_config(preset_name: str, config: BenchConfig):
    from gen4d.recon.construct import preset, with_iterations

    construct = preset(preset_name)
    if config.iterations:
        if len(config.iterations) != 2:
            raise ValueError(f"iterations: expected (coarse, fine), got {config.iterations}")
        construct = with_iterations(construct, *config.iterations)
    changes: dict[str, Any] = {"device": config.device, "backend": config.backend}
    if config.size:
        changes["size"] = config.size
    if not config.outputs:
        changes["output"] = replace(construct.output, ply=False, video=False, renders=False)
    return replace(construct, **changes)


def bench_row(dataset: str, preset_name: str, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """One table row from a run's ``metrics.json``."""
    splits = metrics.get("splits", {})
    split = next((s for s in ("eval", "front", "train") if s in splits), None)
    quality = splits.get(split, {}) if split else {}
    return {
        "dataset": dataset,
        "preset": preset_name,
        "run": str(run_dir),
        "split": split,
        "images": quality.get("images"),
        "psnr": quality.get("psnr"),
        "ssim": quality.get("ssim"),
        "lpips": quality.get("lpips"),
        "iou": quality.get("iou"),
        "lpips_note": metrics.get("lpips_note"),
        "train_time_s": metrics.get("train_time_s"),
        "wall_time_s": metrics.get("wall_time_s"),
        "peak_gpu_mib": metrics.get("peak_gpu_mib"),
        "peak_rss_mib": metrics.get("peak_rss_mib"),
        "device": metrics.get("device"),
        "backend": metrics.get("backend"),
        "num_gaussians": metrics.get("num_gaussians"),
        "iterations": metrics.get("iterations"),
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def bench_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The benchmark table (markdown)."""
    from gen4d.eval.report import format_duration

    header = (
        "| Dataset | Preset | Split | PSNR ↑ | SSIM ↑ | LPIPS (vgg) ↓ | Silhouette IoU ↑ | Train time | Wall time | Peak GPU MiB | "
        "Peak RSS MiB | Gaussians | Device | Backend |"
    )
    lines = ["# gen4d 4D-construction benchmark", "", header, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['preset']} | {r['split'] or '-'} | {_fmt(r['psnr'], '.2f')} | {_fmt(r['ssim'], '.3f')} | "
            f"{_fmt(r['lpips'], '.3f')} | {_fmt(r.get('iou'), '.3f')} | {format_duration(r['train_time_s'])} | {format_duration(r['wall_time_s'])} | "
            f"{_fmt(r['peak_gpu_mib'], '.0f')} | {_fmt(r['peak_rss_mib'], '.0f')} | {r['num_gaussians'] or '-'} | "
            f"{r['device'] or '-'} | {r['backend'] or '-'} |"
        )
    notes = sorted({r["lpips_note"] for r in rows if r.get("lpips_note")})
    evals = [r for r in rows if r.get("eval")]
    if evals:
        lines += ["", "## Full evaluation (gen4d eval protocol)", ""]
        for r in evals:
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in r["eval"]["metrics"].items())
            skipped = ", ".join(r["eval"]["skipped"]) or "none"
            lines.append(f"- {r['dataset']} / {r['preset']} ({r['eval']['protocol']}): {metrics}; skipped: {skipped}")
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def _write(out: Path, rows: list[dict[str, Any]], config: BenchConfig) -> None:
    from gen4d.config import to_dict

    write_json(out / "bench.json", {"format": "gen4d.bench/1", "config": to_dict(config), "rows": rows})
    with atomic_path(out / "bench.md") as tmp:
        tmp.write_text(bench_markdown(rows))


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that gen4d cannot prove is a benchmark folder (it rewrites bench.json and
    bench.md there): it must be new or empty, hold a gen4d ``bench.json``, or hold only run folders
    (an interrupted first benchmark run)."""
    from gen4d.run import is_run
    from gen4d.run.folder import check_output_folder

    def ours(folder: Path) -> bool:
        if all(is_run(entry) for entry in folder.iterdir()):
            return True
        try:
            stored = read_json(folder / "bench.json")
        except (OSError, ValueError):
            return False
        return isinstance(stored, dict) and stored.get("format") == "gen4d.bench/1"

    check_output_folder(out, "gen4d benchmark (bench.json)", ours)


def run_bench(
    datasets: Sequence[str | os.PathLike],
    config: BenchConfig,
    out: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Run (or reuse) every (dataset, preset) and return the table rows (also written to OUT)."""
    from gen4d.recon.checkpoint import find_checkpoint
    from gen4d.recon.construct import reconstruct
    from gen4d.run import is_run

    if not datasets:
        raise ValueError("bench: no datasets given")
    if not config.presets:
        raise ValueError("bench: no presets given")
    out = Path(out)
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    configs = {name: _construct_config(name, config) for name in config.presets}  # fail early on unknown presets
    names: list[str] = []
    for path in datasets:
        if not Path(path).exists():
            raise FileNotFoundError(f"no such dataset: {path}")
        name = _slug(Path(path).resolve().name)
        while name in names:
            name += "_"
        names.append(name)
    rows: list[dict[str, Any]] = []
    for path, name in zip(datasets, names):
        for preset_name, construct in configs.items():
            run_dir = out / f"{name}__{_slug(preset_name)}"
            metrics_path = run_dir / "metrics.json"
            if force or not metrics_path.is_file():
                resume = find_checkpoint(run_dir) is not None and not force
                if echo:
                    echo(f"bench: {name} / {preset_name} -> {run_dir}" + (" (resuming)" if resume else ""))
                overwrite = is_run(run_dir) and not resume
                reconstruct(path, construct, run_dir, resume=resume, overwrite=overwrite, progress=progress, echo=None)
            elif echo:
                echo(f"bench: {name} / {preset_name}: reusing {metrics_path}")
            row = bench_row(name, preset_name, run_dir, read_json(metrics_path))
            if config.full_eval:
                row["eval"] = _full_eval(path, run_dir, config)
            rows.append(row)
            _write(out, rows, config)
    return rows


def _full_eval(dataset: str | os.PathLike, run_dir: Path, config: BenchConfig) -> dict[str, Any]:
    from gen4d.data.dataset import load_dataset
    from gen4d.eval.core import EvalCase, EvalConfig, evaluate
    from gen4d.eval.report import read_generation_time, write_report
    from gen4d.recon import load_run

    eval_config = EvalConfig(device=config.device, backend=config.backend)
    device = "cpu"
    if config.device != "auto":
        device = config.device
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    timing = read_generation_time(run_dir)
    case = EvalCase(
        run_dir.name, load_run(run_dir, device=device), load_dataset(dataset), None if timing is None else timing[0]
    )
    report = evaluate([case], eval_config, method=run_dir.name, progress=False)
    write_report(report, run_dir / "eval")
    return {"protocol": report["protocol"], "metrics": report["metrics"], "skipped": sorted(report["skipped"])}
