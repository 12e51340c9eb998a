"""Run checkpoints: ``RUN/checkpoint/`` = the model (safetensors + json) and, for resuming, the
training state (optimisers, densification state, RNG states, step) in ``training_state.pt``.

A checkpoint is written into a temporary folder and swapped in with two renames, so
``RUN/checkpoint`` is always the latest complete one; if a crash falls between the renames,
the previous checkpoint is found under ``RUN/.checkpoint.old``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from gen4d.io import read_json, write_json
from gen4d.recon.model import DynamicGaussians

__all__ = ["save_checkpoint", "load_checkpoint", "find_checkpoint", "load_run", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "checkpoint"


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: DynamicGaussians,
    training_state: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Atomically replace ``RUN/checkpoint`` by the current model (+ ``training_state`` for
    ``--resume``; ``info`` is stored as ``checkpoint.json``, e.g. the step and stage)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target, tmp, old = run_dir / CHECKPOINT_DIR, run_dir / ".checkpoint.tmp", run_dir / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    if training_state is not None:
        torch.save(training_state, tmp / "training_state.pt")
    write_json(tmp / "checkpoint.json", info or {})
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The latest complete checkpoint folder of a run, or None."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / CHECKPOINT_DIR, run_dir / ".checkpoint.old"):
        if (candidate / "model.safetensors").is_file() and (candidate / "checkpoint.json").is_file():
            return candidate
    return None


def load_checkpoint(
    run_dir: str | os.PathLike, device: torch.device | str = "cpu", training_state: bool = True
) -> tuple[DynamicGaussians, dict[str, Any] | None, dict[str, Any]]:
    """(model, training state or None, info) of a run's latest checkpoint."""
    folder = find_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (expected {Path(run_dir) / CHECKPOINT_DIR}/model.safetensors)")
    model = DynamicGaussians.load(folder, device=device)
    state = None
    if training_state and (folder / "training_state.pt").is_file():
        state = torch.load(folder / "training_state.pt", map_location=device, weights_only=False)
    return model, state, read_json(folder / "checkpoint.json")


def load_run(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> DynamicGaussians:
    """The model of a run directory's final (latest) checkpoint, in eval mode."""
    model, _, _ = load_checkpoint(run_dir, device=device, training_state=False)
    return model.eval()
