"""STAG4D video-to-4D (gen4d.recon.stag4d, gen4d video): presets, geometry helpers, the oracle
run on the shipped default data set (ground-truth Zero123++ views), and the whole pipeline with
tiny random Zero123++ / Zero-1-to-3 models through the CLI."""

from __future__ import annotations

import dataclasses as dc
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gen4d.cameras import orbit
from gen4d.recon.stag4d import PRESETS, RandomViews, Stag4DOutput, _render_size, preset, run_video_to_4d, spherical

DEFAULT_SET = __import__("gen4d.data.manifest", fromlist=["DEFAULT_DATASET"]).DEFAULT_DATASET


pytestmark = pytest.mark.usefixtures("single_thread")


def test_stag4d_preset_is_the_published_settings():
    c = preset("stag4d")
    assert (c.steps, c.static_steps, c.views_per_step, c.num_points, c.init_radius, c.init_opacity) == (
        8000,
        700,
        4,
        10000,
        0.5,
        0.1,
    )
    assert (c.loss.ref_rgb, c.loss.ref_alpha, c.loss.plane_tv, c.loss.time_smoothness, c.loss.time_l1) == (
        20000,
        5000,
        0.05,
        5,
        0.05,
    )
    assert c.loss.multiview_rgb == 0  # the public code used the anchored views only as SDS conditions
    assert c.anchored_frames == "one" and preset("fast").anchored_frames == "mixed"
    assert (c.lr.means, c.lr.means_final, c.lr.field_grid, c.lr.field_mlp, c.lr.decay_steps, c.lr.adam_eps) == (
        2e-3,
        2e-5,
        1.6e-2,
        1.6e-3,
        2000,
        1e-15,
    )
    d = c.densify
    assert (d.threshold_mode, d.percentile, d.start, d.stop, d.every, d.reset_every) == (
        "percentile",
        2.5,
        1200,
        6000,
        100,
        0,
    )
    assert (d.percent_dense, d.prune_opacity, d.prune_max_scale, d.prune_min_scale) == (0.1, 0.01, 0.1, 0.001)
    h = c.deform.field
    assert (h.features, h.resolution, h.multires, h.bounds, h.width, h.deform_opacity) == (
        32,
        (64, 64, 64, 25),
        (1, 2, 4, 8),
        1.6,
        64,
        False,
    )
    assert h.regularizer == "stag4d" and preset("fast").deform.field.regularizer == "stag4d"
    assert (c.sds.guidance_scale, c.sds.input_prob, c.sds.input_azimuth_deg) == (5.0, 0.6, 30.0)
    a = c.sds.anneal
    assert (a.min_start, a.min_end, a.max_start, a.max_end, a.steps) == (0.5, 0.02, 0.95, 0.5, 3000)
    m = c.multiview
    assert (m.steps, m.guidance_scale, m.seed, m.anchor_weight, m.version) == (75, 4.0, 42, 0.5, "v1.1")
    assert (c.ref_fov_deg, c.ref_radius, c.input.size) == (49.1, 2.0, 512)
    assert set(PRESETS) == {"stag4d", "fast"}


def test_render_size_schedule_and_spherical():
    c = preset("stag4d")
    assert [_render_size(c, s) for s in (0, 599, 600, 1199, 1200, 7000)] == [128, 128, 256, 256, 512, 512]
    cams = orbit(torch.tensor([10.0, -20.0, 0.0]), torch.tensor([30.0, -150.0, 180.0]), torch.tensor([2.0, 2.5, 1.5]))
    el, az, r = spherical(cams)
    torch.testing.assert_close(el, torch.tensor([10.0, -20.0, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(r, torch.tensor([2.0, 2.5, 1.5]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        torch.cos(torch.deg2rad(az)), torch.cos(torch.deg2rad(torch.tensor([30.0, -150.0, 180.0]))), atol=1e-4, rtol=0
    )


def _tiny(config, **changes):
    from gen4d.deform import DeformConfig, HexPlaneConfig

    base = dict(
        device="cpu",
        backend="torch",
        num_points=800,
        deform=DeformConfig(
            field=HexPlaneConfig(
                features=8, resolution=(16, 16, 16, 8), multires=(1, 2), width=32, regularizer="stag4d"
            )
        ),
        output=Stag4DOutput(video_size=24, round_frames=6, loops=1),
        log_every=10,
    )
    base.update(changes)
    return dc.replace(config, **base)


def test_oracle_run_on_the_default_data_set(tmp_path):
    """Front video + ground-truth Zero123++ views (v1.2 poses, frames 0/8/16/23) of the shipped
    procedural creature (Blender renders) -> held-out eval views (4 azimuths x 24 times).

    CPU version: 32 x 32, 100 steps, SDS off (only a real Zero-1-to-3 would help), 2 anchored views
    per step. Measured: eval PSNR 22.4 dB with ``fast``'s anchored-view weights (40000 / 10000); 20.2 dB
    with the earlier 2000 / 500, which this test rejects; front video only: 17.4 dB; a white image: 14.3 dB.
    """
    from gen4d.data.video_input import VideoInputConfig

    fast = preset("fast")
    config = _tiny(
        fast, steps=100, static_steps=33, ramp_steps=50, views_per_step=0, anchored_per_step=2, input=VideoInputConfig(size=32),
        densify=dc.replace(fast.densify, start=33, stop=80, every=10, max_gaussians=4000), lr=dc.replace(fast.lr, decay_steps=100),
        sds=dc.replace(fast.sds, weight=0.0), output=Stag4DOutput(videos=False, ply=False, renders=True),
    )  # fmt: skip
    result = run_video_to_4d(
        DEFAULT_SET, tmp_path, config, multiview=f"oracle:{DEFAULT_SET}", progress=False, echo=None
    )
    assert result["eval"]["images"] == 96
    assert result["eval"]["psnr"] > 21.5, result["eval"]
    assert len(list((tmp_path / "renders" / "eval").glob("*.png"))) == 96
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["one", "mixed"])
def test_anchored_views_of_a_step_come_from_one_frame_or_all(tmp_path, monkeypatch, mode):
    """anchored_frames: 'one' renders the anchored views of the step's frame (STAG4D); 'mixed' the same
    number drawn over all frames, so a step's anchored render holds several times."""
    from gen4d.data.video_input import VideoInputConfig
    from gen4d.gaussians.dynamic import DynamicGaussians

    fast = preset("fast")
    config = _tiny(
        fast, steps=12, static_steps=2, ramp_steps=4, views_per_step=1, anchored_per_step=4, num_points=200,
        anchored_frames=mode, input=VideoInputConfig(size=24), sds=dc.replace(fast.sds, weight=0.0),
        densify=dc.replace(fast.densify, start=100, stop=100), output=Stag4DOutput(videos=False, ply=False, renders=False),
    )  # fmt: skip
    seen = []
    real_render = DynamicGaussians.render

    def spy(self, cameras, *args, **kwargs):
        if self.training and cameras.times.numel() == 4:  # the anchored render (the reference one has 1 camera)
            seen.append(sorted({round(float(t), 4) for t in cameras.times}))
        return real_render(self, cameras, *args, **kwargs)

    monkeypatch.setattr(DynamicGaussians, "render", spy)
    run_video_to_4d(DEFAULT_SET, tmp_path, config, multiview=f"oracle:{DEFAULT_SET}", progress=False, echo=None)
    assert len(seen) == 12
    after_static = seen[2:]
    if mode == "one":
        assert all(len(times) == 1 for times in seen)
    else:
        assert max(len(times) for times in after_static) > 1
        assert len(set().union(*map(set, after_static))) == 4  # the four frames with anchored views
        assert all(len(times) == 1 for times in seen[:2])  # the static steps keep the middle frame's views


def _write_frames(folder, count=3, size=40):
    folder.mkdir()
    ys, xs = np.mgrid[0:size, 0:size]
    for i in range(count):
        rgba = np.zeros((size, size, 4), np.uint8)
        inside = (xs - 16 - 2 * i) ** 2 + (ys - 20) ** 2 <= 64
        rgba[inside] = (220, 120, 30, 255)
        rgba[(xs - 22 - 2 * i) ** 2 + (ys - 20) ** 2 <= 16] = (30, 60, 200, 255)
        Image.fromarray(rgba).save(folder / f"{i}_rgba.png")


def test_gen4d_video_end_to_end_tiny_models(tmp_path):
    """Frames -> Zero123++ (tiny random, anchored) -> STAG4D with Zero-1-to-3 SDS (tiny random)
    -> videos, PLYs, checkpoint; a rerun resumes and reuses the cached views."""
    pytest.importorskip("diffusers", reason="the Zero123++ / Zero-1-to-3 models need diffusers (gen4d[diffusion])")
    from gen4d.cli import main

    frames = tmp_path / "frames"
    _write_frames(frames)
    run = tmp_path / "run"
    common = [
        str(frames), "--out", str(run), "--preset", "fast", "--no-progress", "--device", "cpu", "--backend", "torch",
        "--multiview.model", "random:tiny", "--multiview.steps", "2", "--multiview.frames_per_batch", "2",
        "--sds.model", "random:tiny", "--views_per_step", "2", "--views.sizes", "16", "--views.size_steps", "",
        "--input.size", "24", "--num_points", "300", "--static_steps", "2", "--ramp_steps", "3",
        "--densify.start", "2", "--densify.every", "2", "--densify.stop", "5",
        "--deform.field.resolution", "8,8,8,4", "--deform.field.multires", "1", "--deform.field.features", "4",
        "--output.video_size", "16", "--output.round_frames", "4", "--output.loops", "1", "--checkpoint_every", "2",
    ]  # fmt: skip
    assert main(["video"] + common + ["--steps", "4"]) == 0
    for path in ("videos/front.mp4", "videos/back.mp4", "videos/round.mp4", "ply/frame_0000.ply", "ply/frame_0002.ply",
                 "checkpoint/model.safetensors", "multiview/frame_0000.png", "multiview/frame_0002.png", "frames/0_rgba.png",
                 "config.json", "metrics.json", "log.txt"):  # fmt: skip
        assert (run / path).is_file(), path
    grid = Image.open(run / "multiview" / "frame_0001.png")
    assert grid.size == (32, 48)  # 3 x 2 views of 16 px (tiny model)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["multiview"] == "zero123pp" and metrics["frames"] == 3
    assert set(metrics["timings"]) >= {"input_s", "multiview_s", "optimise_s", "outputs_s"}
    assert (
        metrics["sds_conditions"]["input"] > 0 and metrics["sds_conditions"]["view"] > 0
    )  # both condition sources used
    log = (run / "log.txt").read_text()
    assert "deformation on" in log and "sds" in log

    mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "multiview").glob("frame_*.png")}
    assert main(["video"] + common + ["--steps", "6", "--resume"]) == 0
    assert "resumed at step 4" in (run / "log.txt").read_text()
    assert {p.name: p.stat().st_mtime_ns for p in (run / "multiview").glob("frame_*.png")} == mtimes  # views reused
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["step"] == 6


def test_run_errors(tmp_path):
    frames = tmp_path / "frames"
    _write_frames(frames)
    config = _tiny(preset("fast"), steps=2)
    with pytest.raises(ValueError, match="oracle mode needs INPUT to be the dataset"):
        run_video_to_4d(frames, tmp_path / "a", config, multiview=f"oracle:{DEFAULT_SET}", progress=False, echo=None)
    with pytest.raises(ValueError, match="--multiview must be"):
        run_video_to_4d(frames, tmp_path / "b", config, multiview="zero123++", progress=False, echo=None)
    with pytest.raises(ValueError, match="RandomViews"):
        dc.replace(config, views=RandomViews(sizes=(16, 32), size_steps=()))


def test_video_into_a_user_folder_is_refused(tmp_path, capsys):
    from gen4d.cli import main as cli_main

    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    code = cli_main(["video", str(DEFAULT_SET), "--out", str(user), "--multiview", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(user) in err and "another --out" in err, err
    assert sorted(p.name for p in user.iterdir()) == ["config.json"]
    assert (user / "config.json").read_text() == '{"mine": true}'


def test_resume_after_an_interrupt_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Ctrl-C after step 5 (checkpoints every 2 steps), --resume from step 4: the final model is
    the uninterrupted run's, with SDS (tiny random Zero-1-to-3), anchored views, densification and
    the deformation switched on in between."""
    pytest.importorskip("diffusers", reason="the Zero-1-to-3 model needs diffusers (gen4d[diffusion])")
    from safetensors.torch import load_file

    from gen4d.data.video_input import VideoInputConfig
    from gen4d.errors import RunInterrupted
    from gen4d.recon.stag4d import Stag4DTask

    fast = preset("fast")
    config = _tiny(
        fast, steps=8, static_steps=3, ramp_steps=4, views_per_step=2, anchored_per_step=2, num_points=300,
        input=VideoInputConfig(size=24), views=RandomViews(sizes=(16,), size_steps=()), log_every=1,
        densify=dc.replace(fast.densify, start=2, stop=7, every=2, max_gaussians=1200),
        sds=dc.replace(fast.sds, model="random:tiny"), checkpoint_every=2, output=Stag4DOutput(videos=False, ply=False),
    )  # fmt: skip

    def run(folder, resume=False):
        torch.manual_seed(123)  # the tiny random guidance model is built from the global RNG
        oracle = f"oracle:{DEFAULT_SET}"
        return run_video_to_4d(DEFAULT_SET, folder, config, oracle, resume=resume, progress=False, echo=None)

    run(tmp_path / "full")
    real_step = Stag4DTask.step
    calls = {"n": 0}

    def interrupted(self, step):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(Stag4DTask, "step", interrupted)
    with pytest.raises(RunInterrupted, match="--resume continues from step 4"):
        run(tmp_path / "part")
    monkeypatch.setattr(Stag4DTask, "step", real_step)
    result = run(tmp_path / "part", resume=True)
    assert "resumed at step 4" in (tmp_path / "part" / "log.txt").read_text()
    assert result["sds_conditions"]["input"] > 0
    full = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    part = load_file(str(tmp_path / "part" / "checkpoint" / "model.safetensors"))
    assert full.keys() == part.keys()
    for key in full:
        assert torch.equal(full[key], part[key]), key
