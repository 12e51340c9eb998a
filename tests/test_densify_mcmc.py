"""3DGS-MCMC strategy: the relocation formula, relocation / growth in lockstep, noise gating."""

import math

import pytest
import torch

from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, DensifyStrategy, MCMCConfig, MCMCStrategy, build_strategy, relocation
from gen4d.gaussians import from_points
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon.optim import LearningRates, build_optimizer

CP = DeformConfig(field=ControlPointConfig(num_points=4, width=8, depth=1))


def brute_force_denominator(o_new: float, n: int) -> float:
    return sum(
        math.comb(i - 1, k) * (-1) ** k * o_new ** (k + 1) / math.sqrt(k + 1) for i in range(1, n + 1) for k in range(i)
    )


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_relocation_formula(n):
    opacity = torch.tensor([0.3, 0.9, 0.05], dtype=torch.float64)
    scales = torch.tensor([[0.1, 0.2, 0.3]] * 3, dtype=torch.float64)
    new_opacity, new_scales = relocation(opacity, scales, torch.full((3,), n))
    # n copies of the new opacity composite to the old one
    assert torch.allclose(1 - (1 - new_opacity) ** n, opacity)
    for j in range(3):
        expected = float(opacity[j]) / brute_force_denominator(float(new_opacity[j]), n)
        assert torch.allclose(new_scales[j], scales[j] * expected)
    if n == 1:
        assert torch.allclose(new_opacity, opacity) and torch.allclose(new_scales, scales)


def make_model(opacities):
    count = len(opacities)
    points = torch.linspace(-0.4, 0.4, count)[:, None] * torch.tensor([1.0, 0.7, 0.3])
    model = DynamicGaussians(from_points(points, scale=0.02, opacity=0.5), CP)
    model.params["opacity_logits"].data = torch.logit(torch.tensor(opacities))
    model.enable_deformation()
    return model


def step_once(model, optimizer):
    sum(p.square().sum() for p in model.params.values()).backward()
    optimizer.step()
    optimizer.zero_grad()


def test_relocate_moves_dead_onto_live_in_lockstep():
    model = make_model([0.9, 0.001, 0.6, 0.002, 0.8, 0.5])
    optimizer = build_optimizer(model, LearningRates())
    step_once(model, optimizer)
    strategy = MCMCStrategy(MCMCConfig(min_opacity=0.005, noise_lr=0.0))
    gen = torch.Generator().manual_seed(0)
    means_before = model.params["means"].data.clone()
    assert strategy.relocate(model, optimizer, gen) == 2
    assert model.num_gaussians == 6
    opacity = torch.sigmoid(model.params["opacity_logits"].data)
    assert bool((opacity > 0.005).all())
    means = model.params["means"].data
    for dead in (1, 3):  # now sitting exactly on a live Gaussian, which shares its opacity
        source = int(torch.nonzero((means_before - means[dead]).abs().sum(-1) == 0)[0])
        assert source not in (1, 3)
        assert torch.allclose(means[source], means[dead]) and torch.allclose(opacity[source], opacity[dead])
        assert float(opacity[dead]) < [0.9, 0.0, 0.6, 0.0, 0.8, 0.5][source]  # shared: lower than before
        knn = model.per_gaussian_state()["knn_index"]
        assert torch.equal(knn[dead], knn[source])
        assert float(optimizer.state[model.params["means"]]["exp_avg"][dead].abs().sum()) == 0
    step_once(model, optimizer)  # the optimiser still works on the new tensors


def test_add_grows_to_cap_and_noise_spares_opaque():
    model = make_model([0.9, 0.3, 0.001, 0.002] * 5)
    optimizer = build_optimizer(model, LearningRates())
    strategy = MCMCStrategy(MCMCConfig(cap=22, growth=0.05, start=0, every=1, noise_lr=1e4))
    gen = torch.Generator().manual_seed(1)
    assert strategy.add(model, optimizer, gen) == 1  # ceil(20 * 1.05) = 21
    assert strategy.add(model, optimizer, gen) == 1  # ceil(21 * 1.05) = 23 > cap 22
    assert strategy.add(model, optimizer, gen) == 0 and model.num_gaussians == 22
    opacity = torch.sigmoid(model.params["opacity_logits"].data)
    before = model.params["means"].data.clone()
    strategy.inject_noise(model, optimizer, step=5)
    moved = (model.params["means"].data - before).norm(dim=-1)
    visible, faint = opacity > 0.2, opacity < 0.01
    assert int(faint.sum()) >= 10
    assert float(moved[visible].max()) < 1e-6 * float(moved[faint].mean())
    assert float(moved[faint].min()) > 0
    terms = strategy.loss_terms(model)
    assert set(terms) == {"mcmc_opacity", "mcmc_scale"}


def test_build_strategy():
    assert isinstance(build_strategy(MCMCConfig()), MCMCStrategy)
    assert isinstance(build_strategy(DensifyConfig()), DensifyStrategy)
    with pytest.raises(TypeError, match="DensifyConfig or MCMCConfig"):
        build_strategy("mcmc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cap"):
        MCMCStrategy(MCMCConfig(cap=0))


def test_reconstruct_with_mcmc(tmp_path):
    from dataclasses import replace

    from gen4d.data.synthetic import synthetic_dataset
    from gen4d.recon.construct import ConstructConfig, InitConfig, OutputConfig, StageConfig, reconstruct

    scene = synthetic_dataset(size=24, frames=4, eval_views=2, blobs=2, per_blob=20)
    config = ConstructConfig(
        device="cpu", backend="torch", tile_size=8, init=InitConfig(num_points=50),
        coarse=StageConfig(iterations=6, cameras_per_step=1), fine=StageConfig(iterations=6, cameras_per_step=1, static_orbit=False),
        densify=MCMCConfig(cap=60, start=1, every=2), log_every=3,
        output=OutputConfig(ply=False, video=False, renders=False, lpips=False),
    )  # fmt: skip
    metrics = reconstruct(scene, config, tmp_path / "run", progress=False, echo=None)
    assert metrics["num_gaussians"] == 60
    assert "relocated" in (tmp_path / "run" / "log.txt").read_text()
    # the same run with the default strategy: no relocation, and no growth before its start (step 500)
    small = DeformConfig(field=HexPlaneConfig(features=4, resolution=(8, 8, 8, 4), multires=(1,), width=16))
    quick = replace(config, densify=DensifyConfig(), deform=small, output=replace(config.output, evaluate=False))
    default = reconstruct(scene, quick, tmp_path / "default", progress=False, echo=None)
    assert default["num_gaussians"] == 50
    assert "relocated" not in (tmp_path / "default" / "log.txt").read_text()
