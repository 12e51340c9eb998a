"""Small I/O helpers shared across gen4d: atomic writes, JSON, images."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "swap_in_folder",
    "write_json",
    "read_json",
    "read_safetensors",
    "read_torch_state_dict",
    "current_umask",
]


def current_umask() -> int:
    """The process's file-creation mask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it; put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``
    (atomic on POSIX), so a crash never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file as 0600; give the result the mode a plain open() would have.
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def swap_in_folder(new: Path, target: Path, old: Path) -> None:
    """Put the complete folder ``new`` at ``target`` with two renames, so ``target`` is never half
    there: the previous ``target`` (if any) moves to ``old`` (emptied first), which the caller then
    deletes or keeps. All three lie in one folder gen4d writes."""
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file; a damaged or foreign file is a ValueError naming it
    (safetensors raises its own error type, which would otherwise surface as a traceback)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return load_file(str(path), device=device)
    except Exception as err:  # SafetensorError (damaged header), or a truncated file
        raise ValueError(
            f"{path}: not a readable safetensors file ({_first_line(err)}); the file is damaged or was not "
            "written by gen4d: restore it or produce it again"
        ) from err


def read_torch_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, Any]:
    """A torch state dict read with ``torch.load(weights_only=True)`` only (never an arbitrary
    unpickle); a top-level ``state_dict`` entry is unwrapped. A file that is not such a checkpoint
    (damaged, another format, a pickle of objects) is a ValueError naming it and ``what``."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    # Anything that is not a torch checkpoint fails inside the loader with assorted errors.
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path}: not readable as {what} with torch.load(weights_only=True) ({type(err).__name__}: "
            f"{_first_line(err)}); gen4d never unpickles arbitrary objects. Pass the original weight file"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: expected {what} as a state dict (name -> tensor), got {type(state).__name__}; "
            "pass the original weight file"
        )
    return state
