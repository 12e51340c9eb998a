"""The whole-object turn: the track (rotation, interpolation, saving) and its search, on images
rendered from a known turn (oracle), and 4D construction of a turning object with and without it;
the learned whole-object rigid motion on top of it (``--rigid.enabled``)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gen4d.cameras import Cameras, orbit
from gen4d.data.dataset import MultiViewVideo
from gen4d.data.synthetic import synthetic_scene
from gen4d.deform import DeformConfig
from gen4d.deform.turn import TurnTrack, move_rigidly, turn, unwrap_degrees
from gen4d.gaussians.core import Gaussians, random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon.construct import reconstruct
from gen4d.recon.turn_search import RigidMotionConfig, TurnSearchConfig, search_turn
from gen4d.render import RenderOptions, render

sys.path.insert(0, str(Path(__file__).parent))
from test_recon import SMALL_HEX, tiny_config  # noqa: E402

FOV = math.degrees(2 * math.atan(18.0 / 50.0))


def _point(x, y, z) -> Gaussians:
    g = random_in_sphere(1, seed=0)
    return g.with_(means=torch.tensor([[[x, y, z]]]), quats=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]),
                   log_scales=g.log_scales[None], opacity_logits=g.opacity_logits[None], sh=g.sh[None])  # fmt: skip


def test_turn_is_counter_clockwise_about_the_vertical_axis_through_the_centre():
    g = _point(2.0, 0.0, 0.5)
    out = turn(g, torch.tensor([90.0]), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(out.means, torch.tensor([[[1.0, 1.0, 0.5]]]), atol=1e-6)  # +X -> +Y seen from above
    half = math.radians(45.0)
    assert torch.allclose(out.quats, torch.tensor([[[math.cos(half), 0.0, 0.0, math.sin(half)]]]), atol=1e-6)
    # The quaternion turns the Gaussian's axes the same way as the positions.
    from gen4d.gaussians.core import quaternion_to_matrix

    assert torch.allclose(quaternion_to_matrix(out.quats)[0, 0] @ torch.tensor([1.0, 0.0, 0.0]),
                          torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # fmt: skip


def test_track_interpolates_in_time_and_is_the_identity_when_empty():
    track = TurnTrack()
    g = _point(1.0, 0.0, 0.0).map(lambda x: x.expand(3, *x.shape[1:]))
    times = torch.tensor([0.0, 0.25, 1.0])
    assert track(g, times) is g  # empty: untouched
    track.set(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.0, 90.0, 100.0]), torch.zeros(3))
    assert torch.allclose(track.angles(times), torch.tensor([0.0, 45.0, 100.0]))
    assert torch.allclose(track.angles(torch.tensor([-0.5, 2.0])), torch.tensor([0.0, 100.0]))  # held outside
    moved = track(g, times).means
    assert torch.allclose(moved[1, 0], torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0]), atol=1e-6)
    with pytest.raises(ValueError, match="increase strictly"):
        track.set(torch.tensor([0.0, 0.0]), torch.zeros(2), torch.zeros(3))


def test_unwrap_takes_the_short_way_between_neighbours():
    assert unwrap_degrees(torch.tensor([0.0, 350.0, 340.0, 10.0])).tolist() == [0.0, -10.0, -20.0, 10.0]


def test_model_with_a_turn_saves_and_loads(tmp_path):
    model = DynamicGaussians(random_in_sphere(40, seed=1), DeformConfig(field=SMALL_HEX))
    model.turn.set(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 120.0]), torch.tensor([0.1, 0.0, 0.0]))
    times = torch.tensor([0.0, 0.3, 1.0])
    before = model.at(times)
    assert not torch.allclose(before.means[1], before.means[0])  # the turn moves the set
    loaded = DynamicGaussians.load(model.save(tmp_path / "m"))
    assert loaded.turn.active and torch.equal(loaded.turn.degrees, model.turn.degrees)
    assert torch.allclose(loaded.at(times).means, before.means)
    # A model without a turn writes no turn tensors and loads without one (older checkpoints too).
    plain = DynamicGaussians(random_in_sphere(40, seed=1), DeformConfig(field=SMALL_HEX))
    assert not any(k.startswith("turn.") for k in plain.tensors())
    assert not DynamicGaussians.load(plain.save(tmp_path / "p")).turn.active


def _turning_dataset(degrees_at, frames=8, size=32, static=True, eval_views=0) -> tuple[MultiViewVideo, Gaussians]:
    """Images of a static blob scene turned by ``degrees_at(t)`` about the vertical axis through the origin."""
    return _moving_dataset(lambda g, t: turn(g, torch.tensor([degrees_at(t)]), torch.zeros(3)), frames, size, static,
                           eval_views)  # fmt: skip


def _moving_dataset(move, frames=8, size=32, static=True, eval_views=0) -> tuple[MultiViewVideo, Gaussians]:
    """Images of a static blob scene moved at time t by ``move(gaussians (1, N, ...), t)``."""
    canonical = synthetic_scene(blobs=4, per_blob=40, seed=3, motion=0.0).canonical
    times = torch.arange(frames, dtype=torch.float32) / (frames - 1)
    azimuths = 360.0 * torch.arange(frames, dtype=torch.float32) / frames
    parts = {"orbit": orbit(0.0, azimuths, 2.0, FOV, size, size, times)}
    if static:
        parts["static_orbit"] = orbit(0.0, azimuths, 2.0, FOV, size, size, 0.0)
    if eval_views:
        eval_az = 360.0 * (torch.arange(eval_views, dtype=torch.float32) + 0.5) / eval_views
        parts["eval"] = orbit(
            20.0, eval_az, 2.0, FOV, size, size, times[1 :: max(1, frames // eval_views)][:eval_views]
        )
    cameras = Cameras.cat(list(parts.values()))
    images, alphas = [], []
    with torch.no_grad():
        for i in range(len(cameras)):
            cam = cameras[i]
            t = float(cam.times[0])
            turned = move(canonical.map(lambda x: x[None]), t)
            out = render(turned.map(lambda x: x[0]), cam, options=RenderOptions(backend="torch"))
            alpha = out.alpha.clamp(0, 1)
            images.append(
                torch.where(alpha > 1e-4, out.rgb / alpha.clamp_min(1e-4), torch.zeros_like(out.rgb)).clamp(0, 1)
            )
            alphas.append(alpha)
    splits, start = {}, 0
    for name, cams in parts.items():
        splits[name] = torch.arange(start, start + len(cams))
        start += len(cams)
    data = MultiViewVideo(images=torch.cat(images), alphas=torch.cat(alphas), cameras=cameras, splits=splits,
                          num_frames=frames, name="turning")  # fmt: skip
    return data, canonical


OPTIONS = RenderOptions(backend="torch", tile_size=8)


def test_search_recovers_a_known_turn_from_the_true_canonical_set():
    data, canonical = _turning_dataset(lambda t: 150.0 * t)  # up to 150 degrees: far beyond gradient reach
    model = DynamicGaussians(canonical, DeformConfig(field=SMALL_HEX))
    report = search_turn(model, data, TurnSearchConfig(size=32), OPTIONS)
    assert report["kept"], report
    truth = 150.0 * torch.arange(8) / 7
    assert torch.allclose(model.turn.degrees, truth, atol=2.0), model.turn.degrees
    assert torch.allclose(model.turn.times, torch.arange(8) / 7)


def test_search_keeps_nothing_when_the_object_does_not_turn():
    data, canonical = _turning_dataset(lambda t: 0.0)
    model = DynamicGaussians(canonical, DeformConfig(field=SMALL_HEX))
    report = search_turn(model, data, TurnSearchConfig(size=32), OPTIONS)
    assert not report["kept"] and "gain" in report["reason"] and not model.turn.active


def _default_recipe():
    """The default recipe's stages (static orbit alone, then motion with the static orbit), test-sized."""
    config = tiny_config(coarse=300, fine=200, points=300, cameras=2)
    return replace(config, coarse=replace(config.coarse, orbit=False), fine=replace(config.fine, static_orbit=True),
                   output=replace(config.output, evaluate=True))  # fmt: skip


@pytest.fixture(scope="module")
def turning_runs(tmp_path_factory):
    """The default recipe's stages (static orbit alone, then motion with the static orbit) on a turning
    object, with and without the turn search."""
    data, _ = _turning_dataset(lambda t: 120.0 * math.sin(math.pi * t), frames=8, size=32, eval_views=4)
    config = _default_recipe()
    out = {}
    for on in (True, False):
        run = tmp_path_factory.mktemp(f"turn_{on}")
        out[on] = reconstruct(data, replace(config, turn=replace(config.turn, enabled=on, size=32)), run / "r",
                              progress=False, echo=None)  # fmt: skip
    return out


def test_construction_of_a_turning_object_holds_together_with_the_turn(turning_runs):
    with_turn, without = turning_runs[True], turning_runs[False]
    assert with_turn["turn"]["kept"] and without["turn"] is None
    # The default learns a whole-object motion on top of a kept turn only.
    assert len(with_turn["rigid"]["degrees"]) == 8 and without["rigid"] is None
    found = torch.tensor(with_turn["turn"]["degrees"])
    truth = 120.0 * torch.sin(math.pi * torch.arange(8) / 7)
    assert (found - truth).abs().max() < 6.0, found  # the canonical set is learned here, not given
    held_out = with_turn["splits"]["eval"], without["splits"]["eval"]
    # Without the turn the field cannot follow a 120-degree turn: the held-out views fall apart.
    assert held_out[0]["iou"] > held_out[1]["iou"] + 0.05, held_out
    assert held_out[0]["psnr"] > held_out[1]["psnr"] + 2.0, held_out


# -- the learned whole-object rigid motion ---------------------------------------------------------------
def test_rigid_motion_about_the_vertical_axis_is_the_turn():
    g = _point(2.0, 0.5, 0.5)
    center = torch.tensor([1.0, 0.0, 0.2])
    moved = move_rigidly(g, torch.tensor([[0.0, 0.0, math.pi / 2]]), torch.tensor([[0.1, -0.2, 0.3]]), center)
    turned = turn(g, torch.tensor([90.0]), center)
    assert torch.allclose(moved.means, turned.means + torch.tensor([0.1, -0.2, 0.3]), atol=1e-6)
    assert torch.allclose(moved.quats, turned.quats, atol=1e-6)
    # A tilt about +X through the centre: +Y goes to +Z.
    tilted = move_rigidly(_point(1.0, 1.0, 0.2), torch.tensor([[math.pi / 2, 0.0, 0.0]]), torch.zeros(1, 3), center)
    assert torch.allclose(tilted.means, torch.tensor([[[1.0, 0.0, 1.2]]]), atol=1e-6)


def test_learned_rigid_motion_starts_at_the_identity_and_keeps_the_first_time_fixed():
    track = TurnTrack()
    g = random_in_sphere(20, seed=4).map(lambda x: x.expand(3, *x.shape))
    times = torch.tensor([0.0, 0.25, 1.0])
    with pytest.raises(ValueError, match="set the knots"):
        track.make_learnable()
    track.set(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([0.0, 30.0, 60.0]), torch.tensor([0.0, 0.1, 0.0]))
    turned = track(g, times)
    params = track.make_learnable()
    assert track.learnable and [p.shape for p in params] == [(2, 3), (2, 3)]
    assert torch.allclose(track(g, times).means, turned.means, atol=1e-6)  # zero motion: the turn alone
    # Gradients at zero are finite (the axis-angle norm is smoothed) and reach the knots in use.
    track(g, times).means.square().sum().backward()
    assert torch.isfinite(track.rotation.grad).all() and track.rotation.grad.abs().sum() > 0
    with torch.no_grad():
        track.rotation.copy_(torch.tensor([[0.3, -0.2, 0.1], [0.5, 0.0, 0.0]]))
        track.translation.copy_(torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0]]))
        out = track(g, times)
    assert torch.allclose(out.means[0], turned.means[0], atol=1e-6)  # the first knot stays the identity
    rot, shift = track.rigid(torch.tensor([0.25, 0.75, 2.0]))
    assert torch.allclose(rot, torch.tensor([[0.15, -0.1, 0.05], [0.4, -0.1, 0.05], [0.5, 0.0, 0.0]]))
    assert torch.allclose(shift, torch.tensor([[0.05, 0.0, 0.0], [0.05, 0.1, 0.0], [0.0, 0.2, 0.0]]))


def test_model_with_a_learned_rigid_motion_saves_and_loads(tmp_path):
    model = DynamicGaussians(random_in_sphere(40, seed=1), DeformConfig(field=SMALL_HEX))
    model.turn.set(torch.tensor([0.0, 0.5, 1.0]), torch.zeros(3), torch.tensor([0.1, 0.0, 0.0]))
    model.turn.make_learnable()
    with torch.no_grad():
        model.turn.rotation.normal_(0, 0.2, generator=torch.Generator().manual_seed(0))
        model.turn.translation.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    times = torch.tensor([0.0, 0.3, 1.0])
    loaded = DynamicGaussians.load(model.save(tmp_path / "m"))
    assert loaded.turn.learnable and isinstance(loaded.turn.rotation, torch.nn.Parameter)
    assert torch.allclose(loaded.at(times).means, model.at(times).means)
    # A turn written without a learned motion (older checkpoints) loads as a turn alone.
    plain = DynamicGaussians(random_in_sphere(40, seed=1), DeformConfig(field=SMALL_HEX))
    plain.turn.set(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 90.0]), torch.zeros(3))
    tensors = {k: v for k, v in plain.tensors().items() if k not in ("turn.rotation", "turn.translation")}
    again = DynamicGaussians.from_tensors(plain.metadata(), tensors)
    assert again.turn.active and not again.turn.learnable
    assert torch.allclose(again.at(times).means, plain.at(times).means)


TILT = math.radians(35.0)


def _tilt(g, t):
    """The whole scene rolls about +X through (0, 0, 0.1) and rises: a motion the side views see end-on."""
    angle = TILT * math.sin(math.pi * t)
    return move_rigidly(g, torch.tensor([[angle, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.1 * t]]),
                        torch.tensor([0.0, 0.0, 0.1]))  # fmt: skip


@pytest.fixture(scope="module")
def tilting_runs(tmp_path_factory):
    """The default recipe's stages on a rolling object: the field alone, and the field with the learned
    rigid motion."""
    data, _ = _moving_dataset(_tilt, frames=8, size=32, eval_views=4)
    config = _default_recipe()
    out = {}
    for on in (True, False):
        run = tmp_path_factory.mktemp(f"rigid_{on}")
        rigid = RigidMotionConfig(when="always" if on else "never")
        # 200 fine steps instead of 800: the motion's rates x 4 to travel as far.
        lr = replace(config.lr, rigid_rotation=2e-2, rigid_rotation_final=2e-3, rigid_translation=8e-3,
                     rigid_translation_final=8e-4)  # fmt: skip
        run_config = replace(config, rigid=rigid, lr=lr)
        out[on] = reconstruct(data, run_config, run / "r", progress=False, echo=None), run / "r"
    return out


def test_learned_rigid_motion_recovers_a_roll_that_one_view_per_time_sees_end_on(tilting_runs):
    (rigid, rigid_dir), (field, _) = tilting_runs[True], tilting_runs[False]
    model = DynamicGaussians.load(rigid_dir / "checkpoint")
    times = torch.arange(8) / 7
    rotation, shift = model.turn.rigid(times)
    truth = TILT * torch.sin(math.pi * times)
    # Most of the roll goes to the whole-object motion (the field takes part of it), about the right axis.
    assert (rotation[1:7, 0] > 0.4 * truth[1:7]).all() and (rotation[:, 0] - truth).abs().max() < 0.25, rotation
    assert rotation[:, 1:].abs().max() < 0.5 * rotation[:, 0].abs().max(), rotation
    assert rigid["rigid"]["degrees"][0] == 0.0 and field["rigid"] is None
    held_out = rigid["splits"]["eval"], field["splits"]["eval"]
    assert held_out[0]["iou"] > held_out[1]["iou"] + 0.03, held_out
    assert held_out[0]["psnr"] > held_out[1]["psnr"] + 2.0, held_out


def test_run_with_a_learned_rigid_motion_resumes_exactly(tmp_path):
    data, _ = _moving_dataset(_tilt, frames=4, size=24)
    config = tiny_config(coarse=4, fine=6, points=60, cameras=2)
    config = replace(config, coarse=replace(config.coarse, orbit=False), rigid=RigidMotionConfig(when="always"))
    reconstruct(data, config, tmp_path / "full", progress=False, echo=None)
    part = tmp_path / "part"
    assert reconstruct(data, config, part, progress=False, echo=None, stop_after=7) == {"stopped_at": 7}
    reconstruct(data, config, part, resume=True, progress=False, echo=None)
    a = DynamicGaussians.load(tmp_path / "full" / "checkpoint").tensors()
    b = DynamicGaussians.load(part / "checkpoint").tensors()
    assert a.keys() == b.keys() and a["turn.rotation"].abs().sum() > 0
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
