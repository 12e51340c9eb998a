"""The viewer's data path (PLY sequence -> splat arrays) and a short live server on loopback."""

import socket
import urllib.request

import numpy as np
import pytest
import torch

from gen4d.gaussians import random_in_sphere, save_ply
from gen4d.viewer import find_ply_sequence, splat_arrays


def test_splat_arrays_covariance_and_colour():
    g = random_in_sphere(50, seed=1)
    g = g.with_(log_scales=torch.randn(50, 3) * 0.3 - 3, quats=torch.randn(50, 4))
    arrays = splat_arrays(g)
    assert arrays["centers"].shape == (50, 3) and arrays["opacities"].shape == (50, 1)
    cov = torch.from_numpy(arrays["covariances"])
    # covariance = R diag(s^2) R^T: symmetric with eigenvalues s^2
    assert torch.allclose(cov, cov.transpose(1, 2), atol=1e-7)
    eig = torch.linalg.eigvalsh(cov.double()).sort(-1).values
    expect = (g.scales.double() ** 2).sort(-1).values
    assert torch.allclose(eig, expect, rtol=1e-4, atol=1e-9)
    assert np.allclose(arrays["rgbs"], g.rgb.clamp(0, 1).numpy())


def test_find_ply_sequence_orders_frames_naturally(tmp_path):
    run = tmp_path / "run"
    for i in (10, 2, 1):
        save_ply(random_in_sphere(5, seed=i), run / "ply" / f"frame_{i}.ply")
    assert [p.name for p in find_ply_sequence(run)] == ["frame_1.ply", "frame_2.ply", "frame_10.ply"]
    assert find_ply_sequence(run / "ply" / "frame_2.ply")[0].name == "frame_2.ply"


def test_find_ply_sequence_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_ply_sequence(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .ply files"):
        find_ply_sequence(tmp_path / "empty")


def test_server_serves_on_loopback():
    viser = pytest.importorskip("viser", reason="viewer extra (viser) not installed")
    from gen4d.viewer import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    frames = [splat_arrays(random_in_sphere(20, seed=i)) for i in range(3)]
    server = serve(frames, port=port, fps=50, duration=0.3)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        server.stop()
    assert isinstance(viser.ViserServer, type)
