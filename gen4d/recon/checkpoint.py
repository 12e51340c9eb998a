"""Model checkpoints of a 4D run: ``RUN/checkpoint/`` = the model (``model.safetensors`` +
``model.json``), the training state for ``--resume`` (``training_state.safetensors`` + ``.json``,
see :mod:`gen4d.run.checkpoint`) and ``checkpoint.json`` (step, stage, ...).

Everything is read from safetensors and JSON only: no pickle, so opening a run folder someone else
made (``--resume``, ``gen4d eval``, ``gen4d view``, the exporters) cannot execute code. A file such
as a stray ``training_state.pt`` is never opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.run.checkpoint import CHECKPOINT_DIR, load_tree, save_tree, write_checkpoint
from gen4d.run.checkpoint import find_checkpoint as _find
from gen4d.run.engine import STATE

__all__ = ["CHECKPOINT_DIR", "find_checkpoint", "load_checkpoint", "load_run", "save_checkpoint"]


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: DynamicGaussians,
    training_state: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    keep: int = 1,
) -> Path:
    """Atomically replace ``RUN/checkpoint`` by the current model (+ ``training_state``, a tree of
    tensors and JSON values, for ``--resume``; ``info`` is stored as ``checkpoint.json``)."""

    def write(folder: Path) -> None:
        model.save(folder)
        if training_state is not None:
            save_tree(folder, STATE, training_state)

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return write_checkpoint(run_dir, write, info or {}, keep=keep)


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The latest complete model checkpoint folder of a run, or None."""
    return _find(run_dir, required="model.safetensors")


def load_checkpoint(
    run_dir: str | os.PathLike, device: torch.device | str = "cpu", training_state: bool = True
) -> tuple[DynamicGaussians, dict[str, Any] | None, dict[str, Any]]:
    """(model, training state or None, info) of a run's latest checkpoint."""
    from gen4d.io import read_json

    folder = find_checkpoint(run_dir)
    if folder is None:
        raise FileNotFoundError(
            f"{run_dir}: no checkpoint (expected {Path(run_dir) / CHECKPOINT_DIR}/model.safetensors)"
        )
    model = DynamicGaussians.load(folder, device=device)
    state = None
    if training_state and (folder / f"{STATE}.json").is_file():
        state = load_tree(folder, STATE, device=device)
    return model, state, read_json(folder / "checkpoint.json")


def load_run(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> DynamicGaussians:
    """The model of a run directory's final (latest) checkpoint, in eval mode."""
    model, _, _ = load_checkpoint(run_dir, device=device, training_state=False)
    return model.eval()
