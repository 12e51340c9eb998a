"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``RUN/checkpoint/`` written under ``RUN/.checkpoint.tmp`` and swapped in
with two renames, so ``RUN/checkpoint`` is always the latest complete one (if a crash falls between
the renames, the previous one is found under ``RUN/.checkpoint.old``). With ``keep > 1`` older
checkpoints move to ``RUN/checkpoints/step_XXXXXXX/``.

Training state (optimiser states, RNG states, densification state, step, history) is a *tree* of
dicts, lists, tuples, numbers, strings and tensors; :func:`save_tree` stores its tensors in
``NAME.safetensors`` and the rest, with references to the tensors, in ``NAME.json``. Loading
reads only these two formats, so opening someone else's run folder cannot execute code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gen4d.io import read_json, read_safetensors, swap_in_folder, write_json

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_ENTRIES",
    "find_checkpoint",
    "flatten_optimizer_state",
    "load_tree",
    "rng_state",
    "save_tree",
    "set_rng_state",
    "unflatten_optimizer_state",
    "write_checkpoint",
]

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_ENTRIES = (CHECKPOINT_DIR, ".checkpoint.old", ".checkpoint.tmp", "checkpoints")
"""What checkpoints add to a run folder."""
TREE_FORMAT = "gen4d.tree/1"
_STEP = re.compile(r"^step_(\d+)$")


# -- trees of tensors and JSON values --------------------------------------------------------------
def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (tensors, numbers, strings, lists, dicts)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode(v, tensors) for k, v in obj.items()}
    return obj


def save_tree(folder: str | os.PathLike, name: str, tree: Any) -> None:
    """Write ``tree`` as ``folder/name.safetensors`` (its tensors) + ``folder/name.json``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    encoded = _encode(tree, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"), metadata={"format": TREE_FORMAT})
    write_json(folder / f"{name}.json", {"format": TREE_FORMAT, "tree": encoded})


def load_tree(folder: str | os.PathLike, name: str, device: torch.device | str = "cpu") -> Any:
    """The tree :func:`save_tree` wrote (tensors on ``device``)."""
    folder = Path(folder)
    meta = read_json(folder / f"{name}.json")
    if not isinstance(meta, dict) or meta.get("format") != TREE_FORMAT:
        raise ValueError(f"{folder / name}.json: not a gen4d training state (format {TREE_FORMAT!r} expected)")
    tensors = read_safetensors(folder / f"{name}.safetensors", device=str(device))
    return _decode(meta["tree"], tensors)


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """An optimiser state dict -> (tensors, string metadata) for one safetensors file."""
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
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in json.loads(meta.get("scalars", "{}")).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": json.loads(meta["param_groups"])}


# -- RNG states ----------------------------------------------------------------------------------------
def rng_state(
    device: torch.device | None = None, generators: dict[str, torch.Generator] | None = None
) -> dict[str, Any]:
    """torch's CPU RNG state, the CUDA one of ``device`` (when it is a CUDA device) and those of
    ``generators``, as uint8 tensors."""
    out: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    for name, gen in (generators or {}).items():
        out[f"generator.{name}"] = gen.get_state()
    return out


def set_rng_state(
    state: dict[str, Any], device: torch.device | None = None, generators: dict[str, torch.Generator] | None = None
) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    for name, gen in (generators or {}).items():
        if f"generator.{name}" in state:
            gen.set_state(state[f"generator.{name}"].cpu())


# -- checkpoint folders -------------------------------------------------------------------------------
def write_checkpoint(
    run_dir: str | os.PathLike, write: Callable[[Path], None], info: dict[str, Any], keep: int = 1
) -> Path:
    """Atomically replace ``RUN/checkpoint`` by a folder that ``write(folder)`` fills (+ ``info``
    as ``checkpoint.json``); keep the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    target, tmp, old = run_dir / CHECKPOINT_DIR, run_dir / ".checkpoint.tmp", run_dir / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    write_json(tmp / "checkpoint.json", info)
    swap_in_folder(tmp, target, old)
    if old.exists() and keep > 1:
        older = run_dir / "checkpoints"
        older.mkdir(exist_ok=True)
        step = int(read_json(old / "checkpoint.json").get("step", 0)) if (old / "checkpoint.json").is_file() else 0
        destination = older / f"step_{step:07d}"
        shutil.rmtree(destination, ignore_errors=True)
        os.replace(old, destination)
        steps = sorted((int(m.group(1)), p) for p in older.iterdir() if (m := _STEP.match(p.name)))
        for _, path in steps[: max(len(steps) - (keep - 1), 0)]:
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


def find_checkpoint(run_dir: str | os.PathLike, required: str = "checkpoint.json") -> Path | None:
    """The latest complete checkpoint folder of a run (``RUN/checkpoint``, else the previous one
    a crash between the two renames left in ``RUN/.checkpoint.old``), or None."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / CHECKPOINT_DIR, run_dir / ".checkpoint.old"):
        if (candidate / "checkpoint.json").is_file() and (candidate / required).is_file():
            return candidate
    return None
