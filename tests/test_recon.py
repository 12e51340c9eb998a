"""4D construction end to end on a tiny synthetic dynamic scene (CPU, reference rasteriser):
the model contract, quality for both deformation fields, the run layout, resume = uninterrupted,
NaN handling, dataset errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gen4d.cli import main as cli_main
from gen4d.data.synthetic import synthetic_dataset
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig, MotionBasesConfig
from gen4d.densify import DensifyConfig
from gen4d.gaussians import load_ply, random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon import load_run
from gen4d.recon.construct import (
    ConstructConfig,
    InitConfig,
    NonFiniteLossError,
    OutputConfig,
    StageConfig,
    reconstruct,
)
from gen4d.render import RenderOptions

NO_OUTPUTS = OutputConfig(ply=False, video=False, renders=False, lpips=False, evaluate=False)
SMALL_HEX = HexPlaneConfig(features=8, resolution=(8, 8, 8, 5), multires=(1, 2), bounds=1.0, width=32)
SMALL_CP = ControlPointConfig(num_points=32, width=32, depth=2, position_frequencies=4, time_frequencies=4)
SMALL_MB = MotionBasesConfig(num_bases=8, time_steps=8)
FIELDS = {
    "hexplane": SMALL_HEX,
    "control_points": SMALL_CP,
    "motion_bases": SMALL_MB,
    "motion_bases_learned": replace(SMALL_MB, learn_weights=True),
}


@pytest.fixture(scope="module")
def scene():
    """8 frames of 4 moving blobs at 32x32: orbit, static_orbit, front and 4 held-out eval views."""
    return synthetic_dataset(size=32, frames=8, eval_views=4)


def tiny_config(kind="hexplane", coarse=4, fine=5, points=60, cameras=1, **changes) -> ConstructConfig:
    config = ConstructConfig(
        device="cpu",
        backend="torch",
        tile_size=8,
        init=InitConfig(num_points=points),
        coarse=StageConfig(iterations=coarse, cameras_per_step=cameras, static_orbit=True),
        fine=StageConfig(iterations=fine, cameras_per_step=cameras, static_orbit=False),
        deform=DeformConfig(field=FIELDS[kind]),
        densify=DensifyConfig(
            start=2, stop=10_000, every=2, reset_every=0, prune_opacity=0.01, max_gaussians=4 * points
        ),
        log_every=2,
        checkpoint_every=0,
        output=NO_OUTPUTS,
    )
    return replace(config, **changes)


# -- the model contract -------------------------------------------------------------------------
def test_model_at_and_render_one_batched_call(monkeypatch):
    from gen4d.cameras import orbit
    from gen4d.gaussians import dynamic as model_module

    model = DynamicGaussians(random_in_sphere(50, seed=2), DeformConfig(field=SMALL_HEX))
    with torch.no_grad():  # a non-identity field so times matter
        model.field.head_out_weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        model.field.grid.temporal[0].mul_(torch.linspace(0.5, 1.5, 5)[:, None])
    times = torch.tensor([0.0, 0.5, 1.0])
    at = model.at(times)
    assert at.batched and at.means.shape == (3, 50, 3) and at.sh.shape == (3, 50, 1, 3)
    assert not torch.allclose(at.means[0], at.means[2])

    calls = []
    real_render = model_module.render

    def spy(gaussians, cameras, background=None, options=RenderOptions()):
        calls.append((gaussians, cameras))
        return real_render(gaussians, cameras, background, options)

    monkeypatch.setattr(model_module, "render", spy)
    cams = orbit(0.0, [0.0, 90.0, 180.0], 2.0, 40.0, 16, 16, times=[1.0, 0.0, 0.5])
    out = model.render(cams, options=RenderOptions(backend="torch", tile_size=8))
    assert len(calls) == 1 and out.rgb.shape == (3, 16, 16, 3)
    gaussians, _ = calls[0]
    assert gaussians.batched and torch.allclose(gaussians.means, model.at(cams.times).means)

    model.deform_enabled = False
    assert torch.equal(model.at(times).means, model.params["means"].expand(3, -1, -1))


# -- quality ----------------------------------------------------------------------------------------
# Calibrated on the 2-core CPU (deterministic for a seed): after 100 coarse + 300 fine steps of 2
# images the held-out 'eval' views (elevation 20 deg, azimuths between the orbit's, frame times)
# reach 22.7 dB (HexPlane) / 21.6 dB (control points) / 21.7 dB (motion bases, front 22.4; with
# learned weights 22.0, front 22.8; measured 2026-12-02, when HexPlane gave 22.6); a static fit with
# the same 400 steps
# saturates at ~17.2 dB there (it cannot follow the motion), and both fields keep improving with
# longer schedules (800 steps: 26.9 / 24.9 dB).
QUALITY_STEPS = (100, 300)
QUALITY_TARGET = {"hexplane": 21.0, "control_points": 20.0, "motion_bases": 20.5, "motion_bases_learned": 20.5}


def quality_config(kind: str, coarse: int, fine: int) -> ConstructConfig:
    return tiny_config(
        kind, coarse=coarse, fine=fine, points=200, cameras=2, log_every=50,
        densify=DensifyConfig(start=30, stop=10_000, every=30, reset_every=0, prune_opacity=0.01, max_gaussians=400),
        output=replace(NO_OUTPUTS, evaluate=True),
    )  # fmt: skip


@pytest.fixture(scope="module")
def static_baseline(scene, tmp_path_factory):
    """Held-out PSNR of a static fit (deformation never on) with the same step budget."""
    total = sum(QUALITY_STEPS)
    metrics = reconstruct(
        scene, quality_config("hexplane", total, 0), tmp_path_factory.mktemp("static"), progress=False, echo=None
    )
    return metrics["splits"]["eval"]["psnr"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FIELDS))
def test_synthetic_scene_reaches_heldout_psnr(scene, tmp_path, kind, static_baseline):
    metrics = reconstruct(scene, quality_config(kind, *QUALITY_STEPS), tmp_path / "run", progress=False, echo=None)
    held_out = metrics["splits"]["eval"]["psnr"]
    assert held_out >= QUALITY_TARGET[kind], metrics["splits"]
    assert held_out >= static_baseline + 2.5, (held_out, static_baseline)  # the motion is really modelled
    assert metrics["splits"]["front"]["psnr"] >= QUALITY_TARGET[kind]


# -- run layout, resume ------------------------------------------------------------------------------
def _checkpoint_tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoint" / "model.safetensors"))


@pytest.mark.parametrize("kind", list(FIELDS))
def test_resume_matches_uninterrupted_run(scene, tmp_path, kind):
    config = tiny_config(kind)
    full = tmp_path / "full"
    reconstruct(scene, config, full, progress=False, echo=None)

    part = tmp_path / "part"
    stopped = reconstruct(scene, config, part, progress=False, echo=None, stop_after=6)  # inside the fine stage
    assert stopped == {"stopped_at": 6}
    assert json.loads((part / "checkpoint" / "checkpoint.json").read_text())["step"] == 6
    reconstruct(scene, config, part, resume=True, progress=False, echo=None)

    a, b = _checkpoint_tensors(full), _checkpoint_tensors(part)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key
    assert "resumed from" in (part / "log.txt").read_text()


def test_cli_run_layout_and_resume(scene, tmp_path, capsys):
    from gen4d.config import to_dict
    from gen4d.data.manifest import save_dataset

    data = tmp_path / "data"
    save_dataset(scene, data)
    config = tiny_config(coarse=2, fine=3, output=OutputConfig(video_frames=4, video_size=16, lpips=True))
    run = tmp_path / "run"
    reconstruct(data, config, run, progress=False, echo=None, stop_after=3)
    assert cli_main(["reconstruct", str(data), "--out", str(run)]) == 2  # refuses to clobber a run
    assert "--resume" in capsys.readouterr().err
    assert cli_main(["reconstruct", str(data), "--out", str(run), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "metrics.json" in out and "orbit.mp4" in out

    assert json.loads((run / "config.json").read_text()) == json.loads(json.dumps(to_dict(config)))
    plys = sorted((run / "ply").glob("frame_*.ply"))
    assert [p.name for p in plys] == [f"frame_{i:04d}.ply" for i in range(8)]
    model = load_run(run)
    frame3 = load_ply(plys[3])
    assert torch.allclose(frame3.means, model.at(torch.tensor([3 / 7])).means[0], atol=1e-5)
    assert (run / "videos" / "orbit.mp4").stat().st_size > 0 and (run / "videos" / "orbit.gif").stat().st_size > 0
    assert len(list((run / "renders" / "eval").glob("*.png"))) == 4
    assert (
        len(list((run / "renders" / "front").glob("*.png"))) == 7
    )  # front frame 0 = orbit pose 0 at t = 0: trained on
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"eval", "front", "train"}
    for values in metrics["splits"].values():
        assert np.isfinite(values["psnr"]) and 0 < values["ssim"] <= 1 and 0 <= values["iou"] <= 1
    assert metrics["wall_time_s"] > 0 and metrics["peak_rss_mib"] > 0 and metrics["iterations"] == 5
    phases = metrics["phases"]  # where this process's time went: each part once, within the wall time
    assert set(phases) == {"setup_s", "loop_s", "evaluate_s", "renders_s", "ply_s", "video_s"}
    assert all(v >= 0 for v in phases.values()) and sum(phases.values()) <= metrics["wall_time_s"] + 0.01
    if metrics["splits"]["eval"]["lpips"] is None:  # no LPIPS weights on this machine: said so
        assert "LPIPS" in metrics["lpips_note"] and "LPIPS" in (run / "log.txt").read_text()
    assert "resumed from" in (run / "log.txt").read_text()


# -- failures ----------------------------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_last_good_checkpoint(scene, tmp_path, monkeypatch):
    from gen4d.recon import losses

    calls = {"n": 0}
    real_l1 = losses.l1

    def poisoned(pred, target):
        calls["n"] += 1
        value = real_l1(pred, target)
        return value * float("nan") if calls["n"] > 6 else value

    monkeypatch.setattr(losses, "l1", poisoned)
    run = tmp_path / "run"
    config = tiny_config(coarse=3, fine=6, checkpoint_every=5, log_every=2)
    with pytest.raises(NonFiniteLossError, match="non-finite") as info:
        reconstruct(scene, config, run, progress=False, echo=None)
    # checkpoints at step 3 (end of the coarse stage) and 5; the NaN enters at step 7, seen at step 8
    assert "last good checkpoint (step 5)" in str(info.value), str(info.value)
    model = load_run(run)  # the last good one, finite
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["step"] == 5
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert "non-finite" in (run / "log.txt").read_text()


def _write_png(path: Path, size=(16, 16), alpha=True):
    from PIL import Image

    array = np.zeros(size[::-1] + ((4,) if alpha else (3,)), dtype=np.uint8)
    array[4:12, 4:12] = 200
    Image.fromarray(array).save(path)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "missing for frames [2]"),
        ("sizes", "different sizes"),
        ("one_frame", "only one orbit frame"),
        ("no_times", "distinct time"),
        ("absent", "no such dataset"),
    ],
)
def test_bad_datasets_give_clear_errors(tmp_path, capsys, case, message):
    data = tmp_path / "data"
    data.mkdir()
    if case == "missing":
        for i in (0, 1, 3):
            _write_png(data / f"multi_frame{i}.png")
    elif case == "sizes":
        for i in range(3):
            _write_png(data / f"multi_frame{i}.png", size=(16, 16) if i else (20, 20))
    elif case == "one_frame":
        _write_png(data / "multi_frame0.png")
    elif case == "no_times":
        from gen4d.data.manifest import save_dataset

        video = synthetic_dataset(size=16, frames=2, eval_views=0, blobs=1, per_blob=4, static_orbit=False, front=False)
        video = replace(video, cameras=video.cameras.with_times(0.0), frames=None, num_frames=0)
        save_dataset(video, data)
    elif case == "absent":
        data = tmp_path / "nowhere"
    code = cli_main(["reconstruct", str(data), "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err


def test_rgb_only_dataset_trains_on_its_background(scene, tmp_path):
    rgb_only = replace(scene, images=scene.composited((1.0, 1.0, 1.0)), alphas=None)
    config = tiny_config(output=replace(NO_OUTPUTS, evaluate=True))
    metrics = reconstruct(rgb_only, config, tmp_path / "run", progress=False, echo=None)
    assert "no alpha" in (tmp_path / "run" / "log.txt").read_text()
    assert np.isfinite(metrics["splits"]["eval"]["psnr"])


def test_demo_command_runs_and_reruns(scene, tmp_path, capsys):
    from gen4d.data.manifest import save_dataset

    data = tmp_path / "data"
    save_dataset(scene, data)
    args = ["demo", "--out", str(tmp_path / "demo"), "--data", str(data), "--no-progress", "--size", "32",
            "--coarse.iterations", "2", "--fine.iterations", "2", "--init.num_points", "50",
            "--output.video_frames", "4", "--output.video_size", "16"]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "orbit video" in out and str(tmp_path / "demo" / "metrics.json") in out
    assert str(tmp_path / "demo" / "player.html") in out  # the web player next to the videos
    assert (tmp_path / "demo" / "player.html").read_text().count("gen4d-player/1") == 1
    assert cli_main(args) == 0  # a second demo replaces the first
    assert "replacing the previous run" in capsys.readouterr().out
    assert json.loads((tmp_path / "demo" / "metrics.json").read_text())["iterations"] == 4


def test_interrupt_between_checkpoints_then_resume(scene, tmp_path, monkeypatch):
    """Ctrl-C after step 7 (checkpoints every 3 steps): --resume restarts from step 6 and ends
    where an uninterrupted run ends."""
    from gen4d.recon import construct

    config = tiny_config(checkpoint_every=3)
    full = tmp_path / "full"
    reconstruct(scene, config, full, progress=False, echo=None)

    real_step = construct.training_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(construct, "training_step", interrupted)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        reconstruct(scene, config, part, progress=False, echo=None)
    assert json.loads((part / "checkpoint" / "checkpoint.json").read_text())["step"] == 6
    assert "interrupted at step 7; --resume continues from step 6" in (part / "log.txt").read_text()
    monkeypatch.setattr(construct, "training_step", real_step)
    reconstruct(scene, config, part, resume=True, progress=False, echo=None)
    a, b = _checkpoint_tensors(full), _checkpoint_tensors(part)
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key
