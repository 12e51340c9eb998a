"""Several whole construction runs side by side, the one that fits its training views best kept.

With one view per time, runs that differ only in their seed can end in different states (a limb
placed in front of or behind the body along the line of sight of its one view), and the worse of
them mostly fits its training views worse too (docs/benchmarks.md). Candidate ``i`` is the run
with seed ``seed + i``; every candidate but the first also keeps a turn the turn search finds with
a gain of at least ``candidates.turn_min_gain`` (the first uses ``turn.min_gain``), so a turn the
search is unsure about is tried once each way. Each candidate is a complete run in
``RUN/candidates/<i>`` (its own process; on several CUDA devices they are spread over them); the
one with the highest PSNR on the training orbit is kept: its outputs (checkpoint, PLY frames,
renders, videos) are linked into RUN and RUN/metrics.json is its metrics plus a ``candidates``
section. Nothing here looks at held-out views.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gen4d.config import to_dict
from gen4d.data.dataset import MultiViewVideo
from gen4d.errors import RunInterrupted
from gen4d.io import read_json, swap_in_folder, write_json
from gen4d.recon.presets import ConstructConfig
from gen4d.run import check_resume_config, is_run
from gen4d.run.logs import LOGGER

__all__ = ["CANDIDATES_DIR", "SELECTION_FILE", "candidate_configs", "run_candidates"]

CANDIDATES_DIR = "candidates"
SELECTION_FILE = "selection.json"
SHARED_ENTRIES = ("checkpoint", "ply", "renders", "videos")
"""The kept candidate's outputs that RUN gets (hard links where the file system allows, else copies)."""


def candidate_configs(config: ConstructConfig, cuda_devices: int = 0) -> list[ConstructConfig]:
    """The config of each candidate run (a single run each); with ``cuda_devices`` > 1 and the device
    'auto' or 'cuda', candidate ``i`` runs on cuda:(i mod cuda_devices)."""
    single = replace(config.candidates, count=1)
    out = []
    for i in range(config.candidates.count):
        turn = config.turn if i == 0 else replace(config.turn, min_gain=config.candidates.turn_min_gain)
        device = config.device
        if cuda_devices > 1 and device in ("auto", "cuda"):
            device = f"cuda:{i % cuda_devices}"
        out.append(replace(config, seed=config.seed + i, turn=turn, device=device, candidates=single))
    return out


def _command(source: Path, folder: Path, config_file: Path) -> list[str]:
    """``gen4d reconstruct`` of one candidate (continued when its folder already holds a run)."""
    command = [sys.executable, "-m", "gen4d", "reconstruct", str(source), "--out", str(folder),
               "--config", str(config_file), "--no-progress"]  # fmt: skip
    return command + (["--resume"] if is_run(folder) else [])


def _forward(stream, index: int, echo: bool) -> None:
    for line in stream:
        if echo:
            print(f"[candidate {index}] {line.rstrip()}", flush=True)


def _fit(metrics: dict[str, Any]) -> float:
    return float(metrics["splits"]["train"]["psnr"])


def _link_folder(source: Path, target: Path, scratch: Path) -> None:
    """``target`` (replaced atomically when present) = the folder ``source``, its files hard-linked
    (copied where the file system cannot link); ``scratch``: a folder of the run on the same file
    system for the half-made copy and the replaced one."""
    temporary, old = scratch / f".{target.name}.tmp", scratch / f".{target.name}.old"
    shutil.rmtree(temporary, ignore_errors=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, temporary, copy_function=link)
    swap_in_folder(temporary, target, old)
    shutil.rmtree(old, ignore_errors=True)


def run_candidates(data: MultiViewVideo, source: Path | None, config: ConstructConfig, run_dir: Path, resume: bool,
                   echo: bool, stop_after: int | None, wall_start: float, may_change: tuple[str, ...],
                   run_one: Callable[..., dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Run ``config.candidates.count`` candidates of ``config`` on ``data`` into ``run_dir`` (an opened
    run folder), keep the best fit and return RUN/metrics.json (see the module). With ``source``
    (the folder ``data`` was read from) they run at once, each a ``gen4d reconstruct`` process;
    without it (a dataset made in memory), or with ``stop_after`` (passed on to them), one after another
    in this process, each by ``run_one`` (:func:`gen4d.recon.construct.reconstruct`)."""
    log = LOGGER.info
    if resume and (run_dir / "config.json").is_file():
        check_resume_config(run_dir, config, may_change)
    write_json(run_dir / "config.json", to_dict(config))
    cuda = torch.cuda.device_count() if config.device in ("auto", "cuda") and torch.cuda.is_available() else 0
    configs = candidate_configs(config, cuda)
    folders = [run_dir / CANDIDATES_DIR / str(i) for i in range(len(configs))]
    on_cpu = config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available())
    threads = max(1, torch.get_num_threads() // len(configs)) if on_cpu else 0
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    workers: dict[int, subprocess.Popen] = {}
    readers = []
    for i, (candidate, folder) in enumerate(zip(configs, folders, strict=True)):
        if stop_after is None and (folder / "metrics.json").is_file():
            log(f"candidate {i}: finished earlier ({folder})")
            continue
        log(f"candidate {i}: seed {candidate.seed}, turn kept from a gain of {candidate.turn.min_gain}, "
            f"device {candidate.device}; its run: {folder}")  # fmt: skip
        if source is None or stop_after is not None:  # here, one after another (this run's log shows theirs)
            run_one(data, candidate, folder, resume=is_run(folder), progress=False, echo=None, stop_after=stop_after)
            continue
        folder.parent.mkdir(parents=True, exist_ok=True)
        config_file = folder.parent / f"config_{i}.json"
        write_json(config_file, to_dict(candidate))
        process = subprocess.Popen(
            _command(source, folder, config_file), env=environment, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )  # fmt: skip
        workers[i] = process
        reader = threading.Thread(target=_forward, args=(process.stdout, i, echo), daemon=True)
        reader.start()
        readers.append(reader)
    try:
        for process in workers.values():
            process.wait()
    except KeyboardInterrupt:
        # The candidates got the same Ctrl-C and checkpoint themselves; give them the time to.
        for process in workers.values():
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        raise RunInterrupted(
            f"each candidate saved its last checkpoint (their logs: {run_dir / CANDIDATES_DIR}/<i>/log.txt); "
            "--resume continues them"
        ) from None
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.terminate()
        for reader in readers:
            reader.join(timeout=5)
    if stop_after is not None:
        return {"stopped_at": stop_after}
    failed = [i for i, process in workers.items() if process.returncode != 0]
    done = {
        i: read_json(folders[i] / "metrics.json")
        for i in range(len(folders))
        if (folders[i] / "metrics.json").is_file()
    }
    for i in failed:
        log(f"candidate {i} failed (exit code {workers[i].returncode}); its log: {folders[i] / 'log.txt'}")
    if not done:
        log_file = folders[failed[0]] / "log.txt" if failed else None
        tail = log_file.read_text(encoding="utf-8").splitlines()[-5:] if log_file and log_file.is_file() else []
        raise RuntimeError(
            f"{run_dir}: every candidate run failed; their logs: {run_dir / CANDIDATES_DIR}/<i>/log.txt"
            + ("; the end of the first:\n" + "\n".join(tail) if tail else "")
        )
    chosen = max(done, key=lambda i: _fit(done[i]))
    summary = [
        {"index": i, "seed": configs[i].seed, "turn_min_gain": configs[i].turn.min_gain, "train_psnr": round(_fit(m), 3),
         "turn_kept": bool((m.get("turn") or {}).get("kept")), "train_time_s": m.get("train_time_s"),
         "folder": f"{CANDIDATES_DIR}/{i}"}
        for i, m in sorted(done.items())
    ]  # fmt: skip
    write_json(
        run_dir / SELECTION_FILE, {"chosen": chosen, "by": "highest PSNR on the training orbit", "candidates": summary}
    )
    for name in SHARED_ENTRIES:
        if (folders[chosen] / name).is_dir():
            _link_folder(folders[chosen] / name, run_dir / name, run_dir / CANDIDATES_DIR)
    metrics = dict(done[chosen])
    metrics.update(
        candidates={"chosen": chosen, "by": "highest PSNR on the training orbit", "runs": summary},
        train_time_s=max(m["train_time_s"] for m in done.values()),
        wall_time_s=round(time.perf_counter() - wall_start, 3),
        wall_time_note="this process's end-to-end time, all candidates included (they run at once); a resumed run counts only its own part",
    )  # fmt: skip
    write_json(run_dir / "metrics.json", metrics)
    fits = ", ".join(f"{s['index']}: {s['train_psnr']:.2f} dB" + (" (turn)" if s["turn_kept"] else "") for s in summary)
    log(f"candidates' training PSNR {fits}; kept candidate {chosen} in {metrics['wall_time_s']:.1f} s")
    return metrics
