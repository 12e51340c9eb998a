"""gen4d eval --video: a generated orbital video scored directly against the ground-truth orbit
(Diffusion4D* rows), on the real Diffusion4D sample: a video made from the ground truth scores high,
a perturbed one lower; metrics without weights are reported as skipped with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gen4d.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def sample(shared_path) -> Path:
    """The Diffusion4D sample in the shared data folder (the test skips without it)."""
    return shared_path("data", "diffusion4d_sample", "2a7f866be31e43b89074f304a31ff82d")


def orbit_frames(sample: Path, size: int = 64) -> np.ndarray:
    from gen4d.data.dataset import load_dataset

    gt = load_dataset(sample).resized(size)
    index = gt.splits["orbit"]
    index = index[torch.argsort(gt.cameras.times[index], stable=True)]
    return (gt.subset(index).composited((1.0, 1.0, 1.0)).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def write_frames(frames: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i}.png")
    return folder


def test_video_from_the_ground_truth_scores_high_and_a_perturbed_one_lower(sample, tmp_path, capsys):
    frames = orbit_frames(sample)
    exact = write_frames(frames, tmp_path / "exact")
    rng = np.random.default_rng(0)
    noisy = np.clip(frames.astype(np.int16) + rng.integers(-40, 41, frames.shape), 0, 255).astype(np.uint8)
    perturbed = write_frames(np.roll(noisy, 3, axis=2), tmp_path / "perturbed")  # noise + a 3-pixel shift
    reports = {}
    for name, video in (("exact", exact), ("perturbed", perturbed)):
        out = tmp_path / f"report_{name}"
        args = ["eval", "--video", str(video), "--gt", str(sample), "--out", str(out), "--size", "64"]
        assert main(args) == 0
        reports[name] = json.loads((out / "report.json").read_text())
    exact_m, perturbed_m = reports["exact"]["metrics"], reports["perturbed"]["metrics"]
    assert exact_m["psnr"] > 45 and exact_m["ssim"] > 0.99  # uint8 rounding only
    assert perturbed_m["psnr"] < 25 and perturbed_m["ssim"] < 0.8
    for report in reports.values():
        assert report["protocol"] == "diffusion4d" and report["counts"]["images"] == 24
        for metric in ("clip_f", "clip_o", "fvd"):  # computed with weights on disk, else skipped with a reason
            assert metric in report["metrics"] or report["skipped"].get(metric), metric
        assert "lpips_vgg" in report["metrics"] or report["skipped"].get("lpips_vgg")
    # FVD pools clips over videos: one video is too few, and says so.
    assert "at least 2" in reports["exact"]["skipped"].get("fvd", "at least 2")


def test_video_metrics_through_small_networks_and_errors(sample, tmp_path):
    from gen4d.data.dataset import load_dataset
    from gen4d.eval.core import EvalConfig, evaluate
    from gen4d.eval.video import collect_video, video_case

    gt = load_dataset(sample)
    frames = torch.from_numpy(orbit_frames(sample, 32)).float() / 255
    seen = {}

    def fake_lpips():  # a stand-in network: mean absolute difference per image
        def net(a, b):
            seen["lpips_shape"] = tuple(a.shape)
            return (a - b).abs().flatten(1).mean(1)

        return net

    config = EvalConfig(protocol="diffusion4d", size=32, metrics=("psnr", "lpips"))
    cases = [video_case("a", frames, gt), video_case("b", frames.flip(0), gt)]
    report = evaluate(cases, config, loaders={"lpips": fake_lpips}, collect=collect_video, progress=False)
    assert seen["lpips_shape"][1:] == (32, 32, 3)
    per_case = {c["name"]: c["metrics"] for c in report["cases"]}
    assert per_case["a"]["lpips"] < 1e-2 < per_case["b"]["lpips"]  # the reversed orbit is wrong
    with pytest.raises(ValueError, match="23 frames but the ground-truth orbit"):
        video_case("short", frames[:23], gt)
    assert (
        main(["eval", "--video", str(tmp_path / "absent.mp4"), "--gt", str(sample), "--out", str(tmp_path / "r")]) == 2
    )
