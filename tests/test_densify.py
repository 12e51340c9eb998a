"""Densification: lockstep topology ops (parameters, Adam moments, field state), the strategy's
grow / prune decisions, fixed and percentile thresholds."""

import math

import pytest
import torch

from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, DensifyStrategy, duplicate, remove, reset_opacity, split
from gen4d.gaussians import from_points
from gen4d.gaussians.dynamic import GAUSSIAN_FIELDS, DynamicGaussians
from gen4d.recon.optim import LearningRates, build_optimizer
from gen4d.render import RenderOutput

CP = DeformConfig(field=ControlPointConfig(num_points=4, width=8, depth=1))
HEX = DeformConfig(field=HexPlaneConfig(features=2, resolution=(4, 4, 4, 3), multires=(1,), width=8))


def make_model(count=6, deform=HEX, scale=0.01):
    points = torch.linspace(-0.5, 0.5, count)[:, None] * torch.tensor([1.0, 0.5, 0.2])
    colors = torch.rand(count, 3, generator=torch.Generator().manual_seed(0))
    model = DynamicGaussians(from_points(points, colors, scale=scale, opacity=0.5), deform)
    model.enable_deformation()
    return model


def step_once(model, optimizer):
    """One Adam step so every parameter has non-zero moments."""
    loss = sum(p.square().sum() for p in model.params.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def moments(optimizer, param):
    return optimizer.state[param]["exp_avg"], optimizer.state[param]["exp_avg_sq"]


def test_duplicate_split_remove_keep_parameters_moments_and_field_state_in_lockstep():
    model = make_model(deform=CP)
    optimizer = build_optimizer(model, LearningRates())
    step_once(model, optimizer)
    before = {k: v.detach().clone() for k, v in model.params.items()}
    avg_before = moments(optimizer, model.params["sh"])[0].clone()
    knn_before = model.per_gaussian_state()["knn_index"].clone()

    mask = torch.tensor([True, False, False, True, False, False])
    assert duplicate(model, optimizer, mask) == 2
    assert model.num_gaussians == 8
    for name in GAUSSIAN_FIELDS:
        p = model.params[name]
        assert p.shape[0] == 8
        assert torch.equal(p.data[:6], before[name]) and torch.equal(p.data[6:], before[name][mask])
        exp_avg, exp_avg_sq = moments(optimizer, p)  # the optimiser now holds the new tensors
        assert exp_avg.shape[0] == 8 and bool((exp_avg[6:] == 0).all()) and bool((exp_avg_sq[6:] == 0).all())
    assert torch.equal(moments(optimizer, model.params["sh"])[0][:6], avg_before)
    knn = model.per_gaussian_state()["knn_index"]
    assert torch.equal(knn, torch.cat([knn_before, knn_before[mask]]))

    # split Gaussian 1 into 2 children: 8 - 1 + 2 = 9
    smask = torch.zeros(8, dtype=torch.bool)
    smask[1] = True
    parent_means, parent_scales = model.params["means"].data[1].clone(), model.params["log_scales"].data[1].clone()
    assert split(model, optimizer, smask, children=2, scale_divisor=1.6) == 1
    assert model.num_gaussians == 9
    children = model.params["log_scales"].data[-2:]
    assert torch.allclose(children, (parent_scales - math.log(1.6)).expand(2, 3))
    offsets = (model.params["means"].data[-2:] - parent_means).norm(dim=-1)
    assert bool((offsets > 0).all()) and bool((offsets < 0.1).all())  # sampled within the parent (scale 0.01)
    assert model.per_gaussian_state()["knn_index"].shape[0] == 9

    rmask = torch.zeros(9, dtype=torch.bool)
    rmask[:3] = True
    kept_means = model.params["means"].data[3:].clone()
    assert remove(model, optimizer, rmask) == 3
    assert torch.equal(model.params["means"].data, kept_means)
    assert all(moments(optimizer, p)[0].shape[0] == 6 for p in model.params.values())
    assert model.per_gaussian_state()["knn_index"].shape[0] == 6
    # The optimiser still steps and the field still deforms the resized set.
    step_once(model, optimizer)
    assert model.at(torch.tensor([0.3, 0.7])).means.shape == (2, 6, 3)
    # every optimiser param is a live model param (no stale tensors left behind)
    live = {id(p) for p in model.parameters()}
    assert all(id(p) in live for g in optimizer.param_groups for p in g["params"])


def test_reset_opacity_clamps_and_zeroes_moments():
    model = make_model()
    optimizer = build_optimizer(model, LearningRates())
    step_once(model, optimizer)
    reset_opacity(model, optimizer, 0.01)
    assert bool((torch.sigmoid(model.params["opacity_logits"].data) <= 0.01 + 1e-6).all())
    assert bool((moments(optimizer, model.params["opacity_logits"])[0] == 0).all())


def fake_output(grads: torch.Tensor, visible: torch.Tensor) -> RenderOutput:
    """A RenderOutput whose means2d carries the given (C, N, 2) gradient."""
    means2d = torch.zeros_like(grads, requires_grad=True)
    (means2d * grads).sum().backward()
    C, N = visible.shape
    return RenderOutput(
        rgb=torch.zeros(C, 4, 4, 3), alpha=torch.zeros(C, 4, 4, 1), depth=torch.zeros(C, 4, 4, 1),
        means2d=means2d, radii=torch.ones(C, N, 2, dtype=torch.int32), visible=visible, backend="torch",
    )  # fmt: skip


def test_strategy_clones_small_splits_large_and_prunes_transparent():
    model = make_model(count=6, scale=0.01)
    with torch.no_grad():
        model.params["log_scales"].data[1] = math.log(0.5)  # large: split
        model.params["opacity_logits"].data[5] = -10.0  # transparent: pruned
    optimizer = build_optimizer(model, LearningRates())
    config = DensifyConfig(start=1, every=1, stop=100, grad_threshold=1e-3, percent_dense=0.1, reset_every=0)
    strategy = DensifyStrategy(config, scene_extent=1.0)
    state = strategy.initial_state(model)
    grads = torch.zeros(2, 6, 2)
    grads[:, 0] = 1.0  # high gradient, small -> clone
    grads[:, 1] = 1.0  # high gradient, large -> split
    visible = torch.ones(2, 6, dtype=torch.bool)
    stats = strategy.step_post_backward(model, optimizer, state, 1, fake_output(grads, visible), 8, 8)
    assert stats == {"cloned": 1, "split": 1, "pruned": 1, "total": 6 + 1 + 1 - 1}
    assert model.num_gaussians == 7
    assert bool((state["grad2d"] == 0).all()) and state["grad2d"].shape[0] == 7  # statistics restart


def test_strategy_statistics_normalisation_and_visibility():
    model = make_model(count=3)
    strategy = DensifyStrategy(DensifyConfig(start=0, every=1000, stop=100), scene_extent=1.0)
    state = strategy.initial_state(model)
    grads = torch.zeros(2, 3, 2)
    grads[:, :, 0] = 0.5
    visible = torch.tensor([[True, True, False], [True, False, False]])
    strategy.accumulate(state, fake_output(grads, visible), width=8, height=8)
    # NDC scaling: x grad * W/2 * C = 0.5 * 4 * 2 = 4 per visible camera
    assert torch.allclose(state["grad2d"], torch.tensor([8.0, 4.0, 0.0]))
    assert torch.allclose(state["count"], torch.tensor([2.0, 1.0, 0.0]))


def test_percentile_threshold_grows_the_top_fraction():
    strategy = DensifyStrategy(DensifyConfig(threshold_mode="percentile", percentile=10.0), scene_extent=1.0)
    grads = torch.cat([torch.zeros(50), torch.arange(1, 101, dtype=torch.float32)])
    threshold = strategy.threshold(grads)
    grown = int((grads > threshold).sum())
    assert grown == 10  # the top 10 % of the 100 non-zero values; zeros do not count
    fixed = DensifyStrategy(DensifyConfig(grad_threshold=50.0), scene_extent=1.0)
    assert int((grads > fixed.threshold(grads)).sum()) == 50


def test_max_gaussians_caps_growth_to_largest_gradients():
    model = make_model(count=6)
    optimizer = build_optimizer(model, LearningRates())
    config = DensifyConfig(
        start=1, every=1, stop=100, grad_threshold=1e-3, percent_dense=1.0, max_gaussians=8, prune_opacity=0.0
    )
    strategy = DensifyStrategy(config, scene_extent=1.0)
    state = strategy.initial_state(model)
    grads = torch.arange(6, dtype=torch.float32)[None, :, None].expand(1, 6, 2).clone()
    stats = strategy.step_post_backward(
        model, optimizer, state, 1, fake_output(grads, torch.ones(1, 6, dtype=torch.bool)), 8, 8
    )
    assert stats["cloned"] == 2 and model.num_gaussians == 8
    means = model.params["means"].data
    assert torch.equal(means[6:], means[[4, 5]])  # the two largest gradients were cloned


def test_inactive_outside_schedule_and_config_errors():
    model = make_model()
    strategy = DensifyStrategy(DensifyConfig(start=10, stop=20, every=5), scene_extent=1.0)
    state = strategy.initial_state(model)
    out = fake_output(torch.ones(1, 6, 2), torch.ones(1, 6, dtype=torch.bool))
    assert strategy.step_post_backward(model, None, state, 25, out, 8, 8) == {}
    assert float(state["grad2d"].sum()) == 0
    with pytest.raises(ValueError, match="every"):
        DensifyStrategy(DensifyConfig(every=0))
    with pytest.raises(ValueError, match="percentile"):
        DensifyStrategy(DensifyConfig(percentile=0.0))


def test_prune_screen_size_removes_only_gaussians_that_were_too_large_on_screen():
    """Radii are tracked as the largest seen fraction of the image side; refinement prunes those above
    prune_screen_size (and keeps those below, including a clone of a small parent)."""
    model = make_model(count=4)
    means = model.params["means"].data.clone()
    optimizer = build_optimizer(model, LearningRates())
    config = DensifyConfig(
        start=2, every=2, stop=100, grad_threshold=1e-3, percent_dense=1.0, prune_opacity=0.0, prune_screen_size=0.5
    )
    strategy = DensifyStrategy(config, scene_extent=1.0)
    state = strategy.initial_state(model)
    grads = torch.zeros(1, 4, 2)
    grads[0, 0] = 1.0  # Gaussian 0 (small on screen) is cloned at refinement
    out = fake_output(grads, torch.ones(1, 4, dtype=torch.bool))
    out.radii = torch.tensor([[[1, 1], [2, 1], [6, 5], [3, 4]]], dtype=torch.int32)  # px on an 8 px image
    strategy.accumulate(state, out, 8, 8)
    assert torch.allclose(state["radii"], torch.tensor([1, 2, 6, 4]) / 8.0)
    quiet = fake_output(torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.bool))
    quiet.radii = torch.ones(1, 4, 2, dtype=torch.int32)  # smaller later: the maximum is kept
    stats = strategy.step_post_backward(model, optimizer, state, 2, quiet, 8, 8)
    assert stats["cloned"] == 1 and stats["pruned"] == 1 and model.num_gaussians == 4
    assert torch.equal(model.params["means"].data, means[[0, 1, 3, 0]])  # 6 / 8 > 0.5 went; 4 / 8 stays


def test_dynamic_gaussians_satisfy_the_densify_model_interface():
    from gen4d.densify.ops import DensifiableModel

    assert isinstance(make_model(), DensifiableModel)
    assert not isinstance(object(), DensifiableModel)
