"""The glb export of a run: size, the Khronos validator's verdict, and Blender silhouettes against gen4d's renders.

    python bench/bench_glb.py RUN [--picture docs/images/glb_blender.png]

Exports RUN as ``RUN/export/asset.glb`` when that file is missing (as ``gen4d demo`` does; else it
uses the file there), prints its size, the validator's issue counts (node + ``gltf-validator``
from REPO/.cache/node, installed there by the tests), the frame count Blender imports, and the
silhouette IoU of Blender's render (Workbench, transparent film) against gen4d's own render
(alpha > 0.5) at 4 views (elevation 15, azimuths 45 + 90 k, radius 2, fov 39.6) x 4 times at
96 px. ``--picture``: a PNG strip of Blender's vertex-colour renders at 4 times (front-left view).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import numpy as np
    import torch

    from gen4d.cameras import orbit
    from gen4d.commands.export import export_mesh, frame_count
    from gen4d.export.blender_preview import render_glb
    from gen4d.export.mesh import MeshConfig
    from gen4d.export.ply_sequence import frame_times
    from gen4d.recon.checkpoint import load_run
    from gen4d.render import RenderOptions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--picture", default="", help="write a PNG strip of Blender renders at 4 times here")
    parser.add_argument("--size", type=int, default=96, help="render size for the IoU")
    args = parser.parse_args()
    run = Path(args.run)
    glb = run / "export" / "asset.glb"
    if not glb.is_file():
        began = time.perf_counter()
        export_mesh(load_run(run), frame_times(frame_count(run)), 24.0, MeshConfig(), glb, "glb", run)
        print(f"export: {time.perf_counter() - began:.1f} s")
    print(f"glb: {glb} {glb.stat().st_size / 1e6:.2f} MB")
    node_modules = REPO / ".cache" / "node" / "node_modules"
    if (node_modules / "gltf-validator").is_dir():
        result = subprocess.run(
            ["node", str(REPO / "tests" / "js" / "validate_gltf.js"), str(glb)],
            capture_output=True, text=True, env={**os.environ, "NODE_PATH": str(node_modules)},
        )  # fmt: skip
        report = json.loads(result.stdout)
        issues = {k: v for k, v in report["issues"].items() if k.startswith("num")}
        print(f"validator {report['validatorVersion']}: {issues}")
    else:
        print(f"validator: not run (no {node_modules / 'gltf-validator'}; run tests/test_export_mesh.py once)")
    size = args.size
    azimuths = [a for _ in range(4) for a in (45.0, 135.0, 225.0, 315.0)]
    times = [k / 3 for k in range(4) for _ in range(4)]
    cameras = orbit(15.0, azimuths, 2.0, 39.6, size, size, times)
    images, info = render_glb(glb, cameras, "silhouette")
    print(
        f"blender: {info['shape_keys']} shape keys, frames {info['frame_start']:.0f}..{info['frame_end']:.0f} at {info['fps']} fps"
    )
    with torch.no_grad():
        alpha = load_run(run).render(cameras, options=RenderOptions(backend="torch")).alpha[..., 0].numpy()
    reference, blender = alpha > 0.5, images[..., 3] > 0.5
    iou = (blender & reference).sum((1, 2)) / np.maximum((blender | reference).sum((1, 2)), 1)
    print("IoU (rows: t = 0, 1/3, 2/3, 1; columns: azimuth 45, 135, 225, 315):")
    print(np.array2string(iou.reshape(4, 4), precision=3))
    print(f"IoU mean {iou.mean():.3f} min {iou.min():.3f}")
    if args.picture:
        from PIL import Image

        strip = orbit(15.0, [-35.0] * 4, 2.0, 30.0, 160, 160, [0.0, 1 / 3, 2 / 3, 1.0])
        colour, _ = render_glb(glb, strip, "colour")
        strip_rgb = np.concatenate(list(colour), axis=1)
        on_white = strip_rgb[..., :3] * strip_rgb[..., 3:] + (1 - strip_rgb[..., 3:])  # as the demo's videos
        Image.fromarray((on_white * 255).round().astype(np.uint8)).save(args.picture, optimize=True)
        print(f"picture: {args.picture} {Path(args.picture).stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
