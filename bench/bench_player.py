"""The web player in headless Chromium against gen4d's renderer: silhouette IoU, PSNR, frame rate.

    python bench/bench_player.py RUN [--size 192] [--screenshot docs/images/player.png]

Writes RUN's model as a self-contained player page (``gen4d export --format html``: as many frames
as RUN/ply, else 24) into a temporary folder, prints its size, opens it in headless Chromium
(gen4d.export.chromium.FLAGS: WebGL2 on SwiftShader, the CPU) and compares the player's image with
gen4d's render of the same camera and time:

* at 4 azimuths x 3 stored frames (the decoded file, rendered by gen4d), elevation 15, radius and
  field of view of the demo's orbit video;
* between stored frames, the player interpolating against the model itself at that time.

Then the frame rate while time and camera change every frame (each frame interpolates, sorts,
uploads and draws all Gaussians) at the given sizes. ``--screenshot``: a PNG of the whole page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from gen4d.commands.export import frame_count
    from gen4d.export.chromium import FLAGS, Chromium, find_chromium
    from gen4d.export.player_check import compare_to_gen4d, measure_fps, open_player, webgl2_renderer
    from gen4d.export.ply_sequence import frame_times
    from gen4d.export.splat4d import decode_splat4d, encode_splat4d
    from gen4d.export.web_player import write_player_html
    from gen4d.recon import load_run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--size", type=int, default=192, help="image size of the comparisons (pixels)")
    parser.add_argument("--radius", type=float, default=2.0, help="camera distance (the demo's orbit video: 2)")
    parser.add_argument("--fov", type=float, default=39.6, help="field of view, degrees")
    parser.add_argument("--window", default="720x480", help="browser window, WxH (the screenshot's size)")
    parser.add_argument("--fps-sizes", default="256x256,720x480", help="sizes for the frame rate, WxH,...")
    parser.add_argument("--fps-frames", type=int, default=120, help="animation frames per frame-rate measurement")
    parser.add_argument("--screenshot", default=None, help="write a PNG of the whole page here")
    args = parser.parse_args()
    executable = find_chromium()
    if executable is None:
        print("no Chromium found: apt-get install chromium (or set GEN4D_CHROMIUM)")
        return 1
    window = [int(v) for v in args.window.split("x")]
    run = Path(args.run)
    frames = frame_count(run)
    model = load_run(run)
    with torch.no_grad():
        data = encode_splat4d(model.at(frame_times(frames)), fps=24)
    asset = decode_splat4d(data)
    with tempfile.TemporaryDirectory() as folder, Chromium(executable, *window) as browser:
        page = write_player_html(data, Path(folder) / "player.html", name=f"{run.name}.splat4d")
        print(f"{run}: {model.num_gaussians} Gaussians, {frames} frames; player page {page.stat().st_size} bytes "
              f"(splat4d {len(data)} bytes)")  # fmt: skip
        print(f"{browser.version}; flags: {' '.join(FLAGS)}")
        start = time.perf_counter()
        open_player(browser, page)
        print(f"page open and asset decoded in {time.perf_counter() - start:.2f} s")
        renderer = webgl2_renderer(browser)
        print(f"WebGL2 renderer: {renderer}")
        rows = []
        stored = [0, frames // 2, frames - 1]
        for azimuth in (0.0, 90.0, 180.0, 270.0):
            for index in stored:
                time_ = index / max(frames - 1, 1)
                view = {"azimuth": azimuth, "elevation": 15.0, "radius": args.radius, "fov": args.fov,
                        "target": [0.0, 0.0, 0.0], "time": time_, "smooth": False}  # fmt: skip
                rows.append(("stored frame", azimuth, time_, compare_to_gen4d(browser, asset.at, view, args.size, args.size)))  # fmt: skip
        for azimuth, time_ in ((45.0, 0.5 / max(frames - 1, 1)), (200.0, 0.37)):
            view = {"azimuth": azimuth, "elevation": 15.0, "radius": args.radius, "fov": args.fov,
                    "target": [0.0, 0.0, 0.0], "time": time_, "smooth": True}  # fmt: skip
            rows.append(("interpolated vs model", azimuth, time_, compare_to_gen4d(browser, model.at, view, args.size, args.size)))  # fmt: skip
        for label, azimuth, time_, scores in rows:
            print(
                f"  {label:>22} az {azimuth:5.0f} t {time_:.3f}: IoU {scores['iou']:.4f} PSNR {scores['psnr']:.2f} dB"
            )
        for label in ("stored frame", "interpolated vs model"):
            chosen = [s for name, _, _, s in rows if name == label]
            print(f"{label}: min IoU {min(s['iou'] for s in chosen):.4f}, mean PSNR "
                  f"{sum(s['psnr'] for s in chosen) / len(chosen):.2f} dB over {len(chosen)} views ({args.size}x{args.size})")  # fmt: skip
        for size in args.fps_sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            fps = measure_fps(browser, args.fps_frames, width, height)
            print(f"frame rate {width}x{height}: {fps['fps']:.1f} fps over {fps['frames']} frames "
                  f"({fps['cpuMsPerFrame']:.2f} ms of JavaScript per frame, {fps['drawn']} Gaussians drawn)")  # fmt: skip
        if args.screenshot:
            browser.evaluate("gen4dPlayer.setSize(null, null); gen4dPlayer.frame(); "
                             "gen4dPlayer.setView({time: 0.5, playing: false, azimuth: -25, background: [1, 1, 1]}); "
                "gen4dPlayer.renderOnce(); 1")  # fmt: skip
            Path(args.screenshot).write_bytes(browser.screenshot())
            print(f"wrote {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
