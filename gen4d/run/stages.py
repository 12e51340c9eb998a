"""Multi-stage runs (``gen4d image``, ``gen4d text``, ``gen4d animate``): an ordered list of
stages, each writing its outputs into the run folder and then a small JSON record
``RUN/stages/NAME.json`` (atomically, last). A stage is finished when its record and every
output it lists exist.

A rerun with ``resume`` skips the finished stages (their outputs are read back from the run folder,
so an intermediate replaced by the user, e.g. the matted frames, is what the next stage uses) and
continues with the first unfinished one; once a stage runs, the records of the stages after it are
removed (their inputs changed). ``stop_after`` stops after the named stage. Between stages the
models of the finished stage are gone and the CUDA cache is emptied, so two stages' models never
share the GPU; each record holds the stage's wall time and, on CUDA, its peak allocated memory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gen4d.errors import UserError
from gen4d.io import read_json, write_json
from gen4d.run.logs import LOGGER
from gen4d.run.timing import peak_memory, release_memory, reset_peak_memory

__all__ = ["STAGES_DIR", "Stage", "StageContext", "check_stage_name", "finished_stages", "run_stages", "stage_record"]

STAGES_DIR = "stages"
RECORD_FORMAT = "gen4d.stage/1"


@dataclass
class StageContext:
    """What a stage function gets."""

    run_dir: Path
    """The run folder (inputs are read from, and outputs written to, paths inside it)."""
    device: torch.device
    """Where the stage's models run."""
    progress: bool = True
    """Show progress bars."""
    fresh: bool = False
    """An earlier stage ran in this invocation: start this stage's own resumable run anew."""
    config: Any = None
    """The run's resolved config."""


@dataclass(frozen=True)
class Stage:
    """One stage of a multi-stage run."""

    name: str
    """Name shown in logs, used by --stop-after and for the record file."""
    outputs: tuple[str, ...]
    """Paths (relative to the run folder) the stage writes; all must exist for it to count as finished."""
    run: Callable[[StageContext], dict[str, Any]] = field(compare=False)
    """The work; returns JSON-ready facts for the record."""
    sections: tuple[str, ...] = ()
    """Config sections only this stage reads (they may change on --resume while it is unfinished)."""
    resumable: bool = False
    """The stage continues its own partial outputs (a nested run with a checkpoint) instead of starting over."""


def stage_record(run_dir: str | os.PathLike, name: str) -> dict[str, Any] | None:
    path = Path(run_dir) / STAGES_DIR / f"{name}.json"
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


def _finished(run_dir: Path, stage: Stage) -> bool:
    return stage_record(run_dir, stage.name) is not None and all((run_dir / p).exists() for p in stage.outputs)


def finished_stages(run_dir: str | os.PathLike, stages: Sequence[Stage]) -> list[str]:
    """Names of the leading stages that are finished (the ones a resumed run skips)."""
    done = []
    for stage in stages:
        if not _finished(Path(run_dir), stage):
            break
        done.append(stage.name)
    return done


def _remove_outputs(run_dir: Path, stage: Stage) -> None:
    import shutil

    for rel in stage.outputs:
        path = run_dir / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_stage_name(stages: Sequence[Stage], name: str | None, option: str = "--stop-after") -> None:
    names = [s.name for s in stages]
    if name is not None and name not in names:
        raise UserError(f"{option} {name}: no such stage; this run's stages are {', '.join(names)}")


def run_stages(
    run_dir: str | os.PathLike,
    stages: Sequence[Stage],
    device: torch.device,
    resume: bool = False,
    stop_after: str | None = None,
    progress: bool = True,
    config: Any = None,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order into ``run_dir`` (an opened run folder, see :func:`gen4d.run.open_run`);
    ``config`` is handed to every stage in its context. Returns every stage's record (the skipped
    ones as stored)."""
    run_dir = Path(run_dir)
    check_stage_name(stages, stop_after)
    records: dict[str, dict[str, Any]] = {}
    ran = False
    for index, stage in enumerate(stages):
        if resume and not ran and _finished(run_dir, stage):
            records[stage.name] = stage_record(run_dir, stage.name) or {}
            LOGGER.info(f"stage {index + 1}/{len(stages)} {stage.name}: finished earlier, skipped")
        else:
            for later in stages[index:]:  # this stage's inputs changed or it never finished
                record_path = run_dir / STAGES_DIR / f"{later.name}.json"
                if record_path.exists():
                    record_path.unlink()
            if ran or not stage.resumable:
                _remove_outputs(run_dir, stage)
            LOGGER.info(f"stage {index + 1}/{len(stages)} {stage.name}: running")
            records[stage.name] = _run_one(run_dir, stage, StageContext(run_dir, device, progress, ran, config))
            ran = True
        if stage.name == stop_after:
            if index + 1 < len(stages):
                LOGGER.info(
                    f"stopped after stage {stage.name} (--stop-after); inspect or replace its outputs "
                    f"({', '.join(stage.outputs)}) and continue with --resume"
                )
            break
    return records


def _run_one(run_dir: Path, stage: Stage, ctx: StageContext) -> dict[str, Any]:
    device = ctx.device
    release_memory(device)
    reset_peak_memory(device)
    started = time.perf_counter()
    facts = stage.run(ctx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    memory = peak_memory(device)
    release_memory(device)  # the stage's models are out of scope now: give their memory back
    missing = [p for p in stage.outputs if not (run_dir / p).exists()]
    if missing:
        raise RuntimeError(f"stage {stage.name} finished without writing {', '.join(missing)}")
    record = {
        "format": RECORD_FORMAT,
        "stage": stage.name,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "device": str(device),
        "outputs": list(stage.outputs),
        "process_peak_rss_mib": round(memory["peak_rss_mib"], 1),  # the process's peak so far, not the stage's
        **{k: round(v, 1) for k, v in memory.items() if k.startswith("peak_gpu")},
        **(facts or {}),
    }
    write_json(run_dir / STAGES_DIR / f"{stage.name}.json", record)
    gpu = f", peak GPU {record['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in record else ""
    LOGGER.info(f"stage {stage.name}: done in {seconds:.1f} s{gpu}")
    return record
