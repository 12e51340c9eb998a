"""CUDA graphs of a construction step (gen4d.recon.graphs) give the eager step's losses and updates.

Needs a CUDA GPU (skipped otherwise; run on the device machine). Each captured part is compared with
its eager computation on the same inputs over several replays (with new inputs and parameters changed
in place between them, as an optimiser does): values and gradients must agree to float rounding (the
graphs run the same kernels; only the order in which gradients from several paths are summed can
differ). The rasteriser is left out on purpose: gsplat's backward sums with atomics, so two eager
steps differ in the last bits already.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gen4d.deform import DeformConfig, HexPlaneConfig, RigidityConfig
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon.graphs import StepGraphs
from gen4d.recon.losses import LossWeights, image_losses, weighted_regularizers

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")

DEFORM = DeformConfig(
    field=HexPlaneConfig(features=8, resolution=(8, 8, 8, 6), multires=(1, 2), width=32, deform_scale=False),
    rigidity=RigidityConfig(samples=256),
)
WEIGHTS = LossWeights(rigidity=0.01, isometry=0.01, depth_smoothness=0.01)


def _model(device):
    gaussians = random_in_sphere(2000, 0.5, 0.1, 0, seed=0)
    return DynamicGaussians(gaussians, DEFORM, deform_enabled=True).to(device)


def _deformed(graphs, model, times, use_graphs: bool, seed: int):
    """``(at, weighted regularisers)`` from the graph or eagerly; ``seed`` fixes the rigidity anchors
    so both ways draw the same sample."""
    torch.manual_seed(seed)
    if use_graphs:
        return graphs.deformation(model, times, WEIGHTS)
    at = model.at(times)
    return at, weighted_regularizers(model.regularization(times, at=at), WEIGHTS)


@cuda
def test_graphed_image_losses_match_eager():
    device = torch.device("cuda")
    graphs = StepGraphs(True, device)
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):  # new values each time: the replay must read them
        rand = lambda *shape: torch.rand(*shape, device=device, generator=gen)  # noqa: E731
        rgb, alpha, depth = rand(3, 32, 32, 3), rand(3, 32, 32, 1), rand(3, 32, 32, 1)
        target, mask = rand(3, 32, 32, 3), (rand(3, 32, 32, 1) > 0.3).float()
        results = []
        for use_graphs in (False, True):
            leaves = [x.clone().requires_grad_(True) for x in (rgb, alpha, depth)]
            output = SimpleNamespace(rgb=leaves[0], alpha=leaves[1], depth=leaves[2])
            terms = graphs.image_losses(output, target, mask, WEIGHTS) if use_graphs else None
            terms = image_losses(output, target, mask, WEIGHTS) if terms is None else terms
            sum(terms.values()).backward()
            results.append(({k: v.detach().clone() for k, v in terms.items()}, [x.grad for x in leaves]))
        (eager, eager_grads), (graphed, graphed_grads) = results
        assert sorted(graphed) == sorted(eager) == ["alpha", "depth_smoothness", "dssim", "l1"]
        for name in eager:
            torch.testing.assert_close(graphed[name], eager[name], rtol=1e-6, atol=1e-7, msg=name)
        for a, b in zip(graphed_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert [key[0] for key in graphs._graphs] == ["images"]


@cuda
def test_graphed_deformation_matches_eager():
    device = torch.device("cuda")
    model = _model(device)
    graphs = StepGraphs(True, device)
    gen = torch.Generator(device=device).manual_seed(1)
    for step in range(3):
        times = torch.rand(3, device=device, generator=gen)
        results = []
        for use_graphs in (False, True):
            at, regs = _deformed(graphs, model, times, use_graphs, seed=step)
            cotangent = torch.randn(at.means.shape, device=device, generator=torch.Generator(device).manual_seed(7))
            loss = (at.means * cotangent).sum() + at.quats.square().sum() + at.sh.sum() + sum(regs.values())
            loss.backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
            model.zero_grad(set_to_none=True)
            results.append(
                (
                    {k: v.detach().clone() for k, v in at.as_dict().items()},
                    {k: v.detach() for k, v in regs.items()},
                    grads,
                )
            )
            del at, regs, loss
        (eager_at, eager_regs, eager_grads), (graphed_at, graphed_regs, graphed_grads) = results
        assert (
            sorted(graphed_regs)
            == sorted(eager_regs)
            == ["isometry", "plane_tv", "rigidity", "time_l1", "time_smoothness"]
        )
        for name in eager_at:
            torch.testing.assert_close(graphed_at[name], eager_at[name], rtol=1e-6, atol=1e-7, msg=name)
        for name in eager_regs:
            torch.testing.assert_close(graphed_regs[name], eager_regs[name], rtol=1e-5, atol=1e-9, msg=name)
        assert sorted(graphed_grads) == sorted(eager_grads)
        for name in eager_grads:
            torch.testing.assert_close(graphed_grads[name], eager_grads[name], rtol=1e-4, atol=1e-7, msg=name)
        with torch.no_grad():  # an optimiser step in place: the graph must see the new values
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, device=device, generator=gen))
    assert [key[0] for key in graphs._graphs] == ["deformation"]


@cuda
def test_deformation_captured_again_after_densification():
    """A densifying stage replaces the parameters: the next call captures the new set (its values
    and gradients match eager again) and the capture of the old set is dropped."""
    from gen4d.densify import ops
    from gen4d.recon.optim import LearningRates, build_optimizer

    device = torch.device("cuda")
    model = _model(device)
    optimizer = build_optimizer(model, LearningRates())
    graphs = StepGraphs(True, device)
    times = torch.tensor([0.2, 0.7], device=device)
    graphs.deformation(model, times, WEIGHTS)
    first = next(iter(graphs._graphs))
    grow = torch.arange(model.num_gaussians, device=device) % 4 == 0
    ops.duplicate(model, optimizer, grow)
    assert model.num_gaussians == 2500
    results = []
    for use_graphs in (False, True):
        at, regs = _deformed(graphs, model, times, use_graphs, seed=3)
        (at.means.square().sum() + sum(regs.values())).backward()
        results.append((at.means.detach().clone(), model.params["means"].grad.clone()))
        model.zero_grad(set_to_none=True)
        del at, regs
    (eager_means, eager_grad), (graphed_means, graphed_grad) = results
    assert graphed_means.shape == (2, 2500, 3)
    torch.testing.assert_close(graphed_means, eager_means, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(graphed_grad, eager_grad, rtol=1e-4, atol=1e-7)
    assert len(graphs._graphs) == 1 and first not in graphs._graphs


@cuda
def test_motion_bases_capture_matches_eager():
    """The motion-bases field has no hidden state and is marked capturable: a captured step equals
    the eager one (values, regularisers and gradients), also on a replay."""
    from gen4d.deform import MotionBasesConfig

    device = torch.device("cuda")
    config = DeformConfig(
        field=MotionBasesConfig(num_bases=8, time_steps=6, learn_weights=True), rigidity=DEFORM.rigidity
    )
    model = DynamicGaussians(random_in_sphere(2000, 0.5, 0.1, 0, seed=0), config, deform_enabled=False).to(device)
    model.enable_deformation(prepare=True)
    with torch.no_grad():
        model.field.translations.normal_(0, 0.05)
        model.field.rotations.normal_(0, 0.05)
    assert model.field.capturable
    graphs = StepGraphs(True, device)
    times = torch.tensor([0.1, 0.55, 0.9], device=device)
    results = []
    for use_graphs in (False, True, True):  # the capture, then a replay of it
        at, regs = _deformed(graphs, model, times, use_graphs, seed=5)
        (at.means.square().sum() + at.quats.sum() + sum(regs.values())).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        results.append((at.means.detach().clone(), {k: v.detach().clone() for k, v in regs.items()}, grads))
        del at, regs
    (means, regs, grads), graphed = results[0], results[1:]
    for g_means, g_regs, g_grads in graphed:
        torch.testing.assert_close(g_means, means, rtol=1e-6, atol=1e-7)
        assert sorted(g_regs) == sorted(regs)
        for name in regs:
            torch.testing.assert_close(g_regs[name], regs[name], rtol=1e-5, atol=1e-9, msg=name)
        assert sorted(g_grads) == sorted(grads)
        for name in grads:
            torch.testing.assert_close(g_grads[name], grads[name], rtol=1e-4, atol=1e-7, msg=name)


def test_graphs_off_on_cpu_when_disabled_and_for_lpips():
    assert not StepGraphs(True, torch.device("cpu")).enabled
    assert not StepGraphs(False, torch.device("cuda")).enabled
    # An LPIPS term is never captured: the step computes the image terms eagerly (None), with no CUDA work.
    graphs = StepGraphs(True, torch.device("cuda"))
    output = SimpleNamespace(rgb=torch.zeros(1, 4, 4, 3), alpha=torch.zeros(1, 4, 4, 1), depth=torch.zeros(1, 4, 4, 1))
    lpips = LossWeights(lpips=0.1)
    assert graphs.image_losses(output, torch.zeros(1, 4, 4, 3), None, lpips, lpips_model=object()) is None
    assert not graphs._graphs
