"""Interactive viewer: a per-frame Gaussian sequence in the browser with a time slider (viser).

The viewer reads what every gen4d run writes - the per-frame PLY sequence (RUN/ply/frame_*.ply,
standard 3DGS layout) - so it works for any run, and for PLY sequences made elsewhere.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from gen4d.gaussians import Gaussians

__all__ = ["find_ply_sequence", "splat_arrays", "framing_camera", "serve", "model_frames", "serve_model"]

VIEWER_HINT = "the viewer needs viser: pip install 'gen4d[viewer]'"


def find_ply_sequence(path: str | Path) -> list[Path]:
    """PLY files of a run dir (RUN/ply/), a folder of PLYs, or one PLY, in natural frame order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run, folder or PLY: {path}")
    if path.is_file():
        if path.suffix.lower() != ".ply":
            raise ValueError(f"{path}: expected a .ply file, a folder of them, or a gen4d run folder")
        return [path]
    folder = path / "ply" if (path / "ply").is_dir() else path
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".ply"]
    if not files:
        raise ValueError(f"{folder}: no .ply files (a gen4d run keeps its per-frame PLYs in RUN/ply/)")
    number = lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]  # noqa: E731
    return sorted(files, key=number)


def splat_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """What a splat viewer draws: centres (N,3), covariances (N,3,3), rgbs (N,3), opacities (N,1),
    float32, with view-independent (degree-0) colour."""
    gaussians.validate(finite=False)
    if gaussians.batched:
        raise ValueError("splat_arrays: expected one Gaussian set (N, ...), not a batch")
    with torch.no_grad():
        g = gaussians.to("cpu", torch.float32)
        m = g.rotations * g.scales.unsqueeze(-2)
        covariances = m @ m.transpose(-1, -2)
        return {
            "centers": g.means.numpy().copy(),
            "covariances": covariances.numpy().copy(),
            "rgbs": g.rgb.clamp(0, 1).numpy().copy(),
            "opacities": g.opacities[:, None].numpy().copy(),
        }


def framing_camera(
    frames: Sequence[dict[str, np.ndarray]],
    fov_deg: float = 50.0,
    azimuth_deg: float = 30.0,
    elevation_deg: float = 20.0,
    margin: float = 1.15,
) -> dict[str, np.ndarray | float]:
    """An initial camera that frames the Gaussians of every frame: it looks at the centre of their
    bounding sphere from ``azimuth_deg`` off the front (gen4d's front faces -Y, Z up) and
    ``elevation_deg`` above, at the distance where the sphere (times ``margin``) fills the field of
    view. The sphere holds 99% of the centres, so a few far-off floaters do not shrink the object.
    Returns ``position``, ``look_at`` (3,) float64 and ``fov`` (radians)."""
    centers = np.concatenate([np.asarray(f["centers"], dtype=np.float64).reshape(-1, 3) for f in frames])
    centers = centers[np.isfinite(centers).all(axis=1)]
    if len(centers) == 0:
        raise ValueError("framing_camera: no finite Gaussian centres to frame")
    low, high = np.percentile(centers, 0.5, axis=0), np.percentile(centers, 99.5, axis=0)
    look_at = (low + high) / 2
    radius = float(np.percentile(np.linalg.norm(centers - look_at, axis=1), 99.0))
    radius = max(radius, 1e-3)
    fov = math.radians(fov_deg)
    distance = margin * radius / math.sin(fov / 2)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    return {"position": look_at + distance * direction, "look_at": look_at, "fov": fov}


def _start_server(samples: Sequence[dict[str, np.ndarray]], port: int):
    """A viser server with gen4d's up axis and a camera that frames ``samples``."""
    try:
        import viser
    except ImportError as err:
        raise ImportError(VIEWER_HINT) from err
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    server.scene.set_up_direction("+z")  # gen4d's world is Z up
    camera = framing_camera(samples)
    server.initial_camera.fov = camera["fov"]
    server.initial_camera.look_at = camera["look_at"]
    server.initial_camera.position = camera["position"]
    return server


def _announce(server, port: int, what: str, announce: Callable[[str], None] | None) -> None:
    if announce is not None:
        served = server.get_port()
        moved = f" (port {port} is taken)" if served != port else ""
        announce(f"serving {what} on http://localhost:{served}{moved} (Ctrl+C to stop)")


def serve(
    frames: Sequence[dict[str, np.ndarray]],
    port: int = 8080,
    fps: float = 12.0,
    duration: float | None = None,
    announce: Callable[[str], None] | None = print,
):
    """Serve the frames on http://localhost:PORT with a frame slider and play/pause; runs until
    interrupted (or ``duration`` seconds). When ``port`` is taken the server takes the next free
    one; ``announce`` gets the line with the URL actually served. The initial camera frames the
    object (:func:`framing_camera`). Returns the viser server after ``duration``."""
    if not frames:
        raise ValueError("serve: no frames to show")
    server = _start_server(frames, port)
    handles = [server.scene.add_gaussian_splats(f"/frame_{i:04d}", **f, visible=(i == 0)) for i, f in enumerate(frames)]
    slider = server.gui.add_slider(
        "frame", min=0, max=max(len(frames) - 1, 1), step=1, initial_value=0, disabled=len(frames) == 1
    )
    playing = server.gui.add_checkbox("play", initial_value=len(frames) > 1)
    shown = [0]
    _announce(server, port, f"{len(frames)} frame(s)", announce)

    @slider.on_update
    def _(_event) -> None:
        handles[shown[0]].visible = False
        shown[0] = int(slider.value) % len(frames)
        handles[shown[0]].visible = True

    start = time.time()
    while duration is None or time.time() - start < duration:
        if playing.value and len(frames) > 1:
            slider.value = (int(slider.value) + 1) % len(frames)
        time.sleep(1.0 / fps)
    return server


def model_frames(model) -> Callable[[float], dict[str, np.ndarray]]:
    """``t -> splat arrays`` of a 4D model (``model.at(times) -> Gaussians (B, N)``, e.g. a run's
    DynamicGaussians) at any time t in [0, 1], computed when asked (nothing precomputed)."""
    import torch

    def frame_at(t: float) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return splat_arrays(model.at(torch.tensor([float(t)])).map(lambda x: x[0]))

    return frame_at


def serve_model(
    frame_at: Callable[[float], dict[str, np.ndarray]],
    port: int = 8080,
    fps: float = 12.0,
    seconds: float = 4.0,
    duration: float | None = None,
    announce: Callable[[str], None] | None = print,
):
    """Serve a 4D model whose frames are computed on demand (:func:`model_frames`): a continuous time
    slider in [0, 1] (steps of 1/1000), play/pause looping over ``seconds``; each new time replaces
    the shown Gaussians. Port, framing (from times 0, 0.5 and 1) and ``duration`` as :func:`serve`."""
    samples = [frame_at(t) for t in (0.0, 0.5, 1.0)]
    server = _start_server(samples, port)
    shown = {"t": 0.0}
    server.scene.add_gaussian_splats("/asset", **samples[0])
    slider = server.gui.add_slider("time", min=0.0, max=1.0, step=0.001, initial_value=0.0)
    playing = server.gui.add_checkbox("play", initial_value=True)
    _announce(server, port, "the 4D model (frames computed on demand)", announce)

    @slider.on_update
    def _(_event) -> None:
        t = float(slider.value)
        if t != shown["t"]:
            shown["t"] = t
            server.scene.add_gaussian_splats("/asset", **frame_at(t))  # same name: replaces the node

    start = time.time()
    while duration is None or time.time() - start < duration:
        if playing.value:
            slider.value = round((float(slider.value) + 1.0 / (fps * seconds)) % 1.0, 3)
        time.sleep(1.0 / fps)
    return server
