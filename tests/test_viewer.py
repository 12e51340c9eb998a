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


def test_framing_camera_fills_the_view_with_the_object():
    from gen4d.viewer import framing_camera

    generator = torch.Generator().manual_seed(0)
    centre = torch.tensor([0.3, -0.2, 0.5])
    means = centre + 0.25 * torch.nn.functional.normalize(torch.randn(400, 3, generator=generator), dim=-1)
    frame = {"centers": means.numpy()}
    floaters = {"centers": np.array([[40.0, 40.0, 40.0]])}  # one stray Gaussian far away
    camera = framing_camera([frame, floaters], fov_deg=50.0, margin=1.15)
    assert np.allclose(camera["look_at"], centre.numpy(), atol=0.05)
    distance = np.linalg.norm(camera["position"] - camera["look_at"])
    # The object's bounding sphere (radius 0.25) spans the field of view, with the margin.
    assert abs(0.25 * 1.15 / np.sin(camera["fov"] / 2) - distance) < 0.05
    assert distance < 1.0  # viser's default camera sits 5.2 units away: the object would look tiny
    offset = camera["position"] - camera["look_at"]
    assert offset[1] < 0 and offset[2] > 0  # in front (-Y) and above
    # Scale invariance: a 10x larger object is framed from 10x farther.
    big = framing_camera([{"centers": (means * 10).numpy()}], fov_deg=50.0)
    assert np.isclose(np.linalg.norm(big["position"] - big["look_at"]), 10 * distance, rtol=0.05)


def test_server_announces_the_port_it_serves_when_the_asked_one_is_taken():
    pytest.importorskip("viser", reason="viewer extra (viser) not installed")
    from gen4d.viewer import serve

    lines = []
    frames = [splat_arrays(random_in_sphere(20, seed=i)) for i in range(3)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        server = serve(frames, port=taken, fps=50, duration=0.3, announce=lines.append)
        try:
            served = server.get_port()
            assert served != taken
            assert len(lines) == 1 and f"http://localhost:{served} " in lines[0]
            assert f"port {taken} is taken" in lines[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{served}/", timeout=10) as response:
                assert response.status == 200
            # The clients' initial camera is the framing one, not viser's default (3, 3, 3).
            distance = np.linalg.norm(server.initial_camera.position - server.initial_camera.look_at)
            assert distance < 3.0
        finally:
            server.stop()


def test_model_frames_on_demand_and_served(tmp_path):
    """A run is viewed from its model: any time, computed when asked, no PLY read."""
    import torch

    from gen4d.deform import DeformConfig, HexPlaneConfig
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.viewer import model_frames

    torch.manual_seed(0)
    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    model = DynamicGaussians(random_in_sphere(30, seed=2), DeformConfig(field=hexplane))
    with torch.no_grad():
        model.field.head_out_weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
        model.field.grid.temporal[0].mul_(torch.linspace(0.2, 1.8, 5)[:, None])  # motion over time
    asked = []
    frame_at = model_frames(model)
    for t in (0.0, 0.37, 1.0):
        expected = splat_arrays(model.at(torch.tensor([t])).map(lambda x: x[0]).detach())
        got = frame_at(t)
        assert np.allclose(got["centers"], expected["centers"])
    assert not np.allclose(frame_at(0.0)["centers"], frame_at(1.0)["centers"])  # time matters
    pytest.importorskip("viser", reason="viewer extra (viser) not installed")
    from gen4d.viewer import serve_model

    def counting(t):
        asked.append(t)
        return frame_at(t)

    lines = []
    server = serve_model(counting, port=0, fps=20, seconds=1.0, duration=0.5, announce=lines.append)
    try:
        assert "computed on demand" in lines[0]
        assert asked[:3] == [0.0, 0.5, 1.0] and len(asked) > 3  # framing samples, then the played times
        assert all(0.0 <= t <= 1.0 for t in asked)
    finally:
        server.stop()


def test_view_command_shows_a_run_from_its_model_and_ply_on_request(tmp_path, monkeypatch):
    from gen4d import viewer
    from gen4d.cli import main
    from gen4d.deform import DeformConfig, HexPlaneConfig
    from gen4d.gaussians import save_ply
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.recon.checkpoint import save_checkpoint

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    run = tmp_path / "run"
    save_checkpoint(run, DynamicGaussians(random_in_sphere(20, seed=1), DeformConfig(field=hexplane)))
    save_ply(random_in_sphere(5, seed=2), run / "ply" / "frame_0000.ply")
    calls = []
    monkeypatch.setattr(
        viewer, "serve_model", lambda frame_at, **kw: calls.append(("model", len(frame_at(0.5)["centers"])))
    )
    monkeypatch.setattr(viewer, "serve", lambda frames, **kw: calls.append(("ply", len(frames[0]["centers"]))))
    assert main(["view", str(run)]) == 0 and calls[-1] == ("model", 20)
    assert main(["view", str(run), "--ply"]) == 0 and calls[-1] == ("ply", 5)
