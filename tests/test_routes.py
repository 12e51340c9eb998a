"""gen4d image / text / animate (gen4d.pipeline, gen4d.run.stages) on CPU with tiny random models of
the real classes: SDXL and Stable Video Diffusion saved with save_pretrained and loaded through the
route's own loading code, tiny Zero123++ / Zero-1-to-3 ('random:tiny'), tiny Diffusion4D video
models (gen4d model folders). End to end, resume from every stage, --stop-after, error paths."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers", reason="the routes need diffusers (pip install 'gen4d[diffusion]')")

from gen4d.cli import main  # noqa: E402
from gen4d.errors import UserError  # noqa: E402
from gen4d.run.stages import Stage, run_stages  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

STAG4D_TINY = [
    "--device", "cpu", "--matting", "color", "--no-progress", "--stag4d-preset", "fast", "--stag4d.device", "cpu",
    "--stag4d.backend", "torch", "--stag4d.multiview.model", "random:tiny", "--stag4d.multiview.steps", "1",
    "--stag4d.multiview.frames_per_batch", "3", "--stag4d.sds.model", "random:tiny", "--stag4d.views_per_step", "1",
    "--stag4d.views.sizes", "16", "--stag4d.views.size_steps=", "--stag4d.input.size", "24",
    "--stag4d.num_points", "200", "--stag4d.static_steps", "1", "--stag4d.ramp_steps", "2", "--stag4d.steps", "2",
    "--stag4d.densify.start", "1", "--stag4d.densify.every", "1", "--stag4d.densify.stop", "2",
    "--stag4d.deform.field.resolution", "8,8,8,4", "--stag4d.deform.field.multires", "1",
    "--stag4d.deform.field.features", "4", "--stag4d.output.video_size", "16", "--stag4d.output.round_frames", "2",
    "--stag4d.output.loops", "1", "--image_to_video.width", "48", "--image_to_video.height", "32",
    "--image_to_video.steps", "1", "--image_to_video.frames", "3", "--image_to_video.decode_chunk_size", "2",
    "--text_to_image.size", "32", "--text_to_image.steps", "1",
]  # fmt: skip
CONSTRUCT_TINY = [
    "--device", "cpu", "--no-progress", "--construct-preset", "demo", "--construct.size", "16",
    "--construct.coarse.iterations", "1", "--construct.fine.iterations", "1", "--construct.init.num_points", "30",
    "--construct.output.video_frames", "2", "--construct.output.video_size", "8", "--sample.steps", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny SDXL and SVD folders (save_pretrained of the real pipeline classes) and tiny video models."""
    from gen4d.diffusion.random_weights import random_sdxl_pipeline, random_svd_pipeline
    from gen4d.diffusion.vdm import add_motion_embedding, build_unet
    from gen4d.diffusion.vdm.components import VDMSpec, save_video_model
    from gen4d.diffusion.vdm.presets import SCHEDULE_PRESETS, unet_preset

    root = tmp_path_factory.mktemp("weights")
    random_sdxl_pipeline("tiny").save_pretrained(root / "sdxl")
    random_svd_pipeline("tiny").save_pretrained(root / "svd")
    for variant in ("image", "static3d"):
        torch.manual_seed(0)
        unet = build_unet(variant, unet_preset("tiny", variant))
        add_motion_embedding(unet)
        spec = VDMSpec(variant=variant, unet_config=unet_preset("tiny", variant), codec="pixel", num_frames=3, size=16,
                       scheduler=SCHEDULE_PRESETS["pixel_cosine_v"], motion_stats={"median": 0.01})  # fmt: skip
        save_video_model(root / variant, spec, unet)
    return root


def _object_image(path, size=(40, 28), alpha=True):
    """An orange disc on a transparent (or white) background, wider than high."""
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    inside = (xs - size[0] / 2) ** 2 + (ys - size[1] / 2) ** 2 <= 81
    rgba = np.zeros((size[1], size[0], 4), np.uint8) if alpha else np.full((size[1], size[0], 3), 255, np.uint8)
    rgba[inside] = (230, 120, 30, 255) if alpha else (230, 120, 30)
    Image.fromarray(rgba).save(path)
    return path


def _records(run):
    return {p.stem: json.loads(p.read_text()) for p in (run / "stages").glob("*.json")}


# --------------------------------------------------------------------------------------- stage runner


def test_stage_runner_resume_skips_finished_and_reruns_what_follows_a_rerun(tmp_path):
    calls = []

    def make(name):
        def run(ctx):
            calls.append(name)
            (ctx.run_dir / name).write_text(name)
            return {"value": len(calls)}

        return Stage(name, (name,), run)

    stages = [make("a"), make("b"), make("c")]
    device = torch.device("cpu")
    records = run_stages(tmp_path, stages, device, stop_after="b")
    assert calls == ["a", "b"] and set(records) == {"a", "b"} and not (tmp_path / "c").exists()
    run_stages(tmp_path, stages, device, resume=True)
    assert calls == ["a", "b", "c"]  # a and b finished: only c ran
    (tmp_path / "b").unlink()  # an output of b is missing: b reruns, and c after it
    run_stages(tmp_path, stages, device, resume=True)
    assert calls == ["a", "b", "c", "b", "c"]
    record = json.loads((tmp_path / "stages" / "c.json").read_text())
    assert record["stage"] == "c" and record["value"] == 5 and record["seconds"] >= 0
    with pytest.raises(UserError, match="no such stage; this run's stages are a, b, c"):
        run_stages(tmp_path, stages, device, stop_after="z")


def test_fit_to_canvas_keeps_the_aspect():
    from gen4d.diffusion.generators import fit_to_canvas

    image = np.zeros((10, 20, 4), np.uint8)
    image[:, :, :3] = (255, 0, 0)
    image[:, :, 3] = 255
    out = fit_to_canvas(image, 40, 40)
    assert out.shape == (40, 40, 3)
    assert (out[20, 20] == (255, 0, 0)).all() and (out[2, 20] == 255).all()  # red band 20 px high, white above
    assert int((out[:, 20] == (255, 0, 0)).all(-1).sum()) == 20


# --------------------------------------------------------------------------------------- STAG4D route


@pytest.mark.slow
def test_text_to_4d_stop_after_each_stage_then_resume(weights, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["text", "a red fox", "--out", str(run), "--text_to_image.model", str(weights / "sdxl"),
            "--image_to_video.model", str(weights / "svd"), *STAG4D_TINY]  # fmt: skip
    assert main(args + ["--stop-after", "image"]) == 0
    assert "stopped" in capsys.readouterr().out and set(_records(run)) == {"image"}
    assert Image.open(run / "image.png").size == (32, 32)
    assert main(args) == 2  # the folder holds a run: --resume or --overwrite
    assert "pass --resume" in capsys.readouterr().err
    # resume after 'image' with the video stage's settings changed (allowed: it has not run yet)
    assert main(args + ["--resume", "--stop-after", "video", "--image_to_video.seed", "3"]) == 0
    assert sorted(p.name for p in (run / "raw").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert Image.open(run / "raw" / "0000.png").size == (48, 32)
    assert main(args + ["--resume", "--stop-after", "video", "--text_to_image.seed", "5"]) == 2  # finished stage
    assert "text_to_image.seed" in capsys.readouterr().err
    assert main(args + ["--resume", "--stop-after", "matting", "--image_to_video.seed", "3"]) == 0
    matted = sorted((run / "matted").glob("*_rgba.png"))
    assert len(matted) == 3 and Image.open(matted[0]).mode == "RGBA"
    # the user replaces the matted frames: the STAG4D stage uses theirs
    for path in matted:
        _object_image(path, size=(30, 30))
    image_mtime = (run / "image.png").stat().st_mtime_ns
    assert main(args + ["--resume", "--image_to_video.seed", "3"]) == 0
    records = _records(run)
    assert set(records) == {"image", "video", "matting", "stag4d"}
    assert records["video"]["frames"] == 3 and records["matting"]["matting"] == "color"
    assert (run / "image.png").stat().st_mtime_ns == image_mtime  # finished stages were not redone
    for path in ("stag4d/videos/front.gif", "stag4d/ply/frame_0002.ply", "stag4d/metrics.json", "config.json"):
        assert (run / path).is_file(), path
    assert json.loads((run / "stag4d" / "metrics.json").read_text())["frames"] == 3
    first = np.asarray(Image.open(run / "stag4d" / "frames" / "1_rgba.png"))
    assert first[12, 12, 0] > 200 and first[12, 12, 3] == 255  # the replaced frame's orange disc
    log = (run / "log.txt").read_text()
    assert "stage 1/4 image: finished earlier, skipped" in log and "stage 4/4 stag4d: running" in log


@pytest.mark.slow
def test_image_to_4d_end_to_end(weights, tmp_path):
    image = _object_image(tmp_path / "disc.png")
    run = tmp_path / "run"
    args = ["image", str(image), "--out", str(run), "--image_to_video.model", str(weights / "svd"), *STAG4D_TINY]
    assert main(args) == 0
    records = _records(run)
    assert set(records) == {"image", "video", "matting", "stag4d"}
    assert (run / "stag4d" / "videos" / "round.gif").is_file()
    assert np.asarray(Image.open(run / "image.png")).shape == (28, 40, 4)  # kept as given (RGBA)
    assert main(args + ["--resume"]) == 0  # all finished: nothing runs again
    assert _records(run)["stag4d"]["finished"] == records["stag4d"]["finished"]


# --------------------------------------------------------------------------------------- Diffusion4D route


def test_image_to_4d_diffusion4d_route(weights, tmp_path):
    image = _object_image(tmp_path / "disc.png")
    run = tmp_path / "run"
    args = ["image", str(image), "--out", str(run), "--route", "diffusion4d", "--model", str(weights / "image"),
            *CONSTRUCT_TINY]  # fmt: skip
    assert main(args + ["--stop-after", "orbit", "--motion", "0.03"]) == 0
    manifest = json.loads((run / "orbit" / "manifest.json").read_text())
    assert manifest["generator"]["motion"] == 0.03 and manifest["generator"]["command"] == "gen4d image"
    assert main(args + ["--resume", "--motion", "0.03"]) == 0
    assert set(_records(run)) == {"image", "orbit", "construct"}
    assert (run / "construct" / "metrics.json").is_file()


def test_animate_a_3dgs_ply(weights, tmp_path, capsys):
    from gen4d.gaussians.core import random_in_sphere
    from gen4d.gaussians.ply import save_ply

    torch.manual_seed(0)
    gaussians = random_in_sphere(200, radius=3.0)  # off the unit scale: animate normalises it
    save_ply(gaussians.with_(means=gaussians.means + 5.0), tmp_path / "asset.ply")
    run = tmp_path / "run"
    args = ["animate", str(tmp_path / "asset.ply"), "--out", str(run), "--model", str(weights / "static3d"),
            "--static_render.backend", "torch", *CONSTRUCT_TINY]  # fmt: skip
    assert main(args) == 0
    static = json.loads((run / "static" / "manifest.json").read_text())
    assert sum(1 for i in static["images"] if i["split"] == "static_orbit") == 3
    assert _records(run)["static"]["coverage"] > 0.05  # the normalised asset is in view
    orbit = json.loads((run / "orbit" / "manifest.json").read_text())
    assert orbit["generator"]["static_orbit_source"] == "given"
    assert (run / "construct" / "metrics.json").is_file()
    assert main(["animate", str(tmp_path / "asset.ply"), "--out", str(tmp_path / "b"), "--model",
                 str(weights / "image")]) == 2  # fmt: skip
    assert "needs the static3d variant" in capsys.readouterr().err


@pytest.mark.slow
def test_animate_an_obj_mesh_with_blender(weights, tmp_path):
    from gen4d.data.blender import bpy_available

    if not bpy_available():
        pytest.skip("bpy (Blender as a module) is not installed: pip install 'gen4d[render]'")
    (tmp_path / "box.obj").write_text(
        "v -0.5 -0.5 -0.5\nv 0.5 -0.5 -0.5\nv 0.5 0.5 -0.5\nv -0.5 0.5 -0.5\nv -0.5 -0.5 0.5\nv 0.5 -0.5 0.5\n"
        "v 0.5 0.5 0.5\nv -0.5 0.5 0.5\nf 1 2 3 4\nf 5 6 7 8\nf 1 2 6 5\nf 2 3 7 6\nf 3 4 8 7\nf 4 1 5 8\n"
    )
    run = tmp_path / "run"
    args = ["animate", str(tmp_path / "box.obj"), "--out", str(run), "--model", str(weights / "static3d"),
            "--static_render.samples", "1", "--stop-after", "static", *CONSTRUCT_TINY]  # fmt: skip
    assert main(args) == 0
    images = json.loads((run / "static" / "manifest.json").read_text())["images"]
    assert len(images) == 3
    alpha = np.asarray(Image.open(run / "static" / images[0]["file"]))[..., 3]
    assert alpha.max() == 255 and alpha.min() == 0  # the box is in view, the background transparent


# --------------------------------------------------------------------------------------- errors


def test_error_paths_are_one_line_user_errors(weights, tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((24, 24, 3), 255, np.uint8)).save(blank)
    cases = [
        (["text", "", "--out", str(tmp_path / "a")], "the prompt is empty"),
        (["text", "   ", "--out", str(tmp_path / "a")], "the prompt is empty"),
        (["image", str(blank), "--out", str(tmp_path / "b"), "--matting", "color"], "no object found"),
        (["image", str(tmp_path / "none.png"), "--out", str(tmp_path / "c")], "no such image file"),
        (
            [
                "text",
                "a fox",
                "--out",
                str(tmp_path / "d"),
                "--device",
                "cpu",
                "--text_to_image.model",
                str(tmp_path / "missing"),
            ],
            "--text_to_image.model",
        ),  # fmt: skip
        (["animate", str(tmp_path / "blank.png"), "--out", str(tmp_path / "e")], "unsupported asset"),
        (["text", "a fox", "--out", str(tmp_path / "f"), "--route", "diffusion4d", "--device", "cpu"], "--model DIR"),
        (["text", "a fox", "--out", str(tmp_path / "g"), "--stop-after", "paint"], "no such stage"),
    ]
    for args, expected in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (args, err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any folder is made
    # an object-less image from the text-to-image stage is refused too (random SDXL at a blank output)
    from gen4d.pipeline.routes import find_object

    with pytest.raises(UserError, match="no object found"):
        find_object(np.full((16, 16, 4), 0, np.uint8), "color", "x.png")


def test_hub_id_offline_says_how_to_download(tmp_path, monkeypatch, capsys):
    import gen4d.metrics.weights as hub

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(hub, "_reachable_hosts", set())
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    image = _object_image(tmp_path / "disc.png")
    args = ["image", str(image), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "huggingface-cli download stabilityai/stable-video-diffusion-img2vid-xt --local-dir"
    assert len(err) == 1 and expected in err[0], err


@pytest.mark.parametrize("extra", [[], ["--tiny"], ["--svd-frames", "25", "--cpu-offload", "--decode-chunk", "2"]])
def test_bench_routes_settings_are_a_valid_route_config(extra):
    """bench/bench_routes.py runs on a GPU only: its overrides must still name real options and values."""
    import importlib.util
    from pathlib import Path

    from gen4d.config import set_fields
    from gen4d.pipeline.config import route_config

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_routes.py"
    spec = importlib.util.spec_from_file_location("bench_routes", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.argparse.Namespace(
        tiny="--tiny" in extra, sdxl_size=1024, sdxl_steps=4, svd_frames=int(extra[1]) if "--svd-frames" in extra else 14,
        width=1024, height=576, svd_steps=4, decode_chunk=2 if "--decode-chunk" in extra else 8, mv_steps=5,
        stag4d_steps=100, preset="fast", dtype="float16", cpu_offload="--cpu-offload" in extra,
    )  # fmt: skip
    config = set_fields(route_config(args.preset), bench.settings(args))
    assert config.matting == "color" and config.image_to_video.cpu_offload == args.cpu_offload
