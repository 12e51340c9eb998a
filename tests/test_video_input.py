"""Video input reading and preprocessing (gen4d.data.video_input), including bad inputs."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from gen4d.data.matting import matte_constant_background
from gen4d.data.video_input import (
    VideoInputConfig,
    load_video_input,
    preprocess_frames,
    read_frames,
    save_frames,
)
from gen4d.errors import UserError

HAS_REMBG = importlib.util.find_spec("rembg") is not None


def _disk_frames(count=4, size=(60, 40), radius=6, alpha=True):
    """A disk moving right; returns uint8 RGBA (or RGB on black) frames."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        cx, cy = 12 + 3 * i, 18
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[inside] = (200, 40, 40, 255)
        frames.append(rgba if alpha else rgba[..., :3])
    return frames


def _write(folder, frames, pattern="{i}_rgba.png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / pattern.format(i=i))


def test_rgba_folder_natural_order_and_one_shared_crop(tmp_path):
    frames = _disk_frames(count=12)
    _write(tmp_path, frames)
    raw, names = read_frames(tmp_path)
    assert names[:3] == ["0_rgba.png", "1_rgba.png", "2_rgba.png"] and names[10] == "10_rgba.png"
    video = load_video_input(tmp_path, VideoInputConfig(size=64, border=0.2))
    assert video.rgba.shape == (12, 64, 64, 4)
    alpha = video.alpha[..., 0]
    # union bounding box of all frames spans 1 - border of the output along its longer side
    mask = (alpha > 0.5).any(0)
    xs = torch.nonzero(mask.any(0)).flatten()
    ys = torch.nonzero(mask.any(1)).flatten()
    span = int(xs.max() - xs.min() + 1)
    assert abs(span - 0.8 * 64) <= 2
    assert abs((xs.max() + xs.min()) / 2 - 31.5) <= 1.5 and abs((ys.max() + ys.min()) / 2 - 31.5) <= 1.5
    # the disk moves inside the fixed crop (one transform for all frames, no per-frame recentring)
    centres = [float(torch.nonzero(a > 0.5)[:, 1].float().mean()) for a in alpha]
    assert centres == sorted(centres) and centres[-1] - centres[0] > 25
    # the disk keeps its size: same area in every frame
    areas = (alpha > 0.5).flatten(1).sum(1)
    assert int(areas.max() - areas.min()) <= 0.1 * float(areas.float().mean())
    assert torch.allclose(video.times(), torch.linspace(0, 1, 12))
    paths = save_frames(video, tmp_path / "out")
    assert [p.name for p in paths[:2]] == ["0_rgba.png", "1_rgba.png"]


def test_gif_and_mp4(tmp_path):
    frames = _disk_frames(count=5)
    images = [Image.fromarray(f) for f in frames]
    gif = tmp_path / "clip.gif"
    images[0].save(gif, save_all=True, append_images=images[1:], duration=100, loop=0, disposal=2)
    raw, names = read_frames(gif)
    assert len(raw) == 5 and raw[0].shape[2] == 4 and names[1] == "clip.gif#1"
    video = load_video_input(gif, VideoInputConfig(size=32))
    assert video.rgba.shape == (5, 32, 32, 4)

    import imageio.v2 as imageio

    mp4 = tmp_path / "clip.mp4"
    with imageio.get_writer(str(mp4), format="FFMPEG", fps=10, macro_block_size=8, ffmpeg_log_level="error") as writer:
        for frame in _disk_frames(count=6, size=(64, 48), alpha=False):
            writer.append_data(frame)
    raw, _ = read_frames(mp4)
    assert len(raw) == 6 and raw[0].shape == (48, 64, 3)


def test_stride_and_limits(tmp_path):
    _write(tmp_path, _disk_frames(count=9))
    raw, names = read_frames(tmp_path, stride=2)
    assert names == ["0_rgba.png", "2_rgba.png", "4_rgba.png", "6_rgba.png", "8_rgba.png"]
    with pytest.raises(ValueError, match="more than max_frames=4"):
        load_video_input(tmp_path, VideoInputConfig(max_frames=4))
    with pytest.raises(ValueError, match="larger than max_side=32"):
        load_video_input(tmp_path, VideoInputConfig(max_side=32))


def test_bad_inputs(tmp_path):
    # frames of different sizes
    frames = _disk_frames(count=3)
    frames[2] = np.zeros((30, 30, 4), np.uint8)
    with pytest.raises(ValueError, match="different sizes: 0_rgba.png is 60x40 but 2_rgba.png is 30x30"):
        preprocess_frames(frames, ["0_rgba.png", "1_rgba.png", "2_rgba.png"])
    # one frame
    single = tmp_path / "single"
    _write(single, _disk_frames(count=1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        load_video_input(single)
    with pytest.raises(ValueError, match="single image is one frame"):
        read_frames(single / "0_rgba.png")
    # an unreadable file
    broken = tmp_path / "broken"
    _write(broken, _disk_frames(count=2))
    (broken / "2_rgba.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="2_rgba.png: not a readable image"):
        load_video_input(broken)
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable video"):
        read_frames(bad_video)
    with pytest.raises(FileNotFoundError):
        read_frames(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="unknown input type"):
        read_frames(tmp_path / "notes.txt") if (tmp_path / "notes.txt").write_text("x") else None
    # empty alpha everywhere
    with pytest.raises(ValueError, match="alpha of every frame is empty"):
        preprocess_frames([np.zeros((20, 20, 4), np.uint8)] * 2, ["a", "b"])


def test_no_alpha_without_matting(tmp_path):
    rgb = tmp_path / "rgb"
    _write(rgb, _disk_frames(count=3, alpha=False), pattern="frame{i:03d}.jpg")
    with pytest.raises(UserError, match=r"rgb: no usable alpha \(RGB only\) and matting='alpha'"):
        load_video_input(rgb, VideoInputConfig(matting="alpha"))
    opaque = [f.copy() for f in _disk_frames(count=2)]
    for f in opaque:
        f[..., 3] = 255
    with pytest.raises(UserError, match="opaque everywhere"):
        preprocess_frames(opaque, ["a", "b"], VideoInputConfig(matting="alpha"))
    if not HAS_REMBG:
        with pytest.raises(UserError, match=r"needs rembg and onnxruntime: pip install 'gen4d\[matting\]'"):
            load_video_input(rgb)


def test_matte_constant_background():
    image = torch.full((1, 3, 20, 20), 0.5)
    image[:, :, 5:15, 5:15] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)
    alpha = matte_constant_background(image)
    assert alpha.shape == (1, 1, 20, 20)
    assert float(alpha[0, 0, 10, 10]) == 1.0 and float(alpha[0, 0, 0, 0]) == 0.0


def test_unreadable_video_is_one_line_without_the_ffmpeg_banner(tmp_path, capsys):
    from gen4d.cli import main

    bad_video = tmp_path / "holiday.mp4"
    bad_video.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(ValueError) as info:
        read_frames(bad_video)
    message = str(info.value)
    assert message.startswith(f"{bad_video}: not a readable video (ffmpeg: ")
    assert "Invalid data" in message and "\n" not in message
    for banner in ("ffmpeg version", "configuration:", "libavcodec", "=== stderr ==="):
        assert banner not in message
    argv = ["video", str(bad_video), "--out", str(tmp_path / "run"), "--multiview", "none", "--sds.weight", "0"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "holiday.mp4: not a readable video" in err[0], err
    assert "ffmpeg version" not in captured.out + captured.err
