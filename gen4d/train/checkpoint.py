"""Resumable training checkpoints, all tensors in safetensors (no pickle).

A checkpoint is a folder ``<run>/checkpoints/step_<N>/`` holding ``model.safetensors`` (the trained
weights), ``ema.safetensors`` (their moving average), ``optimizer.safetensors`` (the optimiser's
per-parameter state tensors; its hyper-parameters and scalar state in the metadata) and
``state.json`` (step, EMA update count, AMP grad-scaler state, elapsed time ...). The folder is
written under a temporary name and renamed, so a crash never leaves a half checkpoint; the newest
``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from gen4d.io import read_json, write_json

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "flatten_optimizer_state", "unflatten_optimizer_state"]

_STEP = re.compile(r"^step_(\d+)$")


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An optimiser state dict -> (tensors, string metadata) for safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in json.loads(meta.get("scalars", "{}")).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _STEP.match(p.name))
             and (p / "state.json").is_file()]
    return max(steps)[1] if steps else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None,
    optimizer_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(ema_state, str(tmp / "ema.safetensors"))
    tensors, meta = flatten_optimizer_state(optimizer_state)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata=meta)
    write_json(tmp / "state.json", {"step": int(step), **state})
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    old = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)))
    for _, path in old[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """-> {'model': tensors, 'ema': tensors or None, 'optimizer': state dict, 'state': dict}."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (no state.json)")
    with safe_open(str(path / "optimizer.safetensors"), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    ema = load_file(str(path / "ema.safetensors")) if (path / "ema.safetensors").is_file() else None
    return {
        "model": load_file(str(path / "model.safetensors")),
        "ema": ema,
        "optimizer": unflatten_optimizer_state(tensors, meta),
        "state": read_json(path / "state.json"),
    }
