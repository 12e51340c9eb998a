"""Size and fidelity of the ``.splat4d`` export against the run's PLY sequence and model.

    python bench/bench_splat4d.py RUN DATA

Writes RUN's model as a ``.splat4d`` file (as many frames as RUN/ply, else the data's frames) into a
temporary folder, prints its size against RUN/ply's, and the held-out metrics (gen4d.eval.split,
the same evaluation ``gen4d reconstruct`` reports) of the model itself and of the decoded file,
each camera shown at the nearest stored frame.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from gen4d.data.dataset import load_dataset
    from gen4d.eval.split import evaluate_splits
    from gen4d.export.ply_sequence import frame_times
    from gen4d.export.splat4d import read_splat4d, write_splat4d
    from gen4d.recon import load_run
    from gen4d.recon.outputs import heldout_splits
    from gen4d.render import RenderOptions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("data")
    parser.add_argument("--size", type=int, default=0, help="resize the data (the run's training size)")
    args = parser.parse_args()
    run = Path(args.run)
    dataset = load_dataset(args.data, size=args.size or None)
    plys = sorted((run / "ply").glob("frame_*.ply"))
    frames = len(plys) or dataset.num_frames
    model = load_run(run)
    with tempfile.TemporaryDirectory() as folder:
        path = write_splat4d(model.at(frame_times(frames)).detach(), Path(folder) / "asset.splat4d")
        size = path.stat().st_size
        asset = read_splat4d(path)
    ply_bytes = sum(p.stat().st_size for p in plys)
    print(f"{frames} frames, {model.num_gaussians} Gaussians: splat4d {size} bytes", end="")
    print(f", PLY sequence {ply_bytes} bytes ({100 * size / ply_bytes:.1f} %)" if ply_bytes else "")
    pool = dataset.splits["orbit"]
    if dataset.has_split("static_orbit"):
        pool = __import__("torch").cat([pool, dataset.splits["static_orbit"]])
    held = heldout_splits(dataset, pool)
    options = RenderOptions()
    for label, source in (("model", model), ("splat4d", asset)):
        metrics, _ = evaluate_splits(source, dataset, held, options)
        print(
            label,
            {
                k: (round(v["psnr"], 3), round(v["ssim"], 4), v["iou"] and round(v["iou"], 4))
                for k, v in metrics.items()
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
