"""Batches of assets for ``gen4d render --assets LIST`` and ``gen4d curate``: asset lists, Objaverse
ids, a resumable results file and the orchestration as Ray tasks (or local threads).

One task per asset; each task runs its Blender in a subprocess of its own (:func:`run_process`), so
a crash or a timeout costs that asset only. The driver alone writes the results file (a header line,
then one JSON record per asset, flushed as each finishes): a rerun skips every asset already in it,
and an asset listed twice runs once, so no asset is done twice.

Ray (``pip install 'gen4d[ray]'``) is imported lazily. Without an address the driver starts a local
Ray instance (``num_cpus`` = the number of Blender processes at once); with one (``auto``, or
``HOST:6379`` of a head started by ``ray start --head``) it joins that cluster, whose nodes need
gen4d installed and the asset and output paths on a shared file system. A task whose worker process
dies (killed, out of memory) is retried up to ``max_retries`` times; one that runs past its timeout
is killed and recorded as failed with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gen4d.config import ConfigError, check_non_negative, check_positive

__all__ = [
    "INSTALL_HINT",
    "OBJAVERSE_CACHE",
    "BatchConfig",
    "Item",
    "ResultsFormat",
    "TaskTimeout",
    "asset_id",
    "read_asset_list",
    "resolve_assets",
    "run_process",
    "check_results_file",
    "read_results",
    "run_batch",
    "ray_available",
    "render_threads",
]

INSTALL_HINT = "pip install 'gen4d[ray]' (or pass --engine threads to run the assets in local threads)"
OBJAVERSE_CACHE = Path("~/.objaverse/hf-objaverse-v1").expanduser()
"""Where the ``objaverse`` package keeps downloaded objects: ``glbs/<000-NNN>/<uid>.glb`` below it."""
ASSET_SUFFIXES = (".glb", ".gltf", ".fbx", ".blend")
_OBJAVERSE_UID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class BatchConfig:
    """How a batch of assets runs (Ray or local threads, retries, timeouts)."""

    engine: Literal["ray", "threads"] = "ray"
    """ray: one Ray task per asset (local instance or a cluster); threads: local threads, no Ray."""
    ray_address: str = ""
    """Ray cluster to join (auto, or HOST:PORT of `ray start --head`); empty: start a local instance."""
    workers: int = 0
    """Assets at once on this machine: local Ray instance's CPUs or threads (0: every CPU); one Blender each."""
    max_retries: int = 2
    """Ray: times a task is run again after its worker process died (killed, out of memory)."""
    timeout_s: float = 0.0
    """Seconds one asset may take before its Blender process is killed and it is recorded as failed (0: none)."""
    kill_grace_s: float = 30.0
    """Ray: seconds past every attempt's timeout before the driver cancels a task that ignored it."""

    def __post_init__(self) -> None:
        if self.engine not in ("ray", "threads"):
            raise ConfigError("engine", f"expected 'ray' or 'threads', got {self.engine!r}", "BatchConfig")
        check_non_negative(self, "workers", "max_retries", "timeout_s")
        check_positive(self, "kill_grace_s")


@dataclass(frozen=True)
class Item:
    """One asset of a batch: the list entry (the key in the results file) and the file it names."""

    entry: str
    """The asset as listed (path, procedural:SEED or Objaverse id)."""
    path: str | None
    """Resolved asset file or procedural name; None when it could not be resolved."""
    reason: str = ""
    """Why ``path`` is None."""


@dataclass(frozen=True)
class ResultsFormat:
    """What a results file holds: its header line and how its records look."""

    header: dict[str, Any]
    """First line of the file; proves gen4d wrote it (so a rerun may resume it)."""
    what: str
    """Name in messages ("gen4d {what} results file")."""
    is_record: Callable[[Any], bool]
    """True for a line that is a record (a dict with "asset")."""
    legacy: Callable[[Any], bool] | None = None
    """True for records of an earlier gen4d that wrote no header (accepted without it)."""


class TaskTimeout(TimeoutError):
    """An asset's process ran past its timeout and was killed."""


def render_threads(config: BatchConfig) -> int:
    """Blender render threads per task so the tasks together use the CPUs once: 1 on a Ray
    cluster (one CPU per task), CPUs // workers on this machine, 0 (Blender's choice) for one worker."""
    if config.engine == "ray" and config.ray_address:
        return 1
    cpus = os.cpu_count() or 1
    parallel = config.workers or cpus
    return 0 if parallel == 1 else max(1, cpus // parallel)


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def asset_id(path: Path, root: Path) -> str:
    """A file-system-safe, unique id of an asset: its path below ``root`` (else its name) and a
    short hash of that relative path (else of the whole path)."""
    inside = path.is_relative_to(root)
    relative = path.relative_to(root).as_posix() if inside else path.name
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in relative)[:80]
    return f"{stem}-{hashlib.sha1((relative if inside else path.as_posix()).encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------------------
# Asset lists
# ---------------------------------------------------------------------------------------
def read_asset_list(path: str | Path) -> list[str]:
    """Entries of an asset list: one per line, surrounding spaces stripped; blank lines and lines
    starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        found = "a folder" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"--assets {path}: {found} (expected a text file, one asset path or id a line)")
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def _objaverse_index(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.rglob("*.glb")} if folder.is_dir() else {}


def resolve_assets(entries: Sequence[str], base_dir: str | Path, objaverse_dir: str | Path | None = None) -> list[Item]:
    """Resolve list entries, once each in list order: ``procedural:SEED[...]`` names as they are,
    files (relative to ``base_dir``) to absolute paths, 32-hex Objaverse ids to ``<uid>.glb`` found
    anywhere below ``objaverse_dir`` (default :data:`OBJAVERSE_CACHE`; nothing is downloaded).
    Entries that resolve to nothing get ``path=None`` and the reason."""
    from gen4d.data.procedural import is_procedural

    base = Path(base_dir)
    index: dict[str, Path] | None = None
    items: list[Item] = []
    for entry in dict.fromkeys(entries):
        if is_procedural(entry):
            items.append(Item(entry, entry))
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_file():
            if path.suffix.lower() in ASSET_SUFFIXES:
                items.append(Item(entry, str(path.resolve())))
            else:
                items.append(Item(entry, None, f"unsupported format {path.suffix!r} (expected {ASSET_SUFFIXES})"))
        elif _OBJAVERSE_UID.match(entry.lower()):
            folder = Path(objaverse_dir).expanduser() if objaverse_dir else OBJAVERSE_CACHE
            if index is None:
                index = _objaverse_index(folder)
            found = index.get(entry.lower())
            reason = f"Objaverse id not found as {entry.lower()}.glb below {folder} (download it first)"
            items.append(Item(entry, str(found.resolve()), "") if found else Item(entry, None, reason))
        else:
            items.append(Item(entry, None, f"no such asset file {path} (and not a 32-hex Objaverse id)"))
    first: dict[str, str] = {}
    for i, item in enumerate(items):  # two entries naming one file would render into one folder at once
        if item.path is not None:
            if item.path in first:
                items[i] = Item(item.entry, None, f"the same asset as {first[item.path]!r}, listed earlier")
            first.setdefault(item.path, item.entry)
    return items


# ---------------------------------------------------------------------------------------
# One process per asset
# ---------------------------------------------------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child is killed when its parent dies, so a killed Ray worker leaves no Blender."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_process(
    argv: Sequence[str],
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run ``argv`` to its end, passing each line of its stdout and stderr to ``on_line``; returns
    the exit status. Raises :class:`TaskTimeout` after killing it past ``timeout`` seconds. On
    Linux the process dies with its parent."""
    import sys

    process = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        bufsize=1,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if on_line is not None:
                on_line(line)
        process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise TaskTimeout(f"timed out after {timeout:g} s (process killed)")
    return process.returncode


# ---------------------------------------------------------------------------------------
# Results file
# ---------------------------------------------------------------------------------------
def _lines(path: Path) -> list[Any]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append(None)
    return records


def check_results_file(
    path: str | Path, header: dict[str, Any], what: str, legacy: Callable[[Any], bool] | None = None
) -> None:
    """Refuse (ValueError naming ``path``) to write results into an existing file that gen4d did not
    write: one whose first line is not ``header`` (or, with ``legacy``, whose complete lines are
    not all records of an earlier gen4d without the header)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path}: is a folder; give a results file such as {path / 'results.jsonl'}")
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        records = _lines(path)
    except (UnicodeDecodeError, OSError) as err:
        raise ValueError(
            f"--out {path}: exists and is not a gen4d {what} results file ({err}); "
            "choose another --out or move the file away"
        ) from None
    if records and isinstance(records[0], dict) and records[0].get("format") == header["format"]:
        return
    complete = records[:-1] if records and records[-1] is None else records  # an interrupted last line
    if legacy is not None and complete and all(legacy(r) for r in complete):
        return
    raise ValueError(
        f"--out {path}: exists and is not a gen4d {what} results file (no gen4d header line); "
        "gen4d will not overwrite it: choose another --out or move the file away"
    )


def read_results(path: str | Path, is_record: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
    """Asset -> its last record in a results file (the header and lines that are not valid JSON,
    e.g. the last line of an interrupted run, are ignored)."""
    path = Path(path)
    if not path.is_file():
        return {}
    return {r["asset"]: r for r in _lines(path) if is_record(r)}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` so two runs never write one results file."""
    import fcntl

    lock_path = path.with_name(f".{path.name}.lock")
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {path}: another gen4d run is writing it (lock {lock_path})") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------
# Running a batch
# ---------------------------------------------------------------------------------------
Work = Callable[[Item, "float | None"], dict[str, Any]]
"""Per-asset function: (item, timeout in seconds or None) -> its record (must not raise for a bad asset)."""
Failed = Callable[[Item, str], dict[str, Any]]
"""(item, reason) -> the record of an asset that could not be done."""


def _task(work: Work, failed: Failed, item: Item, timeout: float | None) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        record = work(item, timeout)
    except Exception as err:  # a bug in work: recorded, never retried (retries are for dead workers)
        record = failed(item, f"{type(err).__name__}: {' '.join(str(err).split())[:1000]}")
    record["asset"] = item.entry
    record.setdefault("seconds", round(time.perf_counter() - began, 2))
    return record


def _run_threads(todo: list[Item], work: Work, failed: Failed, config: BatchConfig, emit) -> None:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    timeout = config.timeout_s or None
    with ThreadPoolExecutor(max_workers=config.workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(_task, work, failed, item, timeout) for item in todo]
        for future in as_completed(futures):
            emit(future.result())


def _run_ray(todo: list[Item], work: Work, failed: Failed, config: BatchConfig, emit) -> None:
    import ray

    started = False
    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=config.workers or None, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(_task).options(num_cpus=1, max_retries=config.max_retries, retry_exceptions=False)
        timeout = config.timeout_s or None
        # Every attempt has its own timeout, enforced in the task; the driver cancels a task past all of them.
        budget = timeout * (config.max_retries + 1) + config.kill_grace_s if timeout else None
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = list(todo)
        pending: dict[Any, tuple[Item, float]] = {}
        while queue or pending:
            while queue and len(pending) < slots:  # submit no more than can run, so submission ~ start
                item = queue.pop(0)
                pending[remote.remote(work, failed, item, timeout)] = (item, time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                item, _ = pending.pop(ref)
                try:
                    emit(ray.get(ref))
                except ray.exceptions.TaskCancelledError:
                    emit(failed(item, f"timed out after {budget:g} s (task cancelled)"))
                except ray.exceptions.RayError as err:  # the worker died on every attempt
                    message = " ".join(str(err).split())[:300]
                    emit(failed(item, f"failed after {config.max_retries + 1} attempt(s): {message}"))
            if budget is not None:
                now = time.monotonic()
                for ref, (_, submitted) in list(pending.items()):
                    if now - submitted > budget:
                        ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()


def run_batch(
    items: Sequence[Item],
    work: Work,
    failed: Failed,
    results_path: str | Path,
    fmt: ResultsFormat,
    config: BatchConfig = BatchConfig(),
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run ``work`` on every item not yet in ``results_path``; returns asset -> record for every
    asset in the file (old and new).

    :func:`check_results_file` refuses a file without ``fmt.header`` as its first line. An
    item that did not resolve is recorded as ``failed(item, reason)`` with ``"unresolved": true``
    and is tried again by a rerun (once its file exists); every other recorded asset is skipped.
    """
    from gen4d.io import atomic_path

    if config.engine == "ray" and not ray_available():
        raise ImportError(f"running a batch on Ray needs ray: {INSTALL_HINT}")
    results_path = Path(results_path)
    check_results_file(results_path, fmt.header, fmt.what, fmt.legacy)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(results_path):
        results = read_results(results_path, fmt.is_record)
        # Rewrite the header and kept records so an interrupted last line does not glue onto the next record.
        with atomic_path(results_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in [fmt.header, *results.values()]))
        done = {k for k, r in results.items() if not r.get("unresolved")}
        todo = [item for item in dict.fromkeys(items) if item.entry not in done]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=fmt.what, unit="asset")
        with open(results_path, "a") as handle:

            def emit(record: dict[str, Any]) -> None:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                results[record["asset"]] = record
                if bar is not None:
                    bar.update(1)

            for item in todo:
                if item.path is None:
                    emit({**failed(item, item.reason), "unresolved": True})
            runnable = [item for item in todo if item.path is not None]
            if runnable:
                (_run_ray if config.engine == "ray" else _run_threads)(runnable, work, failed, config, emit)
        if bar is not None:
            bar.close()
    return results
