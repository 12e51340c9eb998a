"""Time of the D-SSIM loss (forward + backward) with gen4d's separable Gaussian filter over the
five stacked statistics (two products with banded matrices on a GPU, a 1x11 then an 11x1 depthwise
convolution on a CPU), against each of those on its own and one 11x11 depthwise convolution, and
the largest difference between their losses.

    python bench/bench_ssim.py                     # CPU, 4 x 256 x 256 x 3, float32
    python bench/bench_ssim.py --device cuda --batch 8

A third line times the separable filter with the inputs' finite checks (what the training loss
ran before it skipped them; on a GPU each check is a host-device synchronisation).
Prints one line per variant: median milliseconds over the timed iterations after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gen4d.metrics import image as image_metrics  # noqa: E402


def _filter_2d(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """The same 'valid' Gaussian filter as one 11x11 depthwise convolution (the outer product)."""
    channels, taps = x.shape[1], image_metrics._window_1d(window, sigma, x.dtype, x.device)
    kernel = (taps[:, None] * taps[None, :]).view(1, 1, window, window).expand(channels, 1, window, window)
    return F.conv2d(x, kernel, groups=channels)


def _time(fn, iterations: int, device: torch.device) -> float:
    times = []
    for _ in range(iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.size, args.size, 3)
    pred = torch.rand(shape, generator=gen).to(device).requires_grad_(True)
    target = torch.rand(shape, generator=gen).to(device)

    def step(check_values: bool = False) -> torch.Tensor:
        loss = 1.0 - image_metrics.ssim(pred, target, check_values=check_values)
        loss.backward()
        return loss

    values = {}
    rows = []
    variants = [
        ("gen4d (banded on GPU)", image_metrics._filter_valid),
        ("banded matrices", image_metrics._filter_banded),
        ("depthwise 1x11 + 11x1", image_metrics._filter_depthwise),
        ("depthwise 11x11", _filter_2d),
    ]
    for name, filter_fn in variants:
        original = image_metrics._filter_valid
        image_metrics._filter_valid = filter_fn
        try:
            values[name] = float(step().detach())
            ms = _time(step, args.iterations, device)
        finally:
            image_metrics._filter_valid = original
        rows.append((name, ms))
    # What the training loss did before it skipped the finite checks (two host syncs on a GPU).
    rows.append(("banded, value checks", _time(lambda: step(check_values=True), args.iterations, device)))
    threads = torch.get_num_threads()
    print(f"D-SSIM forward + backward, {shape} float32 on {device} (torch {torch.__version__}, {threads} threads)")
    for name, ms in rows:
        print(f"  {name:<24} {ms:8.2f} ms")
    spread = max(values.values()) - min(values.values())
    print(f"  largest difference between the variants' losses = {spread:.2e}")


if __name__ == "__main__":
    main()
