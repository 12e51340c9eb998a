"""Zero123++ sampler on a tiny random model: shapes, determinism, batching plan, loading from a
diffusers-layout folder, the on-disk view cache, and the view cameras."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers", reason="Zero123++ needs diffusers (gen4d[diffusion])")

from gen4d.diffusion.zero123pp import (  # noqa: E402
    MultiViewConfig,
    Zero123Plus,
    composite,
    generate_multiview_cached,
    join_grid,
    split_grid,
    view_cameras,
)

STEPS = 2


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    return Zero123Plus.tiny(seed=0)


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(2))


def test_grid_split_order_and_roundtrip():
    grid = torch.arange(2 * 1 * 6 * 4, dtype=torch.float32).reshape(2, 1, 6, 4)
    views = split_grid(grid)
    assert views.shape == (2, 6, 1, 2, 2)
    # row-major: view 1 is the top-right cell, view 4 the bottom-left
    assert torch.equal(views[0, 1], grid[0, :, 0:2, 2:4])
    assert torch.equal(views[1, 4], grid[1, :, 4:6, 0:2])
    assert torch.equal(join_grid(views), grid)
    with pytest.raises(ValueError, match="not a 3x2 grid"):
        split_grid(torch.zeros(1, 3, 7, 4))


def test_composite_on_grey():
    rgba = torch.zeros(1, 2, 2, 4)
    rgba[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0, 1.0])
    rgb = composite(rgba)
    assert rgb.shape == (1, 3, 2, 2)
    assert torch.allclose(rgb[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(rgb[0, :, 1, 1], torch.full((3,), 127 / 255))


def test_generate_shapes_range_determinism(model, images):
    config = MultiViewConfig(steps=STEPS, anchor_weight=0.5, frames_per_batch=2)
    views = model.generate(images, config)
    assert views.shape == (3, 6, 3, 16, 16)
    assert float(views.min()) >= 0 and float(views.max()) <= 1
    assert torch.equal(views, model.generate(images, config))
    other_seed = model.generate(images, MultiViewConfig(steps=STEPS, anchor_weight=0.5, frames_per_batch=2, seed=7))
    assert not torch.allclose(views, other_seed)
    # a subset of frames equals the same frames of the full run (frame 0 still anchors them)
    subset = model.generate(images, config, frames=[2])
    torch.testing.assert_close(subset[0], views[2], atol=1e-5, rtol=0)


def test_same_seed_for_every_frame(model):
    same = torch.rand(1, 3, 24, 24).expand(3, -1, -1, -1).contiguous()
    views = model.generate(same, MultiViewConfig(steps=STEPS, anchor_weight=0.0, frames_per_batch=2))
    torch.testing.assert_close(views[1], views[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(views[2], views[0], atol=1e-5, rtol=0)


def test_batch_plan(model):
    plan = model.plan(6, range(6), MultiViewConfig(frames_per_batch=3))
    assert plan == [([0, 1, 2], [0, 1, 2]), ([0, 3, 4], [3, 4]), ([0, 5], [5])]
    plan = model.plan(6, [4, 5], MultiViewConfig(frames_per_batch=4))
    assert plan == [([0, 4, 5], [4, 5])]
    plan = model.plan(5, range(5), MultiViewConfig(frames_per_batch=2, anchor_mode="cache"))
    assert plan == [([0], [0]), ([1, 2], [1, 2]), ([3, 4], [3, 4])]
    plan = model.plan(5, range(5), MultiViewConfig(frames_per_batch=2, anchor_weight=0.0))
    assert plan == [([0, 1], [0, 1]), ([2, 3], [2, 3]), ([4], [4])]
    with pytest.raises(ValueError, match="frames_per_batch >= 2"):
        model.plan(3, range(3), MultiViewConfig(frames_per_batch=1))
    with pytest.raises(ValueError, match="outside"):
        model.plan(3, [3], MultiViewConfig())


def test_cache_mode_refuses_oversized_cache(model, images):
    config = MultiViewConfig(steps=STEPS, anchor_mode="cache", max_cache_gb=1e-9)
    with pytest.raises(MemoryError, match="anchor_mode 'batch'"):
        model.generate(images, config)


def test_views_cached_on_disk(model, images, tmp_path):
    config = MultiViewConfig(steps=STEPS, anchor_weight=0.5, frames_per_batch=2)
    calls = []

    def load():
        calls.append(1)
        return model

    first = generate_multiview_cached(load, images, config, tmp_path, progress=False)
    assert first.shape == (3, 6, 3, 16, 16) and len(calls) == 1
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == [f"frame_{i:04d}.png" for i in range(3)]

    def refuse():
        raise AssertionError("the model must not be loaded when every frame is cached")

    again = generate_multiview_cached(refuse, images, config, tmp_path, progress=False)
    assert torch.equal(again, first)
    # speed-only settings do not invalidate the cache
    generate_multiview_cached(
        refuse, images, MultiViewConfig(steps=STEPS, anchor_weight=0.5, frames_per_batch=3), tmp_path, progress=False
    )
    # a lost frame is regenerated alone, and matches (PNG quantisation aside)
    (tmp_path / "frame_0002.png").unlink()
    resumed = generate_multiview_cached(load, images, config, tmp_path, progress=False)
    assert len(calls) == 2
    assert (resumed - first).abs().max() <= 1 / 255 + 1e-6
    # changed settings or inputs invalidate it
    generate_multiview_cached(load, images, MultiViewConfig(steps=STEPS, anchor_weight=0.0), tmp_path, progress=False)
    assert len(calls) == 3
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["key"]["settings"]["anchor_weight"] == 0.0


def _save_tiny_folder(model, folder):
    from transformers import CLIPTokenizer

    model.unet.save_pretrained(folder / "unet")
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.save_pretrained(folder / "text_encoder")
    model.vision_encoder.save_pretrained(folder / "vision_encoder")
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!").save_pretrained(
        folder / "tokenizer"
    )
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerAncestralDiscreteScheduler", **model.scheduler_config})
    )
    for sub, size, mean, std in (
        ("feature_extractor_vae", 16, [0.5] * 3, [0.5] * 3),
        ("feature_extractor_clip", 32, [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]),
    ):
        (folder / sub).mkdir()
        config = {
            "crop_size": {"height": size, "width": size},
            "size": {"shortest_edge": size},
            "image_mean": mean,
            "image_std": std,
        }
        (folder / sub / "preprocessor_config.json").write_text(json.dumps(config))
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "Zero123PlusPipeline", "ramping_coefficients": model.ramping.tolist()})
    )


def test_from_pretrained_local_folder(model, images, tmp_path):
    _save_tiny_folder(model, tmp_path)
    loaded = Zero123Plus.from_pretrained(str(tmp_path), version="v1.1")
    # the tiny builder's prompt ids are what the tokenizer gives for ""
    assert loaded.prompt_ids.tolist() == model.prompt_ids.tolist()
    assert loaded.view_size == 16 and loaded.clip_prep.size == 32
    loaded.clip_prep = model.clip_prep  # the tiny builder uses the exact CLIP statistics
    config = MultiViewConfig(steps=STEPS, anchor_weight=0.5, frames_per_batch=2)
    torch.testing.assert_close(loaded.generate(images, config), model.generate(images, config), atol=1e-5, rtol=0)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        Zero123Plus.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        Zero123Plus.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("version,elevations", [("v1.1", (30, -20)), ("v1.2", (20, -10))])
def test_view_cameras(version, elevations):
    cams = view_cameras(version, [0.0, 0.5], radius=2.0, input_fov_deg=49.1, size=320)
    assert len(cams) == 12 and cams.width == 320
    centers = cams.centers[:6]
    radius = centers.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin(centers[:, 2] / radius))
    azimuth = torch.rad2deg(torch.atan2(centers[:, 0], -centers[:, 1])) % 360
    torch.testing.assert_close(azimuth, torch.tensor([30.0, 90, 150, 210, 270, 330]), atol=1e-3, rtol=0)
    torch.testing.assert_close(elevation, torch.tensor([float(e) for e in elevations * 3]), atol=1e-3, rtol=0)
    assert torch.equal(cams.times, torch.tensor([0.0] * 6 + [0.5] * 6))
    if version == "v1.2":  # object kept at the apparent size of the input view (fov 30)
        expected = 2.0 * math.tan(math.radians(49.1 / 2)) / math.tan(math.radians(15))
        torch.testing.assert_close(radius, torch.full((6,), expected), atol=1e-4, rtol=0)
