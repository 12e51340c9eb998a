"""The run folder: a marker that proves gen4d made it, the overwrite / resume policy, the stored config.

Policy (every command that writes a run):

* a missing or empty folder is created and the marker ``RUN/.gen4d-run.json`` is written first;
* a folder with the marker of the same kind may be continued (``resume``) or replaced
  (``overwrite``); replacing deletes only the entries the marker lists (what gen4d writes there),
  never other files;
* a non-empty folder without the marker is refused: gen4d never writes into, or deletes from, a
  folder it cannot prove it made.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen4d.errors import UserError
from gen4d.io import read_json, write_json

__all__ = [
    "MARKER",
    "RunFolder",
    "check_output_folder",
    "check_resume_config",
    "config_differences",
    "is_run",
    "open_run",
    "read_marker",
]

MARKER = ".gen4d-run.json"
MARKER_FORMAT = "gen4d.run/1"


@dataclass(frozen=True)
class RunFolder:
    """An opened run folder."""

    path: Path
    kind: str
    entries: tuple[str, ...]
    existed: bool
    """True when the folder already held a run of this kind (resumed, or replaced with overwrite)."""


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a gen4d run folder, or None when ``path`` is not one."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return None
    try:
        data = read_json(marker)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None


def is_run(path: str | os.PathLike) -> bool:
    return read_marker(path) is not None


def _check_location(path: Path) -> None:
    """UserErrors for an ``--out`` that is a file, lies under a file, or cannot be written."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file, not a folder; pass a folder path (a new or empty folder)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {path}: {parent} is a file, not a folder; pass a folder path")
            break
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: {existing} is not writable; pass a folder you can write to")


def check_output_folder(path: str | os.PathLike, what: str, ours: Callable[[Path], bool]) -> bool:
    """The ``--out`` policy of commands that write a few named files (a report, a benchmark table, a
    render) rather than a run folder: refused (UserError) when it is a file, lies under a file or is
    not writable (as :func:`open_run`), or is a non-empty folder that ``ours`` does not recognise as
    holding ``what``. Returns whether the folder already holds gen4d's output."""
    path = Path(path)
    _check_location(path)
    if not path.is_dir() or not any(path.iterdir()):
        return False
    if not ours(path):
        raise UserError(
            f"--out {path} is not empty and holds no {what}; gen4d does not write into it. "
            "Pass another --out: a new or an empty folder"
        )
    return True


def _remove(path: Path, names: Iterable[str]) -> None:
    for name in names:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"run entry {name!r}: expected a plain name inside the run folder")
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def open_run(
    path: str | os.PathLike,
    kind: str,
    entries: Iterable[str],
    resume: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    check_only: bool = False,
) -> RunFolder:
    """Apply the run-folder policy to ``path`` for a run of ``kind`` that writes ``entries`` (names
    directly inside the folder) and return the opened folder; raises UserError when refused.
    ``check_only``: raise what would be refused but write and delete nothing (for the other
    processes of a multi-process run, before the main process opens the folder)."""
    from gen4d import __version__

    path = Path(path)
    entries = tuple(entries)
    if resume and overwrite:
        raise UserError("--overwrite and --resume exclude each other")
    _check_location(path)
    marker = read_marker(path) if path.is_dir() else None
    if marker is None and path.is_dir() and any(path.iterdir()):
        why = f"its {MARKER} is damaged" if (path / MARKER).is_file() else f"no {MARKER}"
        raise UserError(
            f"{path} is not empty and is not a gen4d run folder ({why}); gen4d does not write into it. "
            "Pass another --out: a new or an empty folder"
        )
    if marker is not None and marker.get("kind") != kind:
        raise UserError(f"{path} holds a gen4d {marker.get('kind')} run, not a {kind} run; pass another --out")
    existed = marker is not None
    if check_only:
        if marker is not None and not (resume or overwrite) and any((path / n).exists() for n in entries):
            raise UserError(f"{path} already holds a gen4d {kind} run; pass --resume, --overwrite or another --out")
        return RunFolder(path, kind, entries, existed)
    if marker is not None:
        # Only the names this kind of run declares are deleted: the marker is a file in the folder, so the
        # names it lists are not trusted (a crafted one could name '../elsewhere').
        written = entries
        present = [name for name in written if (path / name).exists()]
        if overwrite:
            _remove(path, written)
            _remove(path, [MARKER])
            marker = None
        elif not resume and present:
            raise UserError(
                f"{path} already holds a gen4d {kind} run ({', '.join(present[:4])}); pass --resume to continue it, "
                f"--overwrite to replace it (deletes only what gen4d wrote there), or another --out"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        if marker is None:
            created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            write_json(
                path / MARKER,
                {"format": MARKER_FORMAT, "kind": kind, "command": command or kind, "gen4d_version": __version__,
                 "created": created, "entries": list(entries)},
            )  # fmt: skip
    except OSError as err:
        raise UserError(f"--out {path}: cannot create the run folder ({err.strerror or err})") from None
    return RunFolder(path, kind, entries, existed)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def config_differences(stored: dict[str, Any], current: dict[str, Any], may_change: Iterable[str] = ()) -> list[str]:
    """Dotted names of the fields that differ between two config dicts, except those in
    ``may_change`` (a name covers its sub-fields: ``output`` covers ``output.video``)."""
    a, b = _flatten(stored), _flatten(current)
    allowed = tuple(may_change)
    differ = [k for k in sorted(set(a) | set(b)) if a.get(k, "<missing>") != b.get(k, "<missing>")]
    return [k for k in differ if not any(k == m or k.startswith(m + ".") for m in allowed)]


def check_resume_config(run: str | os.PathLike, config: Any, may_change: Iterable[str] = ()) -> None:
    """Raise UserError naming the fields when the dataclass ``config`` differs from the run's stored
    ``config.json`` in fields that may not change on resume. The stored config is read as
    ``type(config)`` (:func:`gen4d.config.load_config`), so fields added since take their defaults
    and layouts of older gen4d versions are upgraded before comparing."""
    from gen4d.config import load_config, to_dict

    path = Path(run) / "config.json"
    if not path.is_file():
        return
    differ = config_differences(to_dict(load_config(type(config), path)), to_dict(config), may_change)
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise UserError(
            f"{run}: --resume with a config that differs from the stored {path} in {shown} "
            f"(only {', '.join(sorted(may_change))} may change); drop those options, or start a new run in another --out"
        )
