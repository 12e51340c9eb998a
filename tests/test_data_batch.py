"""Batches of assets (gen4d.data.batch): asset lists and Objaverse ids, and Ray tasks on a local
head started here on 127.0.0.1 (one cluster for the module): completion, resume without repeats,
a killed worker's asset retried, per-task timeouts; then gen4d render / curate --assets on Ray.

The batch tests use a Blender-like fake worker (a subprocess per asset) so they take seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from gen4d.data.batch import (
    BatchConfig,
    Item,
    ResultsFormat,
    TaskTimeout,
    ray_available,
    read_asset_list,
    resolve_assets,
    run_batch,
    run_process,
)
from gen4d.data.blender import bpy_available

HEADER = {"format": "gen4d.test-batch", "version": 1}
needs_ray = pytest.mark.skipif(not ray_available(), reason="ray is not installed (pip install 'gen4d[ray]')")
needs_bpy = pytest.mark.skipif(
    not bpy_available(), reason="bpy is not installed (pip install 'gen4d[render]', Python 3.11)"
)
CHILD = "import os, sys, time; print(os.getpid(), flush=True); time.sleep(float(sys.argv[1]))"


def is_record(value) -> bool:
    return isinstance(value, dict) and "asset" in value and "status" in value


FMT = ResultsFormat(HEADER, "test", is_record)


def failed(item: Item, reason: str) -> dict:
    return {"asset": item.entry, "status": "error", "reason": reason}


def fake_work(item: Item, timeout: float | None) -> dict:
    """Blender-like: the asset file (JSON) says how long its subprocess runs, whether the worker
    process kills itself on the first attempt (leaving its subprocess behind) or ignores the
    timeout. Every attempt appends a line to <asset>.calls; child pids go to <asset>.pids."""
    path = Path(item.path)
    spec = json.loads(path.read_text())
    with open(path.with_suffix(".calls"), "a") as calls:
        calls.write(f"{os.getpid()}\n")

    def note_pid(line: str) -> None:
        with open(path.with_suffix(".pids"), "a") as pids:
            pids.write(line)

    marker = path.with_suffix(".died")
    if spec.get("die_once") and not marker.exists():
        marker.write_text("")
        thread = threading.Thread(target=run_process, args=([sys.executable, "-c", CHILD, "60"], None, note_pid))
        thread.start()
        while not path.with_suffix(".pids").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task, its child still running
    if spec.get("ignore_timeout"):
        time.sleep(spec["sleep"])
    try:
        run_process([sys.executable, "-c", CHILD, str(spec.get("sleep", 0))], timeout, note_pid)
    except TaskTimeout as err:
        return failed(item, str(err))
    return {"asset": item.entry, "status": "done", "reason": ""}


def make_assets(folder: Path, **specs) -> list[Item]:
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for name, spec in specs.items():
        (folder / f"{name}.json").write_text(json.dumps(spec))
        items.append(Item(name, str(folder / f"{name}.json")))
    return items


def calls(item: Item) -> int:
    path = Path(item.path).with_suffix(".calls")
    return len(path.read_text().splitlines()) if path.exists() else 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def child_pids(item: Item) -> list[int]:
    return [int(line) for line in Path(item.path).with_suffix(".pids").read_text().split()]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- asset lists (no Ray) --------------------------------------------------------------------------
def test_asset_list_paths_procedural_and_objaverse_ids(tmp_path):
    uid, unknown = "0123456789abcdef0123456789abcdef", "f" * 32
    cache = tmp_path / "objaverse" / "hf-objaverse-v1"  # the objaverse package's layout
    (cache / "glbs" / "000-012").mkdir(parents=True)
    (cache / "glbs" / "000-012" / f"{uid}.glb").write_bytes(b"glTF")
    (tmp_path / "lists" / "a.glb").parent.mkdir()
    (tmp_path / "lists" / "a.glb").write_bytes(b"glTF")
    (tmp_path / "lists" / "notes.txt").write_text("")
    listing = tmp_path / "lists" / "assets.txt"
    lines = ["# comment", "a.glb", "", f"  {uid}  ", "procedural:3:motion=leave", unknown, "missing.glb", "notes.txt"]
    listing.write_text("\n".join([*lines, "a.glb", "./a.glb"]) + "\n")
    entries = read_asset_list(listing)
    assert entries == [
        *["a.glb", uid, "procedural:3:motion=leave", unknown, "missing.glb", "notes.txt", "a.glb", "./a.glb"]
    ]
    items = {i.entry: i for i in resolve_assets(entries, listing.parent, cache)}
    assert len(items) == 7  # a.glb listed twice resolves once; ./a.glb names the same file
    assert items["./a.glb"].path is None and "the same asset as 'a.glb'" in items["./a.glb"].reason
    assert items["a.glb"].path == str((tmp_path / "lists" / "a.glb").resolve())
    assert items[uid].path == str((cache / "glbs" / "000-012" / f"{uid}.glb").resolve())
    assert items["procedural:3:motion=leave"].path == "procedural:3:motion=leave"
    assert items[unknown].path is None and "Objaverse id not found" in items[unknown].reason
    assert items["missing.glb"].path is None and "no such asset file" in items["missing.glb"].reason
    assert items["notes.txt"].path is None and "unsupported format" in items["notes.txt"].reason


def test_run_process_kills_past_its_timeout():
    pids = []
    began = time.monotonic()
    with pytest.raises(TaskTimeout, match="timed out after 0.5 s"):
        run_process([sys.executable, "-c", CHILD, "30"], 0.5, lambda line: pids.append(int(line)))
    assert time.monotonic() - began < 10 and pids and not alive(pids[0])


def test_threads_engine_shares_the_driver(tmp_path):
    items = make_assets(tmp_path / "assets", a={}, b={})
    out = tmp_path / "results.jsonl"
    config = BatchConfig(engine="threads", workers=2)
    run_batch(items, fake_work, failed, out, FMT, config, progress=False)
    assert run_batch(items, fake_work, failed, out, FMT, config, progress=False).keys() == {"a", "b"}
    assert [calls(i) for i in items] == [1, 1] and len(records(out)) == 3


# -- Ray --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    if not ray_available():
        pytest.skip("ray is not installed (pip install 'gen4d[ray]')")
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_batch_completes_resumes_and_never_repeats(ray_cluster, tmp_path):
    items = make_assets(tmp_path / "assets", a={}, b={"sleep": 0.2}, c={})
    missing = Item("later", None, "no such asset file later.json")
    out = tmp_path / "results.jsonl"
    config = BatchConfig(workers=2)
    results = run_batch([*items, items[0], missing], fake_work, failed, out, FMT, config, progress=False)
    assert {k: r["status"] for k, r in results.items()} == {"a": "done", "b": "done", "c": "done", "later": "error"}
    assert results["later"]["unresolved"] and [calls(i) for i in items] == [1, 1, 1]
    header, *lines = records(out)
    assert header == HEADER and sorted(r["asset"] for r in lines) == ["a", "b", "c", "later"]
    # A rerun does nothing new; the unresolved asset runs once it exists.
    run_batch(items, fake_work, failed, out, FMT, config, progress=False)
    assert [calls(i) for i in items] == [1, 1, 1] and len(records(out)) == 5
    (later,) = make_assets(tmp_path / "assets", later={})
    results = run_batch([*items, later], fake_work, failed, out, FMT, config, progress=False)
    assert results["later"]["status"] == "done" and calls(later) == 1 and len(records(out)) == 6


@needs_ray
def test_ray_retries_a_killed_worker_and_its_blender_dies_with_it(ray_cluster, tmp_path):
    (dying,) = make_assets(tmp_path / "assets", dying={"die_once": True})
    out = tmp_path / "results.jsonl"
    results = run_batch([dying], fake_work, failed, out, FMT, BatchConfig(max_retries=2), progress=False)
    assert results["dying"]["status"] == "done" and calls(dying) == 2
    assert [r["asset"] for r in records(out)[1:]] == ["dying"]  # recorded once
    orphan = child_pids(dying)[0]  # the first attempt's subprocess, started before its worker died
    deadline = time.monotonic() + 10
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(orphan)
    # Without retries, the asset is recorded as failed with the reason.
    (once,) = make_assets(tmp_path / "more", once={"die_once": True})
    results = run_batch([once], fake_work, failed, out, FMT, BatchConfig(max_retries=0), progress=False)
    assert results["once"]["status"] == "error" and "failed after 1 attempt(s)" in results["once"]["reason"]
    assert calls(once) == 1


@needs_ray
def test_ray_timeouts_give_failed_records(ray_cluster, tmp_path):
    slow, stuck = make_assets(tmp_path / "assets", slow={"sleep": 60}, stuck={"sleep": 60, "ignore_timeout": True})
    out = tmp_path / "results.jsonl"
    # A grace of 10 s: on a loaded 2-core machine a Ray worker can take seconds to start the task,
    # and the driver's cancel (timeout + grace) must not overtake the task's own kill.
    config = BatchConfig(timeout_s=1, max_retries=0, kill_grace_s=10)
    began = time.monotonic()
    results = run_batch([slow, stuck], fake_work, failed, out, FMT, config, progress=False)
    assert time.monotonic() - began < 30
    # The task kills its subprocess at the timeout; one that ignores it is cancelled by the driver.
    assert results["slow"] == {**results["slow"], "status": "error", "reason": "timed out after 1 s (process killed)"}
    assert not alive(child_pids(slow)[0])
    assert results["stuck"]["status"] == "error" and results["stuck"]["reason"].startswith("timed out after 11 s")


# -- the commands on Ray, with Blender ---------------------------------------------------------------
@needs_ray
@needs_bpy
def test_render_command_renders_a_list_on_ray(ray_cluster, tmp_path, capsys):
    from gen4d.cli import main
    from gen4d.data.manifest import read_manifest

    listing = tmp_path / "assets.txt"
    listing.write_text("procedural:2\n" + "e" * 32 + "\n")
    out = tmp_path / "renders"
    args = ["render", "--assets", str(listing), "--out", str(out), "--preset", "tiny", "--no-progress"]
    args += ["--objaverse-dir", str(tmp_path), "--sets", "front", "--num_frames", "2", "--size", "16"]
    args += ["--samples", "1", "--denoise", "false"]
    assert main(args) == 1  # one asset could not be rendered: the batch says so in its exit status
    printed = capsys.readouterr().out
    assert "Objaverse id not found" in printed and "2 assets (done 1, error 1)" in printed
    header, *lines = records(out / "results.jsonl")
    done = next(r for r in lines if r["status"] == "done")
    assert header["format"] == "gen4d.render" and done["asset"] == "procedural:2" and done["images"] == 2
    manifest = Path(done["manifest"])
    assert read_manifest(manifest.parent)["complete"]
    stamp = manifest.stat().st_mtime_ns
    assert main(args) == 1  # the missing id is looked up again; the rendered asset is not done twice
    assert [r["asset"] for r in records(out / "results.jsonl")[1:]].count("procedural:2") == 1
    assert manifest.stat().st_mtime_ns == stamp


@needs_ray
@needs_bpy
def test_curate_command_curates_a_list_on_ray(ray_cluster, tmp_path, capsys):
    from gen4d.cli import main
    from gen4d.data.curation import read_results

    listing = tmp_path / "assets.txt"
    listing.write_text("procedural:5:motion=still\nmissing.glb\n")
    out = tmp_path / "curated.jsonl"
    args = ["curate", "--assets", str(listing), "--out", str(out), "--no-progress", "--timeout", "300"]
    args += ["--size", "32", "--samples", "1", "--frames", "4"]
    assert main(args) == 1  # one asset could not be judged
    results = read_results(out)
    assert results["procedural:5:motion=still"]["reason"].startswith("too static")
    assert results["missing.glb"]["decision"] == "error" and "no such asset file" in results["missing.glb"]["reason"]
    assert "2 assets (error 1, reject 1)" in capsys.readouterr().out
