"""Exports: per-frame PLY sequences, orbit sweeps, mp4 / gif writers."""

import numpy as np
import pytest
import torch

from gen4d.export import frame_times, orbit_sweep, to_uint8, write_gif, write_mp4, write_ply_sequence
from gen4d.gaussians import load_ply, random_in_sphere


def test_frame_times_and_errors():
    assert torch.allclose(frame_times(5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert frame_times(1).tolist() == [0.0]
    with pytest.raises(ValueError, match="num_frames"):
        frame_times(0)


def test_ply_sequence_round_trip(tmp_path):
    base = random_in_sphere(20, seed=3)

    def at(times):  # a moving set: translate along x by t
        out = base.map(lambda x: x[None].expand((times.shape[0],) + tuple(x.shape)).clone())
        return out.with_(means=out.means + times[:, None, None] * torch.tensor([1.0, 0.0, 0.0]))

    paths = write_ply_sequence(at, frame_times(3), tmp_path / "ply", batch=2)
    assert [p.name for p in paths] == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    for t, path in zip([0.0, 0.5, 1.0], paths):
        loaded = load_ply(path)
        assert torch.allclose(loaded.means, base.means + torch.tensor([t, 0.0, 0.0]), atol=1e-6)
        assert torch.allclose(loaded.sh, base.sh) and torch.allclose(loaded.log_scales, base.log_scales)


def test_orbit_sweep_covers_view_and_time():
    cams = orbit_sweep(num_frames=8, elevation_deg=10.0, radius=2.5, size=32)
    assert len(cams) == 8 and cams.width == 32
    assert float(cams.times[0]) == 0.0 and float(cams.times[-1]) == pytest.approx(1.0)
    assert bool((cams.times[1:] > cams.times[:-1]).all())
    centres = cams.centers
    assert torch.allclose(centres.norm(dim=-1), torch.full((8,), 2.5), atol=1e-4)
    azimuth = torch.rad2deg(torch.atan2(centres[:, 0], -centres[:, 1])) % 360
    assert torch.allclose(azimuth, torch.arange(8) * 45.0, atol=1e-3)
    with pytest.raises(ValueError, match="num_frames"):
        orbit_sweep(num_frames=1)


def test_video_writers(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    frames = torch.zeros(6, 32, 48, 3)
    frames[:, :, :16, 0] = 1.0
    frames[:, :, 16:32, 1] = torch.linspace(0, 1, 6)[:, None, None]
    images = to_uint8(frames)
    assert images.dtype == np.uint8 and images.shape == (6, 32, 48, 3)
    gif = write_gif(images, tmp_path / "v.gif", fps=12)
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (48, 32)
    mp4 = write_mp4(images, tmp_path / "v.mp4", fps=12)
    decoded = imageio.mimread(str(mp4), format="FFMPEG")
    assert len(decoded) == 6 and decoded[0].shape[:2] == (32, 48)
    assert decoded[0][16, 4, 0] > 200 and decoded[0][16, 4, 1] < 60  # red stays red through H.264
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_render_cameras_chunks_and_returns_alpha():
    from types import SimpleNamespace

    from gen4d.eval.split import render_cameras

    class Model:
        device = torch.device("cpu")

        def __init__(self):
            self.seen: list[int] = []

        def render(self, cams, background, options):
            self.seen.append(len(cams))
            rgb = cams.times[:, None, None, None].expand(len(cams), 4, 4, 3) * 2.0  # clamped to [0, 1]
            return SimpleNamespace(rgb=rgb, alpha=torch.full((len(cams), 4, 4, 1), 0.25))

    model = Model()
    out = render_cameras(model, orbit_sweep(num_frames=5, size=4), 1.0, None, batch=2)
    assert model.seen == [2, 2, 1] and out.rgb.shape == (5, 4, 4, 3) and out.alpha.shape == (5, 4, 4, 1)
    assert out.rgb.max() == 1.0 and torch.allclose(out.rgb[1], torch.full((4, 4, 3), 0.5))
