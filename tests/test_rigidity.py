"""Local-rigidity regulariser: zero for rigid motion, positive for tearing, gradients, wiring."""

import math

import pytest
import torch

from gen4d.deform import DeformConfig, HexPlaneConfig, RigidityConfig, rigidity_terms
from gen4d.deform.control_points import quaternion_multiply
from gen4d.deform.rigidity import nearest_neighbours
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.core import Gaussians


class Motion(torch.nn.Module):
    """A test field: a rotation about z by ``angle * t`` plus a translation, and optionally a
    tear (points with x > 0 shifted along +x by ``tear * t``)."""

    def __init__(self, angle: float = 0.7, tear: float = 0.0, turn_quats: bool = True):
        super().__init__()
        self.angle, self.tear, self.turn_quats = angle, tear, turn_quats
        self.shift = torch.nn.Parameter(torch.tensor([0.1, -0.2, 0.05]))

    def forward(self, canonical: Gaussians, times: torch.Tensor) -> Gaussians:
        a = self.angle * times  # (B,)
        c, s, zero, one = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
        rot = torch.stack(
            [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1), torch.stack([zero, zero, one], -1)], -2
        )
        means = torch.einsum("bij,nj->bni", rot, canonical.means) + self.shift * times[:, None, None]
        means = means + self.tear * times[:, None, None] * (canonical.means[:, :1] > 0).float() * torch.tensor(
            [1.0, 0.0, 0.0]
        )
        q_turn = torch.stack([torch.cos(a / 2), zero, zero, torch.sin(a / 2)], -1)  # (B, 4) about z
        quats = canonical.quats[None].expand(times.shape[0], -1, -1)
        if self.turn_quats:
            quats = quaternion_multiply(q_turn[:, None, :].expand_as(quats), quats)
        batch = times.shape[0]
        expand = lambda x: x.unsqueeze(0).expand((batch,) + tuple(x.shape))  # noqa: E731
        return Gaussians(means=means, log_scales=expand(canonical.log_scales), quats=quats,
                         opacity_logits=expand(canonical.opacity_logits), sh=expand(canonical.sh))  # fmt: skip


CONFIG = RigidityConfig(samples=64, neighbours=6)
TIMES = torch.tensor([0.0, 0.5, 1.0])


def test_rigid_motion_costs_nothing():
    canonical = random_in_sphere(300, seed=3)
    torch.manual_seed(0)
    terms = rigidity_terms(Motion(), canonical, TIMES, CONFIG)
    assert float(terms["rigidity"].detach()) < 1e-9 and float(terms["isometry"].detach()) < 1e-5


def test_tearing_and_unturned_rotations_cost():
    canonical = random_in_sphere(300, seed=3)
    torch.manual_seed(0)
    torn = rigidity_terms(Motion(tear=0.3), canonical, TIMES, CONFIG)
    assert float(torn["rigidity"].detach()) > 1e-2 and float(torn["isometry"].detach()) > 1e-2
    # Positions rotate but the Gaussians' own rotations do not: rigid distances, wrong turn.
    torch.manual_seed(0)
    unturned = rigidity_terms(Motion(turn_quats=False), canonical, TIMES, CONFIG)
    assert float(unturned["rigidity"].detach()) > 1e-3 and float(unturned["isometry"].detach()) < 1e-5


def test_scale_invariant():
    """Relative to the Gaussians' spacing: the same motion of a 10x larger object costs the same."""
    canonical = random_in_sphere(300, seed=3)
    big = canonical.with_(means=canonical.means * 10)
    torch.manual_seed(0)
    small_terms = rigidity_terms(Motion(tear=0.05), canonical, TIMES, CONFIG)
    torch.manual_seed(0)
    big_terms = rigidity_terms(Motion(tear=0.5), big, TIMES, CONFIG)
    for name in ("rigidity", "isometry"):
        assert math.isclose(float(small_terms[name].detach()), float(big_terms[name].detach()), rel_tol=1e-3)


def test_gradients_reach_the_field_and_off_switch():
    canonical = random_in_sphere(200, seed=4)
    field = Motion(tear=0.2)
    terms = rigidity_terms(field, canonical, TIMES, CONFIG)
    (terms["rigidity"] + terms["isometry"]).backward()
    assert field.shift.grad is not None
    assert rigidity_terms(field, canonical, TIMES, RigidityConfig(samples=0)) == {}
    with pytest.raises(ValueError, match="samples: expected an integer >= 0"):
        RigidityConfig(samples=-1)


def test_displacement_term_measures_the_fields_own_motion():
    """``displacement``: mean squared move of the anchors by the field, relative to their spacing; off
    unless asked for."""
    canonical = random_in_sphere(300, seed=3)
    on = RigidityConfig(samples=64, neighbours=6, displacement=True)
    assert "displacement" not in rigidity_terms(Motion(), canonical, TIMES, CONFIG)
    still = Motion(angle=0.0)
    with torch.no_grad():
        still.shift.zero_()
    torch.manual_seed(0)
    assert float(rigidity_terms(still, canonical, TIMES, on)["displacement"].detach()) == 0.0
    fields, values = [Motion(angle=0.0), Motion(angle=0.0)], []
    for factor, field in zip((1.0, 2.0), fields):
        with torch.no_grad():
            field.shift.mul_(factor)
        torch.manual_seed(0)
        values.append(rigidity_terms(field, canonical, TIMES, on)["displacement"])
    # A translation by shift * t: twice the move, four times the cost.
    assert float(values[0].detach()) > 0
    assert math.isclose(float(values[1].detach()), 4 * float(values[0].detach()), rel_tol=1e-5)
    values[0].backward()  # and the gradient pulls the move back
    assert torch.allclose(fields[0].shift.grad.sign(), fields[0].shift.detach().sign())


def test_nearest_neighbours_excludes_self_and_matches_brute_force():
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    index = nearest_neighbours(points, points, 4, chunk=7)
    dist = torch.cdist(points, points) + torch.eye(50) * 1e9
    assert torch.equal(index.sort(-1).values, dist.topk(4, largest=False).indices.sort(-1).values)


def test_model_regularization_includes_rigidity_when_enabled():
    from gen4d.gaussians.dynamic import DynamicGaussians

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    on = DynamicGaussians(random_in_sphere(100, seed=1), DeformConfig(field=hexplane, rigidity=CONFIG))
    off = DynamicGaussians(random_in_sphere(100, seed=1), DeformConfig(field=hexplane))
    assert {"rigidity", "isometry"} <= set(on.regularization(TIMES))
    assert not {"rigidity", "isometry"} & set(off.regularization(TIMES))


def test_model_asks_for_the_displacement_only_on_top_of_a_learned_whole_object_motion():
    from gen4d.gaussians.dynamic import DynamicGaussians

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    rigidity = RigidityConfig(samples=64, neighbours=6, displacement=True)
    model = DynamicGaussians(random_in_sphere(100, seed=1), DeformConfig(field=hexplane, rigidity=rigidity))
    assert "displacement" not in model.regularization(TIMES)  # no whole-object motion: the field alone moves
    model.turn.set(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 30.0]), torch.zeros(3))
    assert "displacement" not in model.regularization(TIMES)  # a searched turn alone
    model.turn.make_learnable()
    assert {"rigidity", "displacement"} <= set(model.regularization(TIMES))


def test_displacement_read_from_the_rendered_set_is_the_fields_own():
    """The step's set carries the turn and the learned rigid motion; the displacement read from it
    (against the canonical anchors moved rigidly) equals the field's own, from a field pass alone."""
    from gen4d.deform import rigidity_anchors
    from gen4d.gaussians.dynamic import DynamicGaussians

    field, canonical = _moving_field()
    rigidity = RigidityConfig(samples=64, neighbours=6, displacement=True)
    model = DynamicGaussians(canonical, DeformConfig(field=field.config, rigidity=rigidity))
    model.field.load_state_dict(field.state_dict())
    model.turn.set(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 40.0]), torch.tensor([0.1, 0.0, 0.0]))
    model.turn.make_learnable()
    with torch.no_grad():
        model.turn.rotation.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
        model.turn.translation.copy_(torch.tensor([[0.2, 0.0, -0.1]]))
    anchors = rigidity_anchors(150, rigidity, torch.device("cpu"))
    own = model.regularization(TIMES, anchors=anchors)["displacement"]  # the field run on the sample alone
    read = model.regularization(TIMES, at=model.at(TIMES), anchors=anchors)["displacement"]
    assert float(own.detach()) > 1e-3
    torch.testing.assert_close(read, own, rtol=1e-4, atol=1e-7)


def _moving_field():
    """A small HexPlane field whose output heads move the Gaussians (non-zero weights), and 150
    canonical Gaussians."""
    from gen4d.deform import build_field

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    torch.manual_seed(0)  # the field's other layers draw from the global generator
    field = build_field(DeformConfig(field=hexplane))
    with torch.no_grad():
        field.head_out_weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    return field, random_in_sphere(150, seed=5)


def _check_own_pass_equals_the_given_set(field, canonical: Gaussians) -> None:
    """The terms computed by ``rigidity_terms`` running the field itself equal those read from the whole
    set deformed by the caller (same anchors), and are not trivially zero."""
    torch.manual_seed(3)
    own = rigidity_terms(field, canonical, TIMES, CONFIG)
    torch.manual_seed(3)
    shared = rigidity_terms(field, canonical, TIMES, CONFIG, moved=field(canonical, TIMES))
    assert float(own["rigidity"].detach()) > 1e-4
    for name in ("rigidity", "isometry"):
        torch.testing.assert_close(shared[name], own[name], rtol=1e-5, atol=1e-9)


def test_sampling_the_rendered_set_equals_running_the_field_again():
    _check_own_pass_equals_the_given_set(*_moving_field())


def test_given_anchors_equal_the_drawn_ones_and_are_used():
    """The anchors drawn outside (as the CUDA-graphed step does) give the same terms as drawing them
    inside under the same seed, and other anchors give other terms."""
    from gen4d.deform import rigidity_anchors

    field, canonical = _moving_field()
    torch.manual_seed(3)
    drawn = rigidity_terms(field, canonical, TIMES, CONFIG)
    torch.manual_seed(3)
    anchors = rigidity_anchors(150, CONFIG, torch.device("cpu"))
    given = rigidity_terms(field, canonical, TIMES, CONFIG, anchors=anchors)
    other = rigidity_terms(field, canonical, TIMES, CONFIG, anchors=anchors.flip(0)[: anchors.numel() // 2])
    assert anchors.shape == (min(CONFIG.samples, 150),)
    for name in ("rigidity", "isometry"):
        torch.testing.assert_close(given[name], drawn[name], rtol=0, atol=0)
        assert float((other[name] - drawn[name]).detach().abs()) > 1e-7


def test_training_step_runs_the_field_once(monkeypatch):
    """The render and the rigidity terms share one deformed set per step."""
    from gen4d.cameras import orbit
    from gen4d.deform.hexplane import HexPlaneField
    from gen4d.recon.losses import LossWeights
    from gen4d.recon.optim import LearningRates, build_optimizer
    from gen4d.recon.step import training_step
    from gen4d.render import RenderOptions

    hexplane = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)
    from gen4d.gaussians.dynamic import DynamicGaussians

    model = DynamicGaussians(random_in_sphere(80, seed=1), DeformConfig(field=hexplane, rigidity=CONFIG))
    optimizer = build_optimizer(model, LearningRates())
    cameras = orbit(0.0, [0.0, 120.0], 2.0, 40.0, 16, 16).with_times(torch.tensor([0.2, 0.7]))
    calls = []
    real_forward = HexPlaneField.forward
    monkeypatch.setattr(HexPlaneField, "forward", lambda self, *a: calls.append(1) or real_forward(self, *a))
    target = torch.ones(2, 16, 16, 3)
    losses, _ = training_step(
        model, optimizer, cameras, target, None, torch.ones(2, 3), LossWeights(rigidity=0.1),
        RenderOptions(backend="torch", tile_size=8),
    )  # fmt: skip
    assert len(calls) == 1 and "rigidity" in losses.terms


def test_a_field_with_learned_per_gaussian_weights_is_sampled_from_the_whole_set():
    """Motion bases with learned blend weights have weights for the prepared set only: the terms are
    read from the whole deformed set (the same as passing it), never from the field run on a sample,
    which the field refuses."""
    from gen4d.deform import MotionBasesConfig, build_field

    canonical = random_in_sphere(150, seed=5)
    torch.manual_seed(0)
    field = build_field(DeformConfig(field=MotionBasesConfig(num_bases=6, time_steps=5, learn_weights=True)))
    field.prepare(canonical)
    with torch.no_grad():  # bases that move apart, and weights no longer the distance ones
        field.translations.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
        field.logits.normal_(0, 3.0, generator=torch.Generator().manual_seed(2))
    _check_own_pass_equals_the_given_set(field, canonical)
    with pytest.raises(ValueError, match="learned blend weights exist for 150 Gaussians, got a set of 10"):
        field(canonical.map(lambda x: x[:10]), TIMES)
