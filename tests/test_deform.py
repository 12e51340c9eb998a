"""Deformation fields: identity at init, shapes, gradients, regularisers, errors."""

import dataclasses

import pytest
import torch

from gen4d.config import ConfigError
from gen4d.deform import (
    ControlPointConfig,
    ControlPointField,
    DeformConfig,
    HexPlaneConfig,
    HexPlaneField,
    MotionBasesConfig,
    MotionBasesField,
    build_field,
    farthest_point_sampling,
    quaternion_multiply,
)
from gen4d.gaussians import random_in_sphere

SMALL_HEX = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1, 2), width=16)
SMALL_CP = ControlPointConfig(num_points=16, width=16, depth=2, position_frequencies=2, time_frequencies=2)
SMALL_MB = MotionBasesConfig(num_bases=6, time_steps=5)
SMALL_MODES = dataclasses.replace(SMALL_HEX, time_modes=3)
CONFIGS = [
    DeformConfig(field=SMALL_HEX),
    DeformConfig(field=SMALL_MODES),
    DeformConfig(field=SMALL_CP),
    DeformConfig(field=SMALL_MB),
]


def _config_id(config: DeformConfig) -> str:
    field = config.field
    return field.type_name + (f"-{field.time_modes}modes" if getattr(field, "time_modes", 0) else "")


@pytest.fixture
def canonical():
    return random_in_sphere(64, seed=1)


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_fresh_field_is_identity(config, canonical):
    field = build_field(config)
    field.prepare(canonical)
    times = torch.tensor([0.0, 0.4, 1.0])
    out = field(canonical, times).validate()
    assert out.means.shape == (3, 64, 3) and out.sh.shape == (3, 64, 1, 3)
    assert torch.allclose(out.means, canonical.means.expand(3, -1, -1), atol=1e-5)
    assert torch.allclose(out.log_scales, canonical.log_scales.expand(3, -1, -1), atol=1e-6)
    q = torch.nn.functional.normalize(out.quats, dim=-1)
    q0 = torch.nn.functional.normalize(canonical.quats, dim=-1).expand(3, -1, -1)
    assert torch.allclose(q, q0, atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
def test_field_learns_time_dependent_translation(config, canonical):
    """A few Adam steps move the points towards a time-dependent target: grads reach every part."""
    torch.manual_seed(0)
    field = build_field(config)
    field.prepare(canonical)
    times = torch.tensor([0.0, 0.5, 1.0])
    target = canonical.means[None] + torch.tensor([0.1, 0.0, 0.0]) * times[:, None, None]
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = (field(canonical, times).means - target).square().mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first
    # motion differs between times: the field really depends on t
    out = field(canonical, times).means.detach()
    assert float((out[2] - out[0]).abs().mean()) > 0.02


def _moving(field: HexPlaneField) -> HexPlaneField:
    """``field`` with random heads and time planes (or motion curves): it moves everything, differently
    at every time."""
    with torch.no_grad():
        field.head_out_weight.normal_(std=0.5)
        field.head_out_bias.normal_(std=0.1)
        for plane in field.grid.temporal:
            plane.add_(torch.randn_like(plane))
        if field.grid.modes is not None:
            field.grid.modes.normal_()
    return field


def test_hexplane_anchor_start_subtracts_the_offsets_at_time_zero(canonical):
    """anchor_start: offsets(t) - offsets(0) of the same weights, so time 0 is the canonical set exactly
    while the other times move as the field says."""
    torch.manual_seed(0)
    plain = _moving(HexPlaneField(SMALL_HEX))
    anchored = HexPlaneField(dataclasses.replace(SMALL_HEX, anchor_start=True))
    anchored.load_state_dict(plain.state_dict())
    times = torch.tensor([0.7, 0.0, 0.2])
    moved = anchored(canonical, times)
    assert torch.equal(moved.means[1], canonical.means) and torch.equal(moved.quats[1], canonical.quats)
    expected = plain.deltas(canonical.means, times)
    at_zero = plain.deltas(canonical.means, torch.zeros(1))
    for name, value in anchored.deltas(canonical.means, times).items():
        assert value.shape == expected[name].shape
        assert torch.allclose(value, expected[name] - at_zero[name], atol=1e-6), name
    assert float((moved.means[0] - canonical.means).abs().mean()) > 1e-2
    # gradients reach the first time knot through the times after it
    anchored(canonical, torch.tensor([0.1])).means.sum().backward()
    assert all(float(plane.grad[:, :, 0].abs().sum()) > 0 for plane in anchored.grid.temporal)


def test_hexplane_time_modes_give_motion_of_rank_k(canonical):
    """time_modes = K: every time's offsets are a combination of the same K time-free offset fields, so
    the offsets of many times stacked as rows have rank K (the plain field's have a higher rank), and
    the curves are linear between their knots."""
    torch.manual_seed(0)
    times = torch.linspace(0.0, 1.0, 17)
    ranks = {}
    for config in (SMALL_HEX, SMALL_MODES):
        field = _moving(HexPlaneField(config))
        with torch.no_grad():
            offsets = field(canonical, times).means - canonical.means
        ranks[config.time_modes] = int(torch.linalg.matrix_rank(offsets.reshape(times.numel(), -1)))
    assert ranks[3] == 3 and ranks[0] > 3
    grid = HexPlaneField(SMALL_MODES).grid
    assert not list(grid.temporal)  # no space-time planes with time modes
    knots = torch.linspace(0.0, 1.0, SMALL_MODES.resolution[3])
    assert torch.allclose(grid.mode_weights(knots), grid.modes.detach().T)
    middle = grid.mode_weights((knots[1:2] + knots[2:3]) / 2)[0]
    assert torch.allclose(middle, (grid.modes[:, 1] + grid.modes[:, 2]).detach() / 2)
    # the regularisers: smoothness of the curves, no time-L1 (nothing starts at "no motion")
    regs = HexPlaneField(SMALL_MODES).regularization(canonical, times)
    assert float(regs["time_smoothness"]) > 0 and float(regs["time_l1"]) == 0
    with pytest.raises(ConfigError, match="time_modes"):
        HexPlaneConfig(time_modes=-1)


def test_hexplane_regularisers():
    field = HexPlaneField(SMALL_HEX)
    regs = {k: v.detach() for k, v in field.regularization(random_in_sphere(8), torch.tensor([0.5])).items()}
    assert set(regs) == {"plane_tv", "time_smoothness", "time_l1"}
    assert float(regs["plane_tv"]) > 0  # random spatial planes
    assert float(regs["time_smoothness"]) == 0 and float(regs["time_l1"]) == 0  # time planes start at 1
    with torch.no_grad():
        field.grid.temporal[0][:, :, 2, :] += 1.0  # a bump in time
    regs = {k: v.detach() for k, v in field.regularization(random_in_sphere(8), torch.tensor([0.5])).items()}
    assert float(regs["time_smoothness"]) > 0 and float(regs["time_l1"]) > 0
    groups = field.param_groups()
    assert set(groups) == {"grid", "mlp"}
    assert sum(p.numel() for g in groups.values() for p in g) == sum(p.numel() for p in field.parameters())


def _random_hexplane(regularizer: str) -> HexPlaneField:
    """A float64 field with random planes (3 features, base 5 x 5, time 6 rows, 2 scales)."""
    config = HexPlaneConfig(features=3, resolution=(5, 5, 5, 6), multires=(1, 2), width=8, regularizer=regularizer)
    field = HexPlaneField(config).double()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for plane in list(field.grid.spatial) + list(field.grid.temporal):
            plane.copy_(torch.rand(plane.shape, generator=generator, dtype=torch.float64) * 2)
    return field


def _loop_planes(planes):
    """Per plane: (nested lists [feature][row][column], feature count, rows, columns) in Python floats."""
    for stacked in planes:
        for plane in stacked.detach().tolist():
            yield plane, len(plane), len(plane[0]), len(plane[0][0])


def _second_difference_along_rows(plane, features, rows, cols):
    """Mean over (feature, row, column) of (p[r+2] - 2 p[r+1] + p[r])^2, by Python loops."""
    total = 0.0
    for f in range(features):
        for r in range(rows - 2):
            for c in range(cols):
                total += (plane[f][r + 2][c] - 2 * plane[f][r + 1][c] + plane[f][r][c]) ** 2
    return total / (features * (rows - 2) * cols)


def _l1_from_one(plane, features, rows, cols):
    return sum(abs(1 - plane[f][r][c]) for f in range(features) for r in range(rows) for c in range(cols)) / (
        features * rows * cols
    )


def test_hexplane_stag4d_regularisers_match_a_hand_computation():
    """STAG4D's code (``_plane_regulation``, ``_time_regulation``, ``_l1_regulation``): per plane the
    mean squared second difference along the rows (the second axis of the pair: y / z / z for the
    spatial planes, t for the space-time planes) and the mean |1 - value|, each SUMMED over the
    scales and the three planes."""
    field = _random_hexplane("stag4d")
    regs = field.regularization(random_in_sphere(4), torch.tensor([0.5]))
    values = {k: float(v.detach()) for k, v in regs.items()}
    grid = field.grid
    plane_tv = sum(_second_difference_along_rows(*item) for item in _loop_planes(grid.spatial))
    smooth = sum(_second_difference_along_rows(*item) for item in _loop_planes(grid.temporal))
    l1 = sum(_l1_from_one(*item) for item in _loop_planes(grid.temporal))
    assert values["plane_tv"] == pytest.approx(plane_tv, rel=1e-12)
    assert values["time_smoothness"] == pytest.approx(smooth, rel=1e-12)
    assert values["time_l1"] == pytest.approx(l1, rel=1e-12)
    # gradients reach the planes
    sum(regs.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in list(grid.spatial) + list(grid.temporal))


def test_hexplane_kplanes_regularisers_match_a_hand_computation():
    """The default ('kplanes'): first differences along both plane axes for the spatial planes,
    second differences along t, L1 from 1, each AVERAGED over scales and planes."""
    field = _random_hexplane("kplanes")
    regs = {k: v.detach() for k, v in field.regularization(random_in_sphere(4), torch.tensor([0.5])).items()}
    grid = field.grid
    tv, count = 0.0, 0
    for plane, features, rows, cols in _loop_planes(grid.spatial):
        along_rows = sum(
            (plane[f][r + 1][c] - plane[f][r][c]) ** 2
            for f in range(features)
            for r in range(rows - 1)
            for c in range(cols)
        )
        along_cols = sum(
            (plane[f][r][c + 1] - plane[f][r][c]) ** 2
            for f in range(features)
            for r in range(rows)
            for c in range(cols - 1)
        )
        tv += along_rows / (features * (rows - 1) * cols) + along_cols / (features * rows * (cols - 1))
        count += 1
    planes = list(_loop_planes(grid.temporal))
    smooth = sum(_second_difference_along_rows(*item) for item in planes) / len(planes)
    l1 = sum(_l1_from_one(*item) for item in planes) / len(planes)
    assert float(regs["plane_tv"]) == pytest.approx(tv / count, rel=1e-12)
    assert float(regs["time_smoothness"]) == pytest.approx(smooth, rel=1e-12)
    assert float(regs["time_l1"]) == pytest.approx(l1, rel=1e-12)


def test_hexplane_spatial_lookup_matches_manual_bilinear():
    field = HexPlaneField(HexPlaneConfig(features=2, resolution=(4, 4, 4, 3), multires=(1,), bounds=1.0))
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0]])
    plane = field.grid.spatial[0]
    feats = field.grid.spatial_features(points)[0]
    # corner point (1, -1, 1): xy plane at (col 3, row 0), xz plane (col 3, row 3), yz plane (col 0, row 3)
    expected = plane[0, :, 0, 3] * plane[1, :, 3, 3] * plane[2, :, 3, 0]
    assert torch.allclose(feats[1], expected)
    # centre: mean of the 4 central texels of each plane
    centre = [plane[i, :, 1:3, 1:3].mean((-1, -2)) for i in range(3)]
    assert torch.allclose(feats[0], centre[0] * centre[1] * centre[2], atol=1e-6)


def test_control_point_arap_zero_for_rigid_motion(canonical):
    field = ControlPointField(SMALL_CP)
    field.prepare(canonical)
    times = torch.tensor([0.3, 0.8])
    assert float(field.arap(times).detach()) < 1e-10  # identity motion is rigid
    with torch.no_grad():
        field.head.bias[4:7] = torch.tensor([0.2, -0.1, 0.05])  # the same translation everywhere: rigid
    assert float(field.arap(times).detach()) < 1e-10
    with torch.no_grad():
        field.head.weight.normal_(0, 0.5)  # arbitrary per-point motion: not rigid
    assert float(field.arap(times).detach()) > 1e-4


def test_control_point_per_gaussian_state(canonical):
    field = ControlPointField(SMALL_CP)
    field.prepare(canonical)
    state = field.per_gaussian_state()
    assert state["knn_index"].shape == (64, SMALL_CP.neighbours)
    field.set_per_gaussian_state({"knn_index": state["knn_index"][:10]})
    assert field.per_gaussian_state()["knn_index"].shape == (10, SMALL_CP.neighbours)
    with pytest.raises(ValueError, match="unknown per-Gaussian state"):
        field.set_per_gaussian_state({"bogus": state["knn_index"]})


def test_control_point_neighbour_cache_is_refreshed_every_knn_every_steps(canonical):
    """The Gaussian -> control point neighbours are cached between refreshes and recomputed from the
    current control points by before_step at steps 0, knn_every, 2 knn_every, ...; forward (an
    evaluation render, say) only reads the cache, so it never shifts the schedule."""
    from dataclasses import replace

    from gen4d.deform.control_points import _knn

    field = ControlPointField(replace(SMALL_CP, knn_every=3))
    field.prepare(canonical)
    times = torch.tensor([0.3])
    fresh = lambda: _knn(canonical.means.detach(), field.positions.detach(), SMALL_CP.neighbours)  # noqa: E731
    field.before_step(canonical.means, 0)
    first = field.knn_index.clone()
    assert torch.equal(first, fresh())
    with torch.no_grad():
        field.positions.data = field.positions.data.flip(0) * 0.9  # control points move: neighbours change
    moved = fresh()
    assert not torch.equal(moved, first)
    for step in (1, 2):  # the cache is kept, whatever forward calls happen in between
        field.before_step(canonical.means, step)
        for _ in range(5):
            field(canonical, times)
        assert torch.equal(field.knn_index, first)
    field.before_step(canonical.means, 3)  # refreshed from the moved points
    assert torch.equal(field.knn_index, moved)
    # A set the cache was not made for gets neighbours of its own, and the cache is left alone.
    fewer = canonical.map(lambda x: x[:7])
    out = field(fewer, times)
    assert out.means.shape == (1, 7, 3) and torch.equal(field.knn_index, moved)


def test_control_point_field_loads_a_state_with_the_old_call_counter(canonical):
    """Fields saved before the refresh moved out of forward stored a 'calls' counter: still loadable."""
    field = ControlPointField(SMALL_CP)
    field.prepare(canonical)
    state = dict(field.state_dict())
    state["calls"] = torch.tensor(7)
    other = ControlPointField(SMALL_CP)
    other.load_state_dict(state)
    assert torch.equal(other.knn_index, field.knn_index)


def test_fps_and_quaternions():
    points = torch.tensor([[0.0, 0, 0], [0.01, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    chosen = farthest_point_sampling(points, 3).tolist()
    assert len(set(chosen)) == 3 and {2, 3} <= set(chosen)
    q = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    identity = torch.tensor([1.0, 0, 0, 0]).expand(5, 4)
    assert torch.allclose(quaternion_multiply(identity, q), q)
    from gen4d.gaussians import quaternion_to_matrix

    r = quaternion_to_matrix(quaternion_multiply(q, q.flip(0)))
    assert torch.allclose(r, quaternion_to_matrix(q) @ quaternion_to_matrix(q.flip(0)), atol=1e-5)


def test_errors(canonical):
    with pytest.raises(TypeError, match="DeformConfig.field"):
        build_field(DeformConfig(field="bogus"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolution"):
        HexPlaneField(HexPlaneConfig(resolution=(8, 8, 4, 4)))
    field = HexPlaneField(SMALL_HEX)
    with pytest.raises(ValueError, match="times"):
        field(canonical, torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="unbatched"):
        field(canonical.map(lambda x: x[None]), torch.tensor([0.5]))


def _motion_bases(canonical, **changes):
    from dataclasses import replace

    field = MotionBasesField(replace(SMALL_MB, **changes))
    field.prepare(canonical)
    return field


@pytest.mark.parametrize("pivot", ["centre", "origin"])
def test_motion_bases_one_shared_motion_moves_everything_rigidly(canonical, pivot):
    """The same rigid motion on every basis moves every Gaussian by exactly that motion, whatever the
    blend weights: positions by R x + t, orientations by q_R * q; the ARAP term is then zero, and
    positive once one basis moves differently."""
    from gen4d.deform.control_points import quaternion_multiply
    from gen4d.gaussians.core import quaternion_to_matrix

    field = _motion_bases(canonical, pivot=pivot)
    angle = torch.tensor(0.7)
    q_turn = torch.stack([torch.cos(angle / 2), torch.tensor(0.0), torch.sin(angle / 2), torch.tensor(0.0)])
    shift = torch.tensor([0.1, -0.2, 0.05])
    rot = quaternion_to_matrix(q_turn)
    with torch.no_grad():
        field.rotations[:] = q_turn - torch.tensor([1.0, 0, 0, 0])  # the table holds offsets from identity
        if pivot == "centre":  # R (x - c) + c + T = R x + t for every basis when T = t - c + R c
            field.translations[:] = (shift - field.centres + field.centres @ rot.T)[:, None, :]
        else:  # R x + T
            field.translations[:] = shift
    times = torch.tensor([0.0, 0.37, 1.0])
    out = field(canonical, times)
    assert float(field.arap(times).detach()) < 1e-10
    with torch.no_grad():
        field.translations[0] += torch.tensor([0.0, 0.3, 0.0])
    assert float(field.arap(times).detach()) > 1e-3
    expected = canonical.means @ rot.T + shift
    for k in range(3):
        torch.testing.assert_close(out.means[k], expected, rtol=1e-5, atol=1e-5)
    q = torch.nn.functional.normalize(canonical.quats, dim=-1)
    torch.testing.assert_close(out.quats[1], quaternion_multiply(q_turn.expand_as(q), q), rtol=1e-5, atol=1e-5)


def test_motion_bases_interpolate_linearly_between_knots_and_parts_follow_their_basis(canonical):
    field = _motion_bases(canonical, time_steps=3)
    with torch.no_grad():
        field.translations[0, :, 0] = torch.tensor([0.0, 1.0, 3.0])  # basis 0 moves along x
        field.log_radius.fill_(-6.0)  # tiny radii: each Gaussian follows its nearest basis alone
    times = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    _, moves = field.motions(times)
    torch.testing.assert_close(moves[:, 0, 0], torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0]))
    nearest = torch.cdist(canonical.means, field.centres).argmin(-1)
    out = field(canonical, times).means.detach()
    shift = (out - canonical.means[None])[..., 0]  # (T, N)
    follows = nearest == 0
    assert bool(follows.any()) and bool((~follows).any())
    torch.testing.assert_close(
        shift[:, follows], moves[:, 0, 0, None].expand(-1, int(follows.sum())), atol=1e-4, rtol=0
    )
    assert float(shift[:, ~follows].abs().max()) < 1e-4


def test_motion_bases_regulariser_groups_and_no_per_gaussian_state(canonical):
    field = _motion_bases(canonical)
    smoothness = lambda: float(field.regularization(canonical, torch.tensor([0.5]))["time_smoothness"].detach())  # noqa: E731
    assert set(field.regularization(canonical, torch.tensor([0.5]))) == {"time_smoothness", "arap"}
    assert smoothness() == 0
    with torch.no_grad():
        field.translations[:, :, 1] = torch.linspace(0, 1, SMALL_MB.time_steps)  # linear in time: still 0
    assert smoothness() < 1e-12
    with torch.no_grad():
        field.translations[2, 2, 0] += 1.0  # a bump
    assert smoothness() > 0
    groups = field.param_groups()
    assert set(groups) == {"motion", "control"}
    assert sum(p.numel() for g in groups.values() for p in g) == sum(p.numel() for p in field.parameters())
    assert field.per_gaussian_state() == {}
    with pytest.raises(Exception, match="time_steps"):
        MotionBasesConfig(time_steps=1)
    with pytest.raises(ValueError, match="arap_neighbours: expected an integer >= 0"):
        MotionBasesConfig(arap_neighbours=-1)


def test_motion_bases_learned_weights_start_at_the_distance_weights_and_follow_densification(canonical):
    """With learn_weights each Gaussian's blend logits are a parameter (N, B) that starts at the
    distance weights, receives gradients, and follows a densification with its Adam moments."""
    from gen4d.densify import ops
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.recon.optim import LearningRates, build_optimizer

    config = DeformConfig(field=MotionBasesConfig(num_bases=6, time_steps=5, learn_weights=True))
    model = DynamicGaussians(canonical, config, deform_enabled=False)
    optimizer = build_optimizer(model, LearningRates())
    optimizer.replace_parameters(model.enable_deformation(prepare=True))
    field = model.field
    logits = model.per_gaussian_parameters()["logits"]
    assert logits.shape == (64, 6) and any(p is logits for g in optimizer.param_groups for p in g["params"])
    torch.testing.assert_close(
        field.weights(canonical.means), torch.softmax(field._distance_logits(canonical.means), -1)
    )
    with torch.no_grad():
        field.translations[0, :, 0] = torch.linspace(0, 1, 5)  # some motion, so weights matter
    model.at(torch.tensor([0.3, 0.9])).means.square().sum().backward()
    assert float(logits.grad.abs().sum()) > 0
    optimizer.step()
    moment = optimizer.state[logits]["exp_avg"].clone()
    grow = torch.zeros(64, dtype=torch.bool)
    grow[[3, 10]] = True
    ops.duplicate(model, optimizer, grow)
    new = model.per_gaussian_parameters()["logits"]
    assert new is not logits and new.shape == (66, 6)
    torch.testing.assert_close(new.data[64:], logits.data[[3, 10]])  # clones inherit their parent's weights
    state = optimizer.state[new]["exp_avg"]
    torch.testing.assert_close(state[:64], moment)
    assert float(state[64:].abs().sum()) == 0  # fresh rows start with zero moments
    assert any(p is new for g in optimizer.param_groups for p in g["params"])
    # A saved field loads with its size.
    other = MotionBasesField(config.field)
    other.load_state_dict(field.state_dict())
    torch.testing.assert_close(other.logits.data, new.data)
