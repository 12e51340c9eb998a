"""Assets per minute of ``gen4d render --assets`` and ``gen4d curate --assets`` on Ray, and the peak
memory of each Blender process.

    python bench/bench_batch.py                       # the glTF assets in ../shared/assets/gltf
    python bench/bench_batch.py --workers 1 2 4 8 --size 256 --samples 128   # a bigger machine

Each row runs the CLI command in a fresh process (a local Ray instance with ``--workers`` CPUs is
started and stopped inside it, so its start-up is part of the time) on a fresh output folder, and
prints the command, the wall time and assets per minute. A sampler reads ``VmHWM`` (peak resident
memory) of every ``gen4d.data.blender_worker`` process from /proc while the command runs (Linux).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blender_peaks(stop: threading.Event, peaks: dict[int, int]) -> None:
    """Peak RSS (kB) of every Blender worker process seen until ``stop``."""
    while not stop.is_set():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if b"gen4d.data.blender_worker" not in (entry / "cmdline").read_bytes():
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        pid = int(entry.name)
                        peaks[pid] = max(peaks.get(pid, 0), int(line.split()[1]))
            except OSError:
                continue
        stop.wait(0.2)


def run(command: list[str], count: int) -> dict:
    peaks: dict[int, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=blender_peaks, args=(stop, peaks), daemon=True)
    sampler.start()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}\n{proc.stdout}\n{proc.stderr}")
    summary = proc.stdout.strip().splitlines()[-1]
    return {
        "seconds": seconds,
        "per_min": 60.0 * count / seconds,
        "blender_peak_mb": max(peaks.values()) / 1024 if peaks else float("nan"),
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets-dir", default=str(ROOT.parent / "shared" / "assets" / "gltf"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--curate-workers", type=int, nargs="*", default=[2], help="worker counts for curate")
    args = parser.parse_args()
    assets = sorted(Path(args.assets_dir).glob("*.glb"))
    if not assets:
        raise SystemExit(f"no .glb assets in {args.assets_dir}")
    print(f"# {platform.node()} {os.cpu_count()} CPUs, {len(assets)} assets: {', '.join(a.name for a in assets)}")
    with tempfile.TemporaryDirectory(prefix="gen4d_bench_batch_") as tmp:
        listing = Path(tmp) / "assets.txt"
        listing.write_text("".join(f"{a}\n" for a in assets))
        base = [sys.executable, "-m", "gen4d"]
        size = ["--size", str(args.size), "--samples", str(args.samples)]
        rows = []
        for workers in args.workers:
            command = [*base, "render", "--assets", str(listing), "--out", f"{tmp}/render_w{workers}", *size]
            command += ["--num_frames", str(args.frames), "--workers", str(workers), "--no-progress"]
            rows.append((f"render, {workers} worker(s)", command, run(command, len(assets))))
        for workers in args.curate_workers:
            command = [*base, "curate", "--assets", str(listing), "--out", f"{tmp}/curate_w{workers}.jsonl", *size]
            command += ["--frames", str(args.frames), "--workers", str(workers), "--no-progress"]
            rows.append((f"curate, {workers} worker(s)", command, run(command, len(assets))))
        for name, command, row in rows:
            shown = " ".join(c if not c.startswith(tmp) else "TMP" + c[len(tmp) :] for c in command[1:])
            print(f"\n{name}: python {shown}")
            print(
                f"  {row['seconds']:.1f} s, {row['per_min']:.2f} assets/min, "
                f"peak Blender RSS {row['blender_peak_mb']:.0f} MB; {row['summary']}"
            )


if __name__ == "__main__":
    main()
