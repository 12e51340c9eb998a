"""``.splat4d`` export: round trip, quantisation bounds, renders against the model, size, bad files, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from gen4d.cameras import orbit
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.export.ply_sequence import frame_times, write_ply_sequence
from gen4d.export.splat4d import read_splat4d, write_splat4d
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.render import RenderOptions, render

FRAMES = 6


@pytest.fixture(scope="module")
def model():
    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    torch.manual_seed(0)  # the field's other layers draw from the global generator
    model = DynamicGaussians(random_in_sphere(400, seed=3), DeformConfig(field=hexplane))
    with torch.no_grad():  # a field that moves, turns and resizes the Gaussians over time
        model.field.head_out_weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
        model.field.grid.temporal[0].mul_(torch.linspace(0.2, 1.8, 5)[:, None])
        scales = model.at(torch.tensor([0.0, 1.0])).log_scales
    assert not torch.equal(scales[0], scales[1])  # the fixture itself: scales do change over time
    return model.eval()


def test_round_trip_within_the_quantisation_steps(model, tmp_path):
    with torch.no_grad():
        frames = model.at(frame_times(FRAMES))
    path = write_splat4d(frames, tmp_path / "a.splat4d", fps=12)
    asset = read_splat4d(path)
    assert asset.num_frames == FRAMES and asset.fps == 12 and torch.equal(asset.times, frame_times(FRAMES))
    box = frames.means.reshape(-1, 3)
    step = (box.max(0).values - box.min(0).values) / 65535
    assert torch.all((asset.means - frames.means).abs() <= step / 2 + 1e-6)
    unit = torch.nn.functional.normalize(frames.quats, dim=-1)
    dot = (asset.quats * unit).sum(-1).abs()  # q and -q are the same rotation
    assert torch.all(dot > 1 - 2e-3)
    assert asset.log_scales.shape == (FRAMES, 400, 3)  # the field resizes: stored per frame
    span = float(frames.log_scales.max() - frames.log_scales.min())
    assert torch.all((asset.log_scales - frames.log_scales).abs() <= span / 255 / 2 + 1e-5)
    assert asset.opacity_logits.shape == (400,)  # canonical opacity: stored once
    assert torch.allclose(torch.sigmoid(asset.opacity_logits), torch.sigmoid(frames.opacity_logits[0]), atol=1 / 255)
    torch.testing.assert_close(asset.sh, frames.sh[0], rtol=1e-3, atol=1e-3)


def test_renders_match_the_model_and_the_file_is_small(model, tmp_path):
    times = frame_times(FRAMES)
    with torch.no_grad():
        frames = model.at(times)
    asset = read_splat4d(write_splat4d(frames, tmp_path / "a.splat4d"))
    options = RenderOptions(backend="torch", tile_size=8)
    for index in (0, FRAMES // 2, FRAMES - 1):
        cameras = orbit(0.0, [30.0, 200.0], 2.5, 45.0, 32, 32)
        with torch.no_grad():
            direct = render(frames.map(lambda x, i=index: x[i]), cameras, options=options).rgb
            decoded = render(asset.frame(index), cameras, options=options).rgb
        mse = float((direct - decoded).square().mean())
        assert -10 * math.log10(max(mse, 1e-12)) > 40  # far below what a 0.5 dB change against ground truth needs
        # A decoded file renders like the model: each camera at its own time (the nearest stored frame).
        cameras = cameras.with_times(torch.tensor([float(times[index]), float(times[-1 - index])]))
        with torch.no_grad():
            both = asset.render(cameras, options=options).rgb
            singles = [
                render(asset.frame(i), cameras[[k]], options=options).rgb
                for k, i in enumerate((index, FRAMES - 1 - index))
            ]
        torch.testing.assert_close(both, torch.cat(singles))
    ply_bytes = sum(p.stat().st_size for p in write_ply_sequence(model.at, times, tmp_path / "ply"))
    assert (tmp_path / "a.splat4d").stat().st_size * 4 <= ply_bytes


def test_bad_files_are_refused(model, tmp_path):
    with torch.no_grad():
        path = write_splat4d(model.at(frame_times(2)), tmp_path / "a.splat4d")
    (tmp_path / "cut.splat4d").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_splat4d(tmp_path / "cut.splat4d")
    (tmp_path / "other.bin").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="not a .splat4d file"):
        read_splat4d(tmp_path / "other.bin")
    with pytest.raises(ValueError, match="frame dimension"):
        write_splat4d(model.canonical(), tmp_path / "b.splat4d")


def test_export_command(tmp_path):
    from gen4d.cli import main
    from gen4d.recon.checkpoint import save_checkpoint

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    run = tmp_path / "run"
    save_checkpoint(run, DynamicGaussians(random_in_sphere(50, seed=1), DeformConfig(field=hexplane)))
    assert main(["export", str(run), "--out", str(tmp_path / "x.splat4d"), "--frames", "3"]) == 0
    assert read_splat4d(tmp_path / "x.splat4d").num_frames == 3
    assert main(["export", str(run), "--out", str(tmp_path / "x.splat4d"), "--frames", "4"]) == 0  # its own file
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["export", str(run), "--out", str(notes)]) == 2 and notes.read_text() == "mine"
    assert main(["export", str(run), "--format", "ply", "--out", str(tmp_path / "ply"), "--frames", "2"]) == 0
    assert len(list((tmp_path / "ply").glob("frame_*.ply"))) == 2
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "y.splat4d")]) == 2
