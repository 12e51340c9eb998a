"""LPIPS plumbing with random-weight trunks: torchvision key layout, heads from the lpips package,
the formula, shapes, ranges, identical inputs, gradients and the missing-weights error."""

from __future__ import annotations

import functools

import pytest
import torch

from gen4d.metrics import LPIPS, MissingWeightsError, lpips
from gen4d.metrics.perceptual import TRUNKS, AlexNetFeatures, VGG16Features, lpips_head_path

# torchvision's feature-layer parameter shapes (vgg16 / alexnet state dicts, `features.*`).
TV_VGG16 = {
    0: (64, 3, 3, 3), 2: (64, 64, 3, 3), 5: (128, 64, 3, 3), 7: (128, 128, 3, 3), 10: (256, 128, 3, 3),
    12: (256, 256, 3, 3), 14: (256, 256, 3, 3), 17: (512, 256, 3, 3), 19: (512, 512, 3, 3), 21: (512, 512, 3, 3),
    24: (512, 512, 3, 3), 26: (512, 512, 3, 3), 28: (512, 512, 3, 3),
}  # fmt: skip
TV_ALEX = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}


@pytest.mark.parametrize("cls,layout", [(VGG16Features, TV_VGG16), (AlexNetFeatures, TV_ALEX)])
def test_trunk_matches_torchvision_layout(cls, layout):
    state = cls().state_dict()
    expected = {f"features.{i}.weight": s for i, s in layout.items()} | {
        f"features.{i}.bias": (s[0],) for i, s in layout.items()
    }
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


def _torchvision_style_file(tmp_path, net):
    """A whole-model state dict as torchvision saves it (features + classifier), random values."""
    trunk = VGG16Features() if net == "vgg" else AlexNetFeatures()
    state = {k: torch.randn_like(v) for k, v in trunk.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(4, 4)
    path = tmp_path / TRUNKS[net].file
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_from_pretrained_loads_by_key(tmp_path, net):
    path, state = _torchvision_style_file(tmp_path, net)
    model = LPIPS.from_pretrained(net, trunk_weights=tmp_path)  # a folder holding the file
    for key, value in model.trunk.state_dict().items():
        assert torch.equal(value, state[key])
    heads = torch.load(lpips_head_path(net), map_location="cpu", weights_only=True)
    assert torch.equal(model.heads.lin2.model[1].weight, heads["lin2.model.1.weight"])
    assert (heads["lin0.model.1.weight"] >= 0).all()  # the real calibrated heads are non-negative


def test_missing_trunk_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4D_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingWeightsError, match=r"vgg16-397923af\.pth.*download.pytorch.org.*GEN4D_WEIGHTS_DIR"):
        LPIPS.from_pretrained("vgg")
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        lpips(torch.rand(1, 32, 32, 3), torch.rand(1, 32, 32, 3), net="alex")
    with pytest.raises(MissingWeightsError, match="no weight file"):
        LPIPS.from_pretrained("vgg", trunk_weights=tmp_path / "nowhere.pth")


@functools.cache  # building VGG16 is the slow part; the model is frozen
def _random_model(net, seed=0):
    torch.manual_seed(seed)
    model = LPIPS(net)
    heads = torch.load(lpips_head_path(net), map_location="cpu", weights_only=True)
    model.load_heads(lpips_head_path(net))
    assert torch.equal(model.heads.lin0.model[1].weight, heads["lin0.model.1.weight"])
    return model


@pytest.mark.parametrize("net,size", [("vgg", 32), ("alex", 64)])
def test_lpips_shapes_ranges_identity(net, size):
    model = _random_model(net)
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(3, size, size, 3, generator=gen)
    b = torch.rand(3, size, size, 3, generator=gen)
    d = lpips(a, b, model=model, reduction="none")
    assert d.shape == (3,)
    assert (d > 0).all() and torch.isfinite(d).all()
    assert lpips(a, a, model=model, reduction="none").abs().max() < 1e-6
    # nearer images are nearer
    close = (a + 0.02 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    assert (lpips(a, close, model=model, reduction="none") < d).all()
    # symmetric
    assert torch.allclose(model(a, b), model(b, a), atol=1e-6)


def test_lpips_formula_on_one_image():
    """The distance is sum_l mean_hw sum_c w_lc (f0 - f1)^2 of unit-normalised taps of the
    ScalingLayer-normalised [-1, 1] input (the lpips package's v0.1 forward)."""
    model = _random_model("vgg", seed=3)
    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(1, 24, 24, 3, generator=gen), torch.rand(1, 24, 24, 3, generator=gen)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    expected = 0.0
    layers = model.trunk.features
    xa = (a.permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
    xb = (b.permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
    heads = [model.heads.lin0, model.heads.lin1, model.heads.lin2, model.heads.lin3, model.heads.lin4]
    tap = 0
    for index in range(30):
        xa, xb = layers[index](xa), layers[index](xb)
        if index in (3, 8, 15, 22, 29):
            fa = xa / (xa.norm(dim=1, keepdim=True) + 1e-10)
            fb = xb / (xb.norm(dim=1, keepdim=True) + 1e-10)
            w = heads[tap].model[1].weight.view(1, -1, 1, 1)
            expected += ((fa - fb) ** 2 * w).sum(dim=1).mean()
            tap += 1
    assert model(a, b).item() == pytest.approx(float(expected), rel=1e-5)


def test_lpips_gradients_reach_pred_only():
    model = _random_model("alex")
    pred = torch.rand(2, 32, 32, 3, requires_grad=True)
    target = torch.rand(2, 32, 32, 3)
    loss = lpips(pred, target, model=model)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training  # dropout in the heads never switches on


def test_lpips_errors():
    model = _random_model("alex")
    with pytest.raises(ValueError, match="at least 31x31"):
        model(torch.rand(1, 24, 24, 3), torch.rand(1, 24, 24, 3))
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(1, 32, 32, 3), torch.rand(1, 40, 32, 3))
    with pytest.raises(ValueError, match="unknown net"):
        LPIPS("squeeze")
