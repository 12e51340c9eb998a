"""Speed and peak memory of render() forward + backward for both backends.

    python bench/bench_backends.py            # everything this machine can run (< 3 min on an H100)
    python bench/bench_backends.py --cpu-only # only the reference rasteriser on the CPU

Scenes are STAG4D's initialisation (Gaussians uniform in a ball of radius 0.5, opacity 0.1,
nearest-neighbour scales, SH degree 0) seen by an orbit of cameras at distance 2, fov 49.1 deg.
Rows:
* gsplat / CUDA and torch reference / CUDA on the GPU config (default 50k Gaussians, 8 cameras,
  256x256); gsplat's first call includes its JIT compile of the CUDA extension (needs nvcc and
  ninja; MAX_JOBS and TORCH_CUDA_ARCH_LIST are set for this GPU unless already set);
* torch reference / CPU on the smaller CPU configs, each in a child process so its peak RSS
  increase can be measured.
Times are medians over the timed iterations after warm-up; "fwd+bwd" is one forward and one
backward of a loss using rgb, alpha and depth. GPU peak memory is torch's peak allocation above
what was allocated before the call (scene included in the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gen4d.cameras import orbit  # noqa: E402
from gen4d.gaussians import random_in_sphere  # noqa: E402
from gen4d.render import RenderOptions, render  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_scene(gaussians: int, cameras: int, size: int, device: str):
    g = random_in_sphere(gaussians, radius=0.5, opacity=0.1, seed=0, device=device)
    az = [360.0 * i / cameras for i in range(cameras)]
    el = [15.0 * ((i % 3) - 1) for i in range(cameras)]
    cams = orbit(el, az, 2.0, 49.1, size, size).to(device)
    return g, cams


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_config(backend: str, device: str, gaussians: int, cameras: int, size: int, warmup: int, iters: int) -> dict:
    g, cams = make_scene(gaussians, cameras, size, device)
    params = g.map(lambda x: x.detach().clone().requires_grad_(True))
    options = RenderOptions(backend=backend)
    background = torch.ones(3, device=device)

    def forward():
        out = render(params, cams, background, options)
        return out, out.rgb.mean() + out.alpha.mean() + 0.1 * out.depth.mean()

    def step():
        _, loss = forward()
        loss.backward()

    _sync(device)
    t0 = time.perf_counter()
    step()  # first call: gsplat's JIT compile happens here
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    _sync(device)

    fwd_times, step_times = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        with torch.no_grad():
            forward()
        _sync(device)
        fwd_times.append(time.perf_counter() - t0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        _sync(device)
        step_times.append(time.perf_counter() - t0)
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else None
    out, _ = forward()
    coverage = float(out.alpha.detach().mean())
    return {
        "backend": backend,
        "device": device,
        "gaussians": gaussians,
        "cameras": cameras,
        "size": size,
        "first_s": first,
        "fwd_ms": 1000 * statistics.median(fwd_times),
        "step_ms": 1000 * statistics.median(step_times),
        "peak_mb": peak_mb,
        "coverage": coverage,
    }


def run_cpu_child(config: dict, args) -> dict:
    """The CPU config in a fresh process: peak RSS there minus its RSS before rendering."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps(config),
        "--iters",
        str(args.cpu_iters),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"CPU benchmark child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(config: dict, iters: int) -> None:
    rss_before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    result = run_config("torch", "cpu", config["gaussians"], config["cameras"], config["size"], 1, iters)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    result["peak_mb"] = max(peak - rss_before, 0) / 2**20
    print(json.dumps(result))


def parity(gaussians: int, cameras: int, size: int) -> str:
    """Max / mean |rgb| difference between gsplat and the reference on the GPU config."""
    g, cams = make_scene(gaussians, cameras, size, "cuda")
    with torch.no_grad():
        a = render(g, cams, None, RenderOptions(backend="gsplat")).rgb
        b = render(g, cams, None, RenderOptions(backend="torch")).rgb
    diff = (a - b).abs()
    return (
        f"gsplat vs reference rgb on the GPU config: max |diff| {float(diff.max()):.2e}, mean {float(diff.mean()):.2e}"
    )


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'backend':<8} {'device':<6} {'gaussians':>9} {'cams':>4} {'size':>5} {'first call':>11} {'fwd':>10} "
        f"{'fwd+bwd':>10} {'peak mem':>10} {'coverage':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f} MB"
        print(
            f"{r['backend']:<8} {r['device']:<6} {r['gaussians']:>9} {r['cameras']:>4} {r['size']:>5} "
            f"{r['first_s']:>9.2f} s {r['fwd_ms']:>7.1f} ms {r['step_ms']:>7.1f} ms {peak:>10} {r['coverage']:>8.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=50_000, help="GPU config: Gaussians")
    parser.add_argument("--cameras", type=int, default=8, help="GPU config: cameras per call")
    parser.add_argument("--size", type=int, default=256, help="GPU config: image size")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per GPU row")
    parser.add_argument("--cpu-iters", type=int, default=3, help="timed iterations per CPU row")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU rows")
    parser.add_argument("--skip-cpu", action="store_true", help="skip the CPU rows")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child:
        child_main(json.loads(args.child), args.iters)
        return 0

    print(
        f"torch {torch.__version__}; CPU: {cpu_name()} "
        f"({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"
    )
    rows: list[dict] = []
    notes: list[str] = []
    cuda = torch.cuda.is_available() and not args.cpu_only
    if cuda:
        props = torch.cuda.get_device_properties(0)
        print(
            f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
            f"compute capability {props.major}.{props.minor}, CUDA {torch.version.cuda}"
        )
        os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{props.major}.{props.minor}")
        gpu = dict(gaussians=args.gaussians, cameras=args.cameras, size=args.size)
        try:
            import gsplat

            print(f"gsplat {gsplat.__version__} (first call JIT-compiles its CUDA extension unless cached)", flush=True)
            rows.append(run_config("gsplat", "cuda", **gpu, warmup=3, iters=args.iters))
            print_table(rows[-1:])
        except ImportError:
            notes.append("gsplat is not installed: pip install 'gen4d[cuda]' (skipped its row)")
        rows.append(run_config("torch", "cuda", **gpu, warmup=1, iters=max(3, args.iters // 4)))
        print_table(rows[-1:])
        if any(r["backend"] == "gsplat" for r in rows):
            notes.append(parity(**gpu))
    elif not args.cpu_only:
        notes.append("no CUDA device: GPU rows skipped")
    if not args.skip_cpu:
        for config in (
            dict(gaussians=2_000, cameras=4, size=64),
            dict(gaussians=10_000, cameras=4, size=128),
            dict(gaussians=10_000, cameras=4, size=256),
        ):
            rows.append(run_cpu_child(config, args))
            print_table(rows[-1:])
    print()
    print("summary (first call includes gsplat's JIT compile; coverage = mean alpha):")
    print_table(rows)
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
