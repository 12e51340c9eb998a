"""CLIP similarity plumbing with a tiny random CLIPModel saved to a folder (the real loading code)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="CLIP metrics need transformers (gen4d[diffusion])")

from gen4d.metrics import MissingWeightsError  # noqa: E402
from gen4d.metrics.clip import CLIPScorer, clip_reference_similarity, clip_similarity  # noqa: E402


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    torch.manual_seed(0)
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")
    )
    config = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, vocab_size=len(vocab),
            max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16,
    )  # fmt: skip
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}, "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]})
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def scorer(clip_dir):
    return CLIPScorer.from_pretrained(clip_dir)


def _images(seed, batch=3, height=40, width=40):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def _model_embeddings(scorer, images, text="a"):
    """(unit image embeddings, unit text embeddings) from CLIPModel's own forward (independent of the scorer's
    embedding code; the pixels come from the scorer's preprocessing, tested against transformers below)."""
    with torch.no_grad():
        tokens = scorer.tokenizer([text], padding=True, return_tensors="pt")
        out = scorer.model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=scorer.preprocess(images),
        )
    return out.image_embeds.float(), out.text_embeds.float()


def test_loads_sizes_and_tokenizer(scorer):
    assert scorer.image_size == 32 and scorer.crop_size == 32
    assert scorer.tokenizer is not None
    assert not any(p.requires_grad for p in scorer.model.parameters())


def test_pil_preprocessing_matches_transformers(scorer):
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4.x: the PIL/numpy processor is the default one
        from transformers import CLIPImageProcessor as Processor
    processor = Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    images = _images(1, batch=2, height=48, width=60)  # non-square: resize short side, centre-crop
    uint8 = [(im.numpy() * 255).round().astype(np.uint8) for im in images]
    ref = processor(images=uint8, return_tensors="pt")["pixel_values"]
    ours = scorer.preprocess(images)
    assert ours.shape == ref.shape == (2, 3, 32, 32)
    assert torch.allclose(ours, ref.to(ours.dtype), atol=1e-5)
    # the differentiable path is close to it
    torch_mode = CLIPScorer(scorer.model, mode="torch", image_size=32, crop_size=32)
    assert (torch_mode.preprocess(images) - ref).abs().mean() < 0.05


def test_image_similarity_shapes_ranges_identity(scorer):
    a, b = _images(2), _images(3)
    same = clip_similarity(scorer, a, a, reduction="none")
    assert same.shape == (3,)
    assert torch.allclose(same, torch.ones(3), atol=1e-5)
    diff = clip_similarity(scorer, a, b, reduction="none")
    embeds_a, _ = _model_embeddings(scorer, a)
    embeds_b, _ = _model_embeddings(scorer, b)
    torch.testing.assert_close(diff, (embeds_a * embeds_b).sum(-1), atol=1e-5, rtol=1e-5)
    assert bool((diff < 1 - 1e-4).all())  # different images are less similar than identical ones
    assert clip_similarity(scorer, a, b).item() == pytest.approx(diff.mean().item(), abs=1e-6)
    emb = scorer.embed_images(a)
    assert emb.shape == (3, 16)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_reference_similarity_image_and_text(scorer):
    images = _images(4)
    ref = images[1]
    sims = clip_reference_similarity(scorer, images, ref, reduction="none")
    assert sims.shape == (3,) and sims[1].item() == pytest.approx(1.0, abs=1e-5)
    embeds, _ = _model_embeddings(scorer, images)
    torch.testing.assert_close(sims, embeds @ embeds[1], atol=1e-5, rtol=1e-5)
    assert bool((sims[[0, 2]] < 1 - 1e-4).all())
    text = clip_reference_similarity(scorer, images, "a cat", reduction="none")
    _, text_embeds = _model_embeddings(scorer, images, "a cat")
    assert text.shape == (3,)
    torch.testing.assert_close(text, embeds @ text_embeds[0], atol=1e-5, rtol=1e-5)
    t = scorer.embed_texts(["a cat", "a dog on a hat"])
    assert t.shape == (2, 16) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        clip_reference_similarity(scorer, images, images)


def test_torch_mode_is_differentiable(scorer):
    torch_mode = CLIPScorer(scorer.model, mode="torch")
    pred = _images(5, batch=2).requires_grad_(True)
    loss = 1 - clip_similarity(torch_mode, pred, _images(6, batch=2))
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_pre_resize(scorer):
    resized = CLIPScorer(scorer.model, pre_resize=64)
    a = _images(7, batch=1, height=40, width=40)
    assert resized.preprocess(a).shape == (1, 3, 32, 32)


def test_errors(tmp_path, scorer):
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        CLIPScorer.from_pretrained(tmp_path / "no_such_clip")
    with pytest.raises(ValueError, match="differ"):
        clip_similarity(scorer, _images(8, height=40), _images(9, height=48))
    with pytest.raises(ValueError, match="mode"):
        CLIPScorer(scorer.model, mode="cv2")
    with pytest.raises(ValueError, match="tokenizer"):
        clip_reference_similarity(CLIPScorer(scorer.model), _images(10), "a robot")
