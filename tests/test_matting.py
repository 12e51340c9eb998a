"""Matting (gen4d.data.matting) through rembg with a test-built ONNX model, alpha videos (webm / mov),
and the Diffusion4D image condition (matted, recentred in a square, never stretched)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gen4d.data.matting import RembgConfig, matte
from gen4d.data.video_input import VideoInputConfig, load_image_input, load_video_input, probe_video, read_frames
from gen4d.errors import UserError

HAS_REMBG = all(importlib.util.find_spec(name) for name in ("rembg", "onnxruntime", "onnx"))
needs_rembg = pytest.mark.skipif(
    not HAS_REMBG, reason="needs rembg + onnxruntime (pip install 'gen4d[matting]') and onnx (the dev extra)"
)
# rembg imports pymatting, which compiles ~30 numba functions on its first import in a fresh
# environment (about a minute of CPU); gen4d never calls them (no alpha matting), so JIT is off here.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

RED, GREY = (220, 30, 30), (128, 128, 128)


class _Stop(Exception):
    """Raised by a patched stage to end a run after the stage under test."""


def tiny_matting_model(path, side: int = 320, gain: float = 20.0, offset: float = 0.3):
    """A u2net-shaped ONNX model (input (1, 3, side, side), first output (1, 1, side, side) in [0, 1]):
    sigmoid(gain * (red - green - offset)) of the un-normalised colour, so red things are the object.
    u2net-style sessions feed (x - ImageNet mean) / ImageNet std; isnet-style ones (x - 0.5) / 1;
    the weights undo either normalisation (side 320: u2net, 1024: isnet)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if side == 320:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    else:
        mean, std = (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)
    # red - green = std_r * x_r + mean_r - std_g * x_g - mean_g
    weight = np.array([gain * std[0], -gain * std[1], 0.0], np.float32).reshape(1, 3, 1, 1)
    bias = np.array([gain * (mean[0] - mean[1] - offset)], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w", "b"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["mask"])],
        "tiny_matting",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, side, side])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def disk_video(count=4, size=(96, 64), radius=9):
    """A red disk moving right over grey: RGB frames and the true alpha (F, H, W) in {0, 1}."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    frames, alphas = [], []
    for i in range(count):
        inside = (xs - 30 - 6 * i) ** 2 + (ys - 30) ** 2 <= radius**2
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:] = GREY
        rgb[inside] = RED
        frames.append(rgb)
        alphas.append(inside.astype(np.uint8))
    return frames, alphas


def _write_pngs(folder, frames, pattern="frame{i:03d}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / pattern.format(i=i))
    return folder


def _iou(a, b):
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if rembg tries to download a model."""
    if HAS_REMBG:
        import pooch

        def refuse(*args, **kwargs):
            raise AssertionError(f"rembg tried to download {args[:1]}")

        monkeypatch.setattr(pooch, "retrieve", refuse)


# ------------------------------------------------------------------------------------------- rembg


@needs_rembg
def test_rembg_matting_end_to_end_through_gen4d_video(tmp_path, monkeypatch, no_download):
    """`gen4d video RGB-frames --input.matting rembg --input.rembg.model FILE`: the input stage writes
    frames whose alpha is the model's matte, recentred like the same video with its true alpha."""
    import gen4d.recon.stag4d.pipeline as pipeline
    from gen4d.cli import main

    model = tiny_matting_model(tmp_path / "tiny_u2net.onnx")
    frames, alphas = disk_video()
    rgb_dir = _write_pngs(tmp_path / "rgb", frames)
    rgba = [np.dstack([f, a * 255]) for f, a in zip(frames, alphas)]
    truth = load_video_input(_write_pngs(tmp_path / "truth", rgba, "{i}_rgba.png"), VideoInputConfig(size=32))

    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(pipeline, "optimise", stop)
    run = tmp_path / "run"
    argv = ["video", str(rgb_dir), "--out", str(run), "--preset", "fast", "--multiview", "none", "--sds.weight", "0"]
    argv += ["--input.matting", "rembg", "--input.rembg.model", str(model), "--input.size", "32", "--no-progress"]
    with pytest.raises(_Stop):
        main(argv)
    written = sorted(run.glob("frames/*_rgba.png"))
    assert [p.name for p in written] == ["0_rgba.png", "1_rgba.png", "2_rgba.png", "3_rgba.png"]
    for path, expected in zip(written, truth.alpha[..., 0]):
        alpha = torch.from_numpy(np.asarray(Image.open(path))[..., 3] / 255.0)
        assert _iou(alpha, expected) > 0.85, path.name
        assert float(alpha[0, 0]) < 0.05 and float(alpha[expected > 0.99].mean()) > 0.9
    # the colour is the input's, not darkened by the matte (not premultiplied)
    centre = np.asarray(Image.open(written[0]))[truth.alpha[0, ..., 0].numpy() > 0.99]
    assert np.abs(centre[:, :3].astype(int) - RED).max() <= 12


@needs_rembg
def test_rembg_model_from_u2net_home_and_isnet_family(tmp_path, monkeypatch, no_download):
    frames, alphas = disk_video(count=1)
    images = torch.from_numpy(frames[0][None]).float() / 255
    home = tmp_path / "u2net_home"
    home.mkdir()
    tiny_matting_model(home / "u2net.onnx")
    monkeypatch.setenv("U2NET_HOME", str(home))
    alpha = matte(images, "rembg", RembgConfig())[0, ..., 3]
    assert _iou(alpha, torch.from_numpy(alphas[0])) > 0.85
    # an isnet-style file (1024 px, mean 0.5 / std 1) chosen by its name
    isnet = tiny_matting_model(tmp_path / "isnet-tiny.onnx", side=1024)
    assert RembgConfig(model=str(isnet)).resolved_name() == "isnet-general-use"
    alpha = matte(images, "rembg", RembgConfig(model=str(isnet)))[0, ..., 3]
    assert _iou(alpha, torch.from_numpy(alphas[0])) > 0.85
    # the same file run as a u2net-style model does not fit: one line naming the file and the fix
    with pytest.raises(UserError, match=r"isnet-tiny.onnx: rembg could not run this model .*set rembg.name"):
        matte(images, "rembg", RembgConfig(model=str(isnet), name="u2net"))


@needs_rembg
def test_rembg_errors_missing_and_bad_model_files(tmp_path, monkeypatch, no_download):
    images = torch.from_numpy(disk_video(count=1)[0][0][None]).float() / 255
    missing = tmp_path / "models" / "u2net.onnx"
    with pytest.raises(UserError) as info:
        matte(images, "rembg", RembgConfig(model=str(missing)))
    message = str(info.value)
    assert f"no such file {missing}" in message and "\n" not in message
    assert (
        "curl -L -o ~/.u2net/u2net.onnx https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
        in message
    )
    # no file in $U2NET_HOME: where to put it and the download command for a connected machine
    empty = tmp_path / "empty_home"
    empty.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(empty))
    with pytest.raises(
        UserError, match=rf"isnet-general-use model is not in {empty} .*never downloads.*isnet-general-use.onnx"
    ):
        matte(images, "rembg", RembgConfig(name="isnet-general-use"))
    not_onnx = tmp_path / "u2net.onnx"
    not_onnx.write_bytes(b"this is not an ONNX model")
    with pytest.raises(UserError, match=rf"{not_onnx}: not an ONNX model rembg can run"):
        matte(images, "rembg", RembgConfig(model=str(not_onnx)))


def test_rembg_config_refuses_unknown_names():
    from gen4d.config import ConfigError

    with pytest.raises(ConfigError, match="name: expected one of u2net, .*isnet-general-use"):
        RembgConfig(name="birefnet")
    assert RembgConfig(model="/models/silueta.onnx").resolved_name() == "u2net"
    assert RembgConfig(model="/models/ISNet-General-Use.onnx").resolved_name() == "isnet-general-use"


# -------------------------------------------------------------------------------------- alpha videos


def _ffmpeg_video(path, frames, codec, pix_fmt, extra=()):
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), pix_fmt_in="rgba", pix_fmt_out=pix_fmt, codec=codec, fps=10, quality=None,
        macro_block_size=1, output_params=list(extra), ffmpeg_log_level="error",
    )  # fmt: skip
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def _rgba_disks(count=4, size=(56, 40)):
    frames, alphas = disk_video(count, size, radius=7)
    return [np.dstack([f, a * 255]).astype(np.uint8) for f, a in zip(frames, alphas)]


@pytest.mark.parametrize(
    "name, codec, pix_fmt, extra",
    [
        ("clip.webm", "libvpx-vp9", "yuva420p", ("-b:v", "0", "-crf", "10")),
        ("clip.webm", "libvpx", "yuva420p", ("-auto-alt-ref", "0", "-b:v", "1M")),
        ("clip.mov", "prores_ks", "yuva444p10le", ("-profile:v", "4444")),
        ("clip.mov", "qtrle", "argb", ()),
    ],
    ids=["webm-vp9", "webm-vp8", "mov-prores4444", "mov-qtrle"],
)
def test_alpha_videos_keep_their_alpha(tmp_path, name, codec, pix_fmt, extra):
    frames = _rgba_disks()
    video = _ffmpeg_video(tmp_path / name, frames, codec, pix_fmt, extra)
    assert probe_video(video).alpha
    raw, names = read_frames(video)
    assert len(raw) == 4 and names[1] == f"{name}#1"
    assert raw[0].shape == (40, 56, 4), "the alpha channel was dropped"
    for got, want in zip(raw, frames):
        assert np.abs(got[..., 3].astype(int) - want[..., 3]).mean() < 2
        assert np.abs(got[..., 3].astype(int) - want[..., 3]).max() < 40
    # matting='alpha' takes it as it is (no rembg): the video's alpha is the frames' alpha
    result = load_video_input(video, VideoInputConfig(size=32, matting="alpha"))
    truth = load_video_input(_write_pngs(tmp_path / "png", frames, "{i}_rgba.png"), VideoInputConfig(size=32))
    assert result.crop == truth.crop
    assert (result.alpha - truth.alpha).abs().mean() < 0.02


def test_video_without_alpha_reads_rgb(tmp_path):
    video = _ffmpeg_video(tmp_path / "opaque.webm", _rgba_disks(count=3), "libvpx-vp9", "yuv420p")
    stream = probe_video(video)
    assert (stream.codec, stream.alpha, stream.decoder) == ("vp9", False, [])
    raw, _ = read_frames(video)
    assert raw[0].shape == (40, 56, 3)
    with pytest.raises(UserError, match=r"opaque.webm: no usable alpha \(RGB only\)"):
        load_video_input(video, VideoInputConfig(matting="alpha"))


# ------------------------------------------------------------------------ the Diffusion4D condition


def _bar_image(path, size=(120, 60), box=(70, 18, 110, 38), alpha=True):
    """A red bar 40 x 20 px off-centre in a wide image, on transparent (or grey) background."""
    width, height = size
    image = np.zeros((height, width, 4), np.uint8)
    image[..., :3] = GREY
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (*RED, 255)
    Image.fromarray(image if alpha else image[..., :3]).save(path)
    return path


def _bbox(alpha):
    ys, xs = torch.nonzero(alpha > 0.5, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_image_condition_recentred_without_stretching(tmp_path):
    image = load_image_input(_bar_image(tmp_path / "wide.png"), VideoInputConfig(size=64, border=0.2))
    assert image.shape == (64, 64, 4)
    x0, y0, x1, y1 = _bbox(image[..., 3])
    assert abs((x1 - x0) - 0.8 * 64) <= 1.5  # the longer side spans 1 - border
    assert abs((x1 - x0) / (y1 - y0) - 2.0) < 0.12  # 40 x 20 stays 2:1 (stretching to a square would give 1:1)
    assert abs((x0 + x1) / 2 - 32) <= 1 and abs((y0 + y1) / 2 - 32) <= 1  # centred
    # `color` keys out a plain background: the same framing from an RGB image
    keyed = load_image_input(
        _bar_image(tmp_path / "wide_rgb.png", alpha=False), VideoInputConfig(size=64, matting="color")
    )
    assert _iou(keyed[..., 3], image[..., 3]) > 0.9


def test_image_condition_through_sample_vdm(tmp_path, monkeypatch):
    """`gen4d sample-vdm --image wide.png`: generate() receives the recentred square, and an image
    without an object stops before the model is loaded, naming the file."""
    import gen4d.diffusion.vdm.components as components
    import gen4d.diffusion.vdm.pipeline as vdm_pipeline
    from gen4d.cli import main

    seen = {}

    def fake_generate(model, image=None, **kwargs):
        seen["image"] = image
        raise _Stop

    monkeypatch.setattr(components, "load_video_model", lambda *args, **kwargs: object())
    monkeypatch.setattr(vdm_pipeline, "generate", fake_generate)
    wide = _bar_image(tmp_path / "wide.png")
    with pytest.raises(_Stop):
        main(["sample-vdm", "model", "--out", str(tmp_path / "out"), "--image", str(wide), "--condition.size", "48"])
    image = seen["image"]
    assert image.shape == (48, 48, 4)
    x0, y0, x1, y1 = _bbox(image[..., 3])
    assert abs((x1 - x0) / (y1 - y0) - 2.0) < 0.15 and abs((x0 + x1) / 2 - 24) <= 1

    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros((30, 50, 4), np.uint8)).save(empty)
    monkeypatch.setattr(components, "load_video_model", lambda *a, **k: pytest.fail("loaded the model first"))
    with pytest.raises(UserError, match=rf"{empty}: no object found \(matting 'auto'"):
        load_image_input(empty)
    assert main(["sample-vdm", "model", "--out", str(tmp_path / "o2"), "--image", str(empty)]) == 2


def test_image_condition_errors(tmp_path):
    with pytest.raises(UserError, match="no such image"):
        load_image_input(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png: not a readable image"):
        load_image_input(broken)
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(plain)
    with pytest.raises(UserError, match="plain.png: no object found"):
        load_image_input(plain, VideoInputConfig(matting="color"))
    with pytest.raises(UserError, match=r"plain.png: no usable alpha \(RGB only\)"):
        load_image_input(plain, VideoInputConfig(matting="alpha"))


def test_encode_condition_refuses_non_square_images():
    from gen4d.diffusion.vdm.pipeline import encode_condition

    class Spec:
        variant, size, camera_dim = "image", 16, 0

    class Model:
        spec, device, dtype, text_encoder = Spec(), "cpu", torch.float32, None

    with pytest.raises(ValueError, match="image: 40x20 pixels, expected a square image .*load_image_input"):
        encode_condition(Model(), image=torch.rand(20, 40, 4))
