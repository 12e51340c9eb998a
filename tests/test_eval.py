"""gen4d eval: protocols, rendering at the ground truth's cameras and times, reports, skipped
metrics, the CLI - on tiny scenes with random-weight metric networks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gen4d.cameras import orbit
from gen4d.data.dataset import MultiViewVideo, load_dataset
from gen4d.data.manifest import save_dataset
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.eval import EvalCase, EvalConfig, evaluate, group_views, markdown_report, read_generation_time, write_report
from gen4d.eval.report import format_duration, load_report
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon import save_checkpoint
from gen4d.render import RenderOptions

SIZE = 32
FRAMES = 10
TORCH = RenderOptions(backend="torch")


def _model(seed: int = 0, colour_shift: float = 0.0) -> DynamicGaussians:
    gaussians = random_in_sphere(200, radius=0.5, opacity=0.8, seed=seed)
    gaussians = gaussians.with_(log_scales=torch.full_like(gaussians.log_scales, math.log(0.06)))
    if colour_shift:
        gaussians = gaussians.with_(sh=gaussians.sh + colour_shift)
    config = DeformConfig(field=HexPlaneConfig(features=4, resolution=(8, 8, 8, 4), multires=(1,), width=16))
    model = DynamicGaussians(gaussians, config)
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():  # a visible, time-dependent motion
        for param in model.field.parameters():
            param.add_(0.03 * torch.randn(param.shape, generator=gen))
    return model.eval()


def _video(model: DynamicGaussians, splits: dict[str, object], name: str = "toy") -> MultiViewVideo:
    cams = [c for c in splits.values()]
    cameras = type(cams[0]).cat(cams)
    with torch.no_grad():
        out = model.render(cameras, torch.zeros(3), TORCH)
    alpha = out.alpha.clamp(0, 1)
    colour = torch.where(alpha > 1e-4, out.rgb / alpha.clamp_min(1e-4), torch.zeros_like(out.rgb)).clamp(0, 1)
    index, start = {}, 0
    for split, cams_split in splits.items():
        index[split] = torch.arange(start, start + len(cams_split))
        start += len(cams_split)
    return MultiViewVideo(images=colour, alphas=alpha, cameras=cameras, splits=index, num_frames=FRAMES, name=name)


def _times():
    return torch.arange(FRAMES, dtype=torch.float32) / (FRAMES - 1)


def consistent4d_gt(model):
    times = _times()
    views = []
    for azimuth in (60.0, 180.0, 300.0):  # held-out views x FRAMES frames (the benchmark has 4)
        views.append(orbit(0.0, azimuth, 2.0, 40.0, SIZE, SIZE, times))
    eval_cams = type(views[0]).cat(views)
    front = orbit(0.0, 0.0, 2.0, 40.0, SIZE, SIZE, times)
    return _video(model, {"front": front, "eval": eval_cams}, "toy_c4d")


def diffusion4d_gt(model):
    steps = _times()
    return _video(
        model,
        {
            "orbit": orbit(0.0, 360.0 * steps, 2.0, 40.0, SIZE, SIZE, steps),
            "front": orbit(0.0, 0.0, 2.0, 40.0, SIZE, SIZE, steps),
        },
        "toy_d4d",
    )


@pytest.fixture(scope="module")
def gt_model():
    return _model(0)


@pytest.fixture(scope="module")
def c4d_gt(gt_model):
    return consistent4d_gt(gt_model)


@pytest.fixture(scope="module")
def d4d_gt(gt_model):
    return diffusion4d_gt(gt_model)


@pytest.fixture(scope="module")
def loaders():
    """Random-weight networks standing in for the pretrained ones."""
    from gen4d.metrics.fvd import InceptionI3d
    from gen4d.metrics.perceptual import LPIPS, lpips_head_path

    torch.manual_seed(0)
    lpips_net = LPIPS("alex")
    lpips_net.load_heads(lpips_head_path("alex"))
    i3d = InceptionI3d(width=0.125)
    out = {"lpips": lambda: lpips_net, "fvd": lambda: i3d}
    transformers = pytest.importorskip("transformers")
    from gen4d.metrics.clip import CLIPScorer

    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, vocab_size=64, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16,
    )  # fmt: skip
    scorer = CLIPScorer(transformers.CLIPModel(config))
    out["clip"] = lambda: scorer
    return out


CONFIG = EvalConfig(backend="torch", device="cpu", lpips_net="alex", orbit_views=8, fvd_size=32)


def test_group_views_sorts_by_time():
    times = torch.tensor([0.5, 0.0, 1.0, 0.25])
    cams = type(orbit(0.0, 0.0)).cat(
        [orbit(0.0, 10.0, times=times[:2]), orbit(0.0, 80.0, times=times[2:]), orbit(0.0, 10.0, times=0.75)]
    )
    groups = group_views(cams)
    assert [g.tolist() for g in groups] == [[1, 0, 4], [3, 2]]


def test_consistent4d_protocol(gt_model, c4d_gt, loaders):
    gt = c4d_gt
    static = _model(0)
    static.deform_enabled = False  # the same Gaussians without the motion
    cases = {
        "same": [EvalCase("same", gt_model, gt, generation_time_s=120.0)],
        "static": [EvalCase("static", static, gt, generation_time_s=60.0)],
        "other": [EvalCase("other", _model(1), gt)],
    }
    without_clip = EvalConfig(**{**CONFIG.__dict__, "metrics": ("psnr", "ssim", "lpips", "fvd")})
    reports = {
        k: evaluate(v, CONFIG if k == "same" else without_clip, method=k, loaders=loaders, progress=False)
        for k, v in cases.items()
    }
    same = reports["same"]
    assert same["protocol"] == "consistent4d"
    assert same["counts"] == {"cases": 1, "images": 3 * FRAMES, "clips_per_side": 3, "clip_frames": [FRAMES]}
    m = same["metrics"]
    assert m["psnr"] > 40 and m["ssim"] > 0.99 and m["lpips_alex"] < 1e-3 and m["clip"] > 0.999
    assert abs(m["fvd"]) < 1e-3 * max(1.0, reports["other"]["metrics"]["fvd"])
    assert m["generation_time_s"] == 120.0
    assert m["iou"] == 1.0  # the ground truth's alpha is this model's render
    assert same["cases"][0]["metrics"]["iou"] == 1.0
    assert same["skipped"] == {}
    # Time is honoured: the same Gaussians without their motion score worse, another scene worse still.
    for key, better in (("psnr", max), ("ssim", max), ("lpips_alex", min)):
        values = [reports[k]["metrics"][key] for k in ("same", "static", "other")]
        assert better(values) == values[0]
    assert reports["static"]["metrics"]["psnr"] > reports["other"]["metrics"]["psnr"]
    assert reports["other"]["metrics"]["fvd"] > 0
    assert "generation_time" in reports["other"]["skipped"]
    text = markdown_report(same, [reports["static"], reports["other"]])
    assert (
        "| Method | LPIPS (alex) ↓ | CLIP ↑ | FVD ↓ | PSNR ↑ | SSIM ↑ | Silhouette IoU ↑ | Generation time ↓ |" in text
    )
    assert "| static |" in text and "2 min" in text


def test_diffusion4d_protocol(gt_model, d4d_gt, loaders):
    gt = d4d_gt
    report = evaluate([EvalCase("same", gt_model, gt)], CONFIG, loaders=loaders, progress=False)
    assert report["protocol"] == "diffusion4d"
    m = report["metrics"]
    assert set(m) >= {"psnr", "ssim", "lpips_alex", "clip_f", "clip_o", "fvd"}
    assert report["counts"]["images"] == 2 * FRAMES and report["counts"]["clips_per_side"] == 2
    # The front render at t = 0 is the reference image itself; the renders are the ground truth, so
    # CLIP-F / CLIP-O are the ground-truth front / orbit views' similarities to the front image at t = 0.
    assert "front image at t=0.000" in report["notes"]["clip_reference"]
    from gen4d.metrics.clip import clip_reference_similarity

    def on_white(split):
        index = gt.splits[split][torch.argsort(gt.cameras.times[gt.splits[split]])]
        return gt.images[index] * gt.alphas[index] + (1 - gt.alphas[index])

    scorer, front = loaders["clip"](), on_white("front")
    with torch.no_grad():
        expected_f = float(clip_reference_similarity(scorer, front, front[:1]))
    assert m["clip_f"] == pytest.approx(expected_f, abs=1e-4)
    # CLIP-O scores orbit views (back included) against that front image: less alike than the front video.
    assert m["clip_o"] < m["clip_f"] - 1e-3
    text = markdown_report(report)
    assert (
        "| Method | CLIP-F ↑ | CLIP-O ↑ | Generation time ↓ | SSIM ↑ | PSNR ↑ | LPIPS (alex) ↓ | FVD ↓ | Silhouette IoU ↑ |"
        in text
    )


def test_missing_weights_are_reported_as_skipped(gt_model, c4d_gt, tmp_path, monkeypatch):
    for var in ("GEN4D_WEIGHTS_DIR", "TORCH_HOME", "HF_HOME"):  # hermetic: no pretrained weights
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    gt = c4d_gt
    config = EvalConfig(backend="torch", device="cpu", clip_model=str(tmp_path / "no_clip"))
    report = evaluate([EvalCase("same", gt_model, gt)], config, progress=False)
    assert set(report["metrics"]) == {"psnr", "ssim", "iou"}
    skipped = report["skipped"]
    assert set(skipped) == {"lpips_vgg", "clip", "fvd", "generation_time"}
    assert "vgg16-397923af.pth" in skipped["lpips_vgg"] and "GEN4D_WEIGHTS_DIR" in skipped["lpips_vgg"]
    assert "rgb_imagenet.pt" in skipped["fvd"]
    assert "huggingface-cli download" in skipped["clip"]
    text = markdown_report(report)
    assert "skipped" in text and "**Skipped metrics**" in text


def test_errors(gt_model, c4d_gt):
    gt = c4d_gt.subset(c4d_gt.splits["eval"][:2])

    class WrongSize:
        def render(self, cameras, background, options):
            return gt_model.render(cameras.resized(SIZE * 2, SIZE * 2), background, options)

    with pytest.raises(ValueError, match="resolution"):
        evaluate([EvalCase("bad", WrongSize(), gt)], EvalConfig(backend="torch", metrics=("psnr",)), progress=False)
    with pytest.raises(ValueError, match="unknown"):
        evaluate([EvalCase("x", gt_model, gt)], EvalConfig(metrics=("psnr", "fid")), progress=False)
    with pytest.raises(ValueError, match="held-out views"):
        evaluate([EvalCase("x", gt_model, c4d_gt.split("front"))], EvalConfig(protocol="consistent4d"), progress=False)
    with pytest.raises(ValueError, match="no cases"):
        evaluate([], EvalConfig())


def test_generation_time_and_duration_format(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert read_generation_time(run) is None
    (run / "log.txt").write_text("step 10 loss 0.1\nwall_time: 2.5 min\nstep 20\nwall_time_s = 301.5\n")
    assert read_generation_time(run)[0] == 301.5
    (run / "metrics.json").write_text(json.dumps({"wall_time_s": 480.0}))
    assert read_generation_time(run) == (480.0, f"{run / 'metrics.json'} (wall_time_s)")
    assert format_duration(480) == "8 min" and format_duration(9000) == "2 h 30 min" and format_duration(45) == "45 s"


def test_cli_end_to_end(gt_model, d4d_gt, tmp_path, monkeypatch, capsys):
    from gen4d.cli import main

    for var in ("GEN4D_WEIGHTS_DIR", "TORCH_HOME", "HF_HOME"):  # hermetic: no pretrained weights
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    gt_dir = tmp_path / "gt"
    save_dataset(d4d_gt, gt_dir)
    run = tmp_path / "runs" / "toy_run"
    save_checkpoint(run, gt_model, info={"step": 1})
    (run / "metrics.json").write_text(json.dumps({"wall_time_s": 90.0}))
    out = tmp_path / "report"
    args = ["eval", str(run), "--gt", str(gt_dir), "--out", str(out), "--backend", "torch", "--device", "cpu"]
    args += ["--clip_model", str(tmp_path / "no_clip"), "--orbit_views", "4"]
    assert main(args) == 0
    report = load_report(out)
    assert report["protocol"] == "diffusion4d" and report["method"] == "toy_run"
    assert report["metrics"]["psnr"] > 35  # 8-bit PNG round trip of the ground truth
    assert report["metrics"]["generation_time_s"] == 90.0
    assert {"lpips_vgg", "clip_f", "clip_o", "fvd"} <= set(report["skipped"])
    md = (out / "report.md").read_text()
    assert "| toy_run |" in md and "1.5 min" in md
    assert "toy_run" in capsys.readouterr().out
    # a second method compared against the first report
    assert (
        main(
            args[:1]
            + [str(run), "--gt", str(gt_dir), "--out", str(tmp_path / "r2"), "--name", "again", "--compare", str(out)]
            + args[6:]
        )
        == 0
    )
    assert "| toy_run |" in (tmp_path / "r2" / "report.md").read_text()
    # user errors come back as exit code 2 with a message
    assert main(["eval", str(tmp_path / "missing_run"), "--gt", str(gt_dir), "--out", str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert load_dataset(gt_dir).has_split("orbit")
    with pytest.raises(ValueError, match="folder"):
        write_report(report, tmp_path / "x.json")


SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "diffusion4d_sample"


@pytest.mark.skipif(
    not SAMPLE.is_dir(), reason=f"Diffusion4D sample not found at {SAMPLE} (shared data is not part of the repo)"
)
def test_diffusion4d_sample_pairs_cameras_and_times():
    """On the real sample: a model that replays the ground truth image of each requested
    (pose, time) scores perfectly, so renders and targets are paired by camera and time; the
    CLIP-O orbit starts at the sample's front pose with its radius and FOV."""
    from gen4d.eval.core import _orbit_cameras, collect_case

    gt = load_dataset(SAMPLE, size=48)
    assert gt.has_split("orbit") and gt.has_split("front")
    white = gt.composited((1.0, 1.0, 1.0))

    class Replay:
        def render(self, cameras, background, options):
            keys = torch.cat([gt.cameras.world_to_camera.flatten(1), gt.cameras.times[:, None]], 1)
            want = torch.cat([cameras.world_to_camera.flatten(1).cpu(), cameras.times[:, None].cpu()], 1)
            match = torch.cdist(want.double(), keys.double()).argmin(1)
            return type("Out", (), {"rgb": white[match]})()

    config = EvalConfig(metrics=("psnr", "ssim"), orbit_views=4)
    collected = collect_case(EvalCase("replay", Replay(), gt), "diffusion4d", config, None)
    orbit_pred, orbit_gt = collected.pairs["orbit"]
    assert torch.equal(orbit_pred, orbit_gt)
    front_pred, front_gt = collected.pairs["front"]
    # front frame 0 has the pose and time of orbit view 0 (a separate render of the same view)
    assert torch.equal(front_pred[1:], front_gt[1:]) and (front_pred[0] - front_gt[0]).abs().mean() < 0.01
    report = evaluate([EvalCase("replay", Replay(), gt)], config, progress=False)
    assert report["protocol"] == "diffusion4d"
    assert report["counts"]["images"] == len(gt.splits["orbit"]) + len(gt.splits["front"])
    assert report["metrics"]["ssim"] > 0.9999
    ring = _orbit_cameras(gt, 36)
    first = gt.cameras[gt.splits["orbit"][:1]]
    assert torch.allclose(ring.world_to_camera[0], first.world_to_camera[0], atol=1e-4)
    assert torch.allclose(ring.fy[0], first.fy[0], rtol=1e-4) and float(ring.times[0]) == 0.0
    assert float(ring.times[-1]) == 1.0


def test_a_named_eval_split_that_is_missing_is_an_error(c4d_gt, d4d_gt):
    from gen4d.eval.core import resolve_protocol

    assert resolve_protocol(c4d_gt, EvalConfig()) == "consistent4d"
    assert resolve_protocol(d4d_gt, EvalConfig()) == "diffusion4d"  # the default split may be absent: auto picks
    with pytest.raises(ValueError, match=r"--eval_split 'nope': .* has no such split"):
        resolve_protocol(d4d_gt, EvalConfig(eval_split="nope"))
    with pytest.raises(ValueError, match=r"--eval_split 'nope'"):
        resolve_protocol(c4d_gt, EvalConfig(eval_split="nope"))
