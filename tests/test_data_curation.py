"""Curation (Diffusion4D section 3.2): numpy filters, SSIM against scikit-image, gen4d curate."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from gen4d.data.curation import (
    RESULTS_HEADER,
    CurationConfig,
    border_alpha,
    check_results_file,
    curate_assets,
    curation_figures,
    decide,
    front_ssims,
    motion_magnitude,
    read_results,
    ssim,
)


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image (the dev extra) is the SSIM reference")
    rng = np.random.default_rng(0)
    base = rng.random((37, 45, 3))
    smooth = np.cumsum(np.cumsum(rng.random((40, 40)), 0), 1)
    smooth /= smooth.max()
    cases = [
        (base, np.clip(base + 0.1 * rng.standard_normal(base.shape), 0, 1)),
        (base, base),
        (base, 1 - base),
        (smooth, np.roll(smooth, 3, axis=1)),
    ]
    for a, b in cases:
        expected = skm.structural_similarity(
            a,
            b,
            data_range=1.0,
            channel_axis=-1 if a.ndim == 3 else None,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert abs(ssim(a, b) - expected) < 1e-10
    assert ssim(base, base) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(base, base[:-1])
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


def test_curation_needs_no_torch():
    code = (
        "import sys, numpy as np\n"
        "from gen4d.data import curation as c\n"
        "v = np.random.default_rng(0).random((8, 16, 16, 3))\n"
        "c.curation_figures(v, v[..., :1], v, v[..., :1], v, v[..., :1])\n"
        "assert 'torch' not in sys.modules, 'curation imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_motion_magnitude_is_eq1():
    rng = np.random.default_rng(1)
    video = rng.random((4, 8, 8, 3))
    static = video.copy()
    assert motion_magnitude(video, static) == 0.0
    static[2] += 0.5  # one frame of four differs by 0.5 everywhere
    assert motion_magnitude(video, static) == pytest.approx(0.25 / 4)
    with pytest.raises(ValueError, match="differ"):
        motion_magnitude(video, static[:3])


def test_border_alpha_and_front_ssims():
    alphas = np.zeros((3, 20, 20, 1))
    alphas[:, 5:15, 5:15] = 1
    assert border_alpha(alphas) == 0.0
    alphas[1, 10, 19] = 0.7
    assert border_alpha(alphas) == pytest.approx(0.7)
    alphas[1, 10, 19] = 0
    alphas[2, 10, 17] = 0.4
    assert border_alpha(alphas, pixels=1) == 0.0 and border_alpha(alphas, pixels=3) == pytest.approx(0.4)
    frames = np.stack([np.full((16, 16, 3), i / 8) for i in range(8)])
    q, h = front_ssims(frames)  # compares frame 0 with frames 2 and 4
    assert q == pytest.approx(ssim(frames[0], frames[2])) and h == pytest.approx(ssim(frames[0], frames[4]))


def test_decide_thresholds():
    base = {"ssim_t0_quarter": 0.8, "ssim_t0_half": 0.7, "border_alpha": 0.0, "motion_magnitude": 0.01, "coverage": 0.1}
    assert decide(base)[0] == "keep"
    assert decide({**base, "ssim_t0_quarter": 0.97, "ssim_t0_half": 0.99}) == (
        "reject",
        "too static: front-view SSIMs 0.970, 0.990 both > 0.95",
    )
    assert decide({**base, "ssim_t0_quarter": 0.97})[0] == "keep"  # only one above: moves
    assert decide({**base, "ssim_t0_half": 0.3})[1].startswith("distorted")
    assert decide({**base, "ssim_t0_half": 0.3}, CurationConfig(distorted_if="both"))[0] == "keep"
    assert decide({**base, "border_alpha": 0.5})[1].startswith("leaves the frame")
    assert decide({**base, "coverage": 0.001}, CurationConfig(min_coverage=0.01))[1].startswith("too small")
    assert decide({**base, "motion_magnitude": 0.0}, CurationConfig(min_motion=1e-4))[1].startswith("too little motion")
    assert decide(base, CurationConfig(ssim_high=0.6))[1].startswith("too static")


def _blob_video(centres, size=32, radius=5.0):
    """(T, H, W, 3) colour and (T, H, W, 1) alpha of a shaded disc at the given (x, y) centres."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    rgb, alpha = [], []
    for cx, cy in centres:
        d = np.hypot(xs - cx, ys - cy)
        a = np.clip(radius + 0.5 - d, 0, 1)[..., None]
        shade = np.stack(
            [0.2 + 0.6 * (xs - cx + radius) / (2 * radius), np.full_like(xs, 0.3), 0.8 - 0.02 * (ys - cy)], -1
        )
        rgb.append(np.clip(shade, 0, 1))
        alpha.append(a)
    return np.stack(rgb), np.stack(alpha)


def test_synthetic_assets_static_moving_and_leaving():
    T = 8
    static_centres = [(16, 16)] * T
    still_front = _blob_video(static_centres)
    orbit = _blob_video([(16 + 2 * np.sin(i), 16) for i in range(T)])
    # A static asset: identical front frames -> too static.
    fig = curation_figures(*still_front, *orbit, *orbit)
    assert fig["ssim_t0_quarter"] == pytest.approx(1.0) and fig["motion_magnitude"] == 0.0
    assert decide(fig)[1].startswith("too static")
    # A moving asset inside the frame: kept, with motion between V and V-bar.
    moving_front = _blob_video([(14 + 0.75 * i, 16) for i in range(T)])
    moving_orbit = _blob_video([(14 + 0.75 * i, 16) for i in range(T)])
    fig = curation_figures(*moving_front, *moving_orbit, *_blob_video(static_centres))
    assert decide(fig) == ("keep", "passes every filter"), fig
    assert fig["motion_magnitude"] > 0
    # An asset that leaves the frame: rejected.
    leaving = _blob_video([(16 + 3 * i, 16) for i in range(T)])
    fig = curation_figures(*moving_front, *leaving, *_blob_video(static_centres))
    assert fig["border_alpha"] == 1.0 and decide(fig)[1].startswith("leaves the frame")


# -- end to end with Blender ------------------------------------------------------------------
from gen4d.data.blender import RenderConfig, bpy_available  # noqa: E402

needs_bpy = pytest.mark.skipif(
    not bpy_available(), reason="bpy is not installed (pip install 'gen4d[render]', Python 3.11)"
)


@needs_bpy
def test_curate_procedural_assets_end_to_end(tmp_path):
    from gen4d.data.curation import curate_assets

    corrupt = tmp_path / "corrupt.glb"
    corrupt.write_bytes(b"glTF" + b"\x00" * 64)
    assets = ["procedural:5:motion=still", "procedural:5:motion=leave,magnitude=1", "procedural:5:cycles=1", corrupt]
    # Normalised at the first time (as a script that normalises once does), so "leave" leaves.
    config = RenderConfig(
        sets=("orbit", "static_orbit", "front"), size=48, samples=4, num_frames=8, denoise=False, normalise_over="first"
    )
    out = tmp_path / "curated.jsonl"
    results = curate_assets(assets, out, config, workers=2, progress=False)
    by_name = {k.split("/")[-1]: v for k, v in results.items()}
    assert by_name["procedural:5:motion=still"]["reason"].startswith("too static")
    assert by_name["procedural:5:motion=leave,magnitude=1"]["reason"].startswith("leaves the frame")
    assert by_name["procedural:5:cycles=1"]["decision"] == "keep"
    assert by_name["corrupt.glb"]["decision"] == "error" and "corrupt.glb" in by_name["corrupt.glb"]["reason"]
    header, *lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert header == RESULTS_HEADER
    assert len(lines) == 4 and all({"asset", "decision", "reason", "figures", "settings"} <= set(r) for r in lines)
    # Resumable: a rerun (after an interrupted, half-written last line) renders nothing new.
    out.write_text(out.read_text() + '{"asset": "half-writ')
    again = curate_assets(assets, out, config, workers=2, progress=False)
    assert len(out.read_text().splitlines()) == 5 and again.keys() == results.keys()
    assert read_results(out).keys() == results.keys()


@needs_bpy
def test_curate_command_records_import_errors_and_goes_on(tmp_path, capsys):
    from gen4d.cli import main

    assets = tmp_path / "assets"
    (assets / "sub").mkdir(parents=True)
    (assets / "sub" / "broken.glb").write_bytes(b"not a gltf")
    (assets / "bad.fbx").write_bytes(b"\x00garbage" * 20)
    (assets / "notes.txt").write_text("ignored")
    out = tmp_path / "out.jsonl"
    args = [
        "curate",
        str(assets),
        "--out",
        str(out),
        "--size",
        "32",
        "--samples",
        "2",
        "--frames",
        "4",
        "--no-progress",
        "--engine",
        "threads",
    ]
    assert main(args) == 1  # the batch ran; no asset could be judged
    header, *records = [json.loads(line) for line in out.read_text().splitlines()]
    assert header == RESULTS_HEADER
    assert sorted(r["asset"].split("/")[-1] for r in records) == ["bad.fbx", "broken.glb"]
    assert all(r["decision"] == "error" and r["reason"] for r in records)
    assert "2 assets (error 2)" in capsys.readouterr().out
    assert main(args) == 1 and len(out.read_text().splitlines()) == 3


def test_curate_refuses_an_unrelated_existing_file(tmp_path, capsys):
    from gen4d.cli import main

    notes = tmp_path / "notes.jsonl"
    notes.write_text('my notes\n{"not": "curation"}\n')
    before = notes.read_bytes()
    with pytest.raises(ValueError, match=r"notes\.jsonl: exists and is not a gen4d curation results file"):
        curate_assets([], notes, progress=False)
    (tmp_path / "assets").mkdir()
    assert main(["curate", str(tmp_path / "assets"), "--out", str(notes), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(notes) in err[0] and "choose another --out" in err[0], err
    assert notes.read_bytes() == before  # untouched
    with pytest.raises(ValueError, match="is a folder"):
        check_results_file(tmp_path / "assets")


def test_curate_resumes_its_own_results_files(tmp_path):
    record = {"asset": "a.glb", "id": "a", "decision": "keep", "reason": "", "figures": {}}
    new = tmp_path / "new.jsonl"
    curate_assets([], new, progress=False)
    assert [json.loads(line) for line in new.read_text().splitlines()] == [RESULTS_HEADER]
    new.write_text(new.read_text() + json.dumps(record) + "\n" + '{"asset": "half')
    assert curate_assets([], new, progress=False) == {"a.glb": record}
    # A file from gen4d before the header (records only) is resumed too, and gains the header.
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text(json.dumps(record) + "\n")
    assert curate_assets([], legacy, progress=False) == {"a.glb": record}
    assert json.loads(legacy.read_text().splitlines()[0]) == RESULTS_HEADER


def test_curate_command_normalises_by_the_first_time_by_default(tmp_path, monkeypatch):
    """As Diffusion4D's script: the asset is normalised once, at its first time, so one that slides
    out of the unit cube leaves the frame (normalising over the whole path would shrink it into view)."""
    from gen4d import cli
    from gen4d.data import curation

    seen = {}

    def fake_curate_assets(assets_dir, out, render_config, config, **kwargs):
        seen["render"] = render_config
        return {}

    monkeypatch.setattr(curation, "curate_assets", fake_curate_assets)
    (tmp_path / "assets").mkdir()
    assert cli.main(["curate", str(tmp_path / "assets"), "--out", str(tmp_path / "a.jsonl")]) == 0
    assert seen["render"].normalise_over == "first"
    assert (
        cli.main(
            ["curate", str(tmp_path / "assets"), "--out", str(tmp_path / "b.jsonl"), "--normalise-over", "sampled"]
        )
        == 0
    )
    assert seen["render"].normalise_over == "sampled"


@needs_bpy
def test_curate_rejects_a_sliding_asset_with_the_default_normalisation(tmp_path):
    """Diffusion4D's curation default: normalised at the first time, an asset that slides away
    leaves the frame and is rejected; normalised over its whole path it would stay in view."""
    from gen4d.cli import main

    listing = tmp_path / "assets.txt"
    listing.write_text("procedural:5:motion=leave,magnitude=1\n")
    args = ["curate", "--assets", str(listing), "--engine", "threads", "--no-progress"]
    args += ["--size", "48", "--samples", "2", "--frames", "6", "--drop-renders"]
    assert main([*args, "--out", str(tmp_path / "default.jsonl")]) == 0
    (record,) = read_results(tmp_path / "default.jsonl").values()
    assert record["decision"] == "reject" and record["reason"].startswith("leaves the frame"), record
    assert record["settings"]["render"]["normalise_over"] == "first"
    assert main([*args, "--out", str(tmp_path / "sampled.jsonl"), "--normalise-over", "sampled"]) == 0
    (record,) = read_results(tmp_path / "sampled.jsonl").values()
    assert record["figures"]["border_alpha"] <= 0.1 and not record["reason"].startswith("leaves the frame"), record
