"""FVD: Frechet distance against scipy on Gaussian features, I3D layout and plumbing with
small random networks, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gen4d.metrics import MissingWeightsError
from gen4d.metrics.fvd import (
    InceptionI3d,
    frechet_distance,
    fvd,
    fvd_from_features,
    gaussian_stats,
    i3d_features,
    load_i3d,
)

scipy_linalg = pytest.importorskip("scipy.linalg", reason="scipy is the Frechet-distance reference")


def _scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy_linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("count,dim", [(200, 8), (50, 20), (12, 30)])  # the last: rank-deficient covariances
def test_frechet_distance_matches_scipy(count, dim):
    rng = np.random.default_rng(count)
    mix = rng.normal(size=(dim, dim))
    real = rng.normal(size=(count, dim)) @ mix
    gen = rng.normal(loc=0.3, size=(count + 5, dim)) @ (mix + 0.2 * rng.normal(size=(dim, dim)))
    mu1, s1 = gaussian_stats(real)
    mu2, s2 = gaussian_stats(gen)
    np.testing.assert_allclose(s1, np.cov(real, rowvar=False))
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _scipy_frechet(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-6, abs=1e-6 * np.trace(s1))
    assert fvd_from_features(real, gen) == pytest.approx(ours)
    assert abs(fvd_from_features(real, real)) < 1e-6 * np.trace(s1)


def test_frechet_distance_closed_form():
    # Diagonal covariances: sum (m1 - m2)^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    expected = 5.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_i3d_parameter_layout():
    model = InceptionI3d()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.bn.running_mean"] == (192,)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4b.b0.conv3d.weight"] == (192, 480, 1, 1, 1)
    assert shapes["Mixed_5c.b3b.bn.weight"] == (128,)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1)
    assert shapes["logits.conv3d.bias"] == (400,)
    assert not any("bias" in k for k in shapes if k.endswith("conv3d.bias") and not k.startswith("logits"))
    convs = [k for k in shapes if k.endswith("conv3d.weight")]
    assert len(convs) == 3 + 9 * 6 + 1  # three stem units, nine inception blocks of six units, logits
    assert (
        sum(v.numel() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k)
        == 12_697_264
    )


@pytest.fixture(scope="module")
def tiny_i3d():
    torch.manual_seed(0)
    model = InceptionI3d(width=0.125)
    # Non-trivial BatchNorm statistics so the eval-mode path is exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_checkpoint_loads_by_key(tmp_path, tiny_i3d):
    state = {("module." + k): v.clone() for k, v in tiny_i3d.state_dict().items() if "num_batches" not in k}
    torch.save(state, tmp_path / "rgb_imagenet.pt")
    other = InceptionI3d(width=0.125)
    other.load_checkpoint(tmp_path / "rgb_imagenet.pt")
    for key, value in tiny_i3d.state_dict().items():
        assert torch.equal(other.state_dict()[key], value)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an Inception-v1 I3D"):
        other.load_checkpoint(tmp_path / "bad.pt")


def _clips(seed, count=3, frames=10, size=32):
    return torch.rand(count, frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


def test_i3d_features_and_fvd_plumbing(tiny_i3d):
    real = _clips(1)
    feats = i3d_features(tiny_i3d, real, size=32)
    assert feats.shape == (3, 400) and np.isfinite(feats).all()
    # features do not depend on batching
    np.testing.assert_allclose(i3d_features(tiny_i3d, real, size=32, batch_size=1), feats, rtol=1e-4, atol=1e-5)
    assert abs(fvd(real, real, model=tiny_i3d, size=32)) < 1e-6 * max(1.0, float(np.abs(feats).max()))
    generated = (real * 0.3 + 0.6).clamp(0, 1)  # a visibly different set of clips
    value = fvd(real, generated, model=tiny_i3d, size=32)
    expected = _low_rank_frechet(feats, i3d_features(tiny_i3d, generated, size=32))
    assert value == pytest.approx(expected, rel=1e-5) and value > 0
    # inputs of another size are resized to the network size first (antialiased when shrinking)
    bigger = torch.nn.functional.interpolate(
        real.reshape(30, 32, 32, 3).permute(0, 3, 1, 2), size=(48, 48), mode="bilinear"
    )
    bigger = bigger.permute(0, 2, 3, 1).reshape(3, 10, 48, 48, 3)
    back = torch.nn.functional.interpolate(
        bigger.reshape(30, 48, 48, 3).permute(0, 3, 1, 2), size=(32, 32), mode="bilinear", antialias=True
    )
    back = back.permute(0, 2, 3, 1).reshape(3, 10, 32, 32, 3)
    resized = fvd(real, bigger, model=tiny_i3d, size=32)
    assert resized == pytest.approx(_low_rank_frechet(feats, i3d_features(tiny_i3d, back, size=32)), rel=1e-5)
    # the tiny random I3D barely separates clips (FVD ~1e-10 here), so "identical = 0" is relative to that
    assert abs(fvd(real, real, model=tiny_i3d, size=32)) < 1e-3 * value


def _low_rank_frechet(real: np.ndarray, generated: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr S1 + tr S2 - 2 sum sqrt(eig(S1 S2)), written independently of gen4d (the
    eigenvalues of S1 S2 are real and >= 0 for covariances, so this holds for rank-deficient ones)."""
    mu1, mu2 = real.mean(0), generated.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(generated, rowvar=False)
    root = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root)


def test_fvd_of_shifted_features_is_the_squared_shift():
    """Same covariance, means apart by c in every one of D dimensions: FVD = D c^2 exactly; identical sets: 0."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(40, 6))
    assert fvd_from_features(features, features + 0.5) == pytest.approx(6 * 0.25, rel=1e-6)
    assert fvd_from_features(features, features) == pytest.approx(0.0, abs=1e-9)


def test_fvd_errors(tmp_path, monkeypatch, tiny_i3d):
    with pytest.raises(ValueError, match="same count"):
        fvd(_clips(2, frames=10), _clips(3, frames=12), model=tiny_i3d, size=32)
    with pytest.raises(ValueError, match="at least 9"):
        fvd(_clips(2, frames=4), _clips(3, frames=4), model=tiny_i3d, size=32)
    with pytest.raises(ValueError, match="at least 2"):
        fvd(_clips(2, count=1), _clips(3, count=1), model=tiny_i3d, size=32)
    with pytest.raises(ValueError, match=r"\(N, T, H, W, 3\)"):
        fvd(torch.rand(3, 10, 3, 32, 32), torch.rand(3, 10, 3, 32, 32), model=tiny_i3d)
    with pytest.raises(ValueError, match="expected \\(D,\\)"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    monkeypatch.setenv("GEN4D_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MissingWeightsError, match="rgb_imagenet.pt"):
        load_i3d()
