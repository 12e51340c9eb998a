"""Small pieces of the construction loop: losses, learning-rate schedules, optimiser groups,
checkpoints, held-out split selection, presets."""

import math

import pytest
import torch

from gen4d.config import from_dict, to_dict
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.recon import find_checkpoint, load_checkpoint, save_checkpoint
from gen4d.recon.construct import PRESETS, ConstructConfig, StageConfig
from gen4d.recon.losses import LossWeights, alpha_loss, depth_smoothness, dssim, l1, weighted_regularizers
from gen4d.recon.optim import LearningRates, build_optimizer, learning_rates_at, log_linear, set_learning_rates

HEX = DeformConfig(field=HexPlaneConfig(features=2, resolution=(4, 4, 4, 3), multires=(1,), width=8))


def test_image_losses():
    a = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    assert float(l1(a, a)) == 0 and float(dssim(a, a)) == pytest.approx(0, abs=1e-5)
    assert float(l1(a, 1 - a)) > 0 and float(dssim(a, 1 - a)) > 0.5
    assert float(alpha_loss(torch.ones(1, 4, 4, 1), torch.zeros(1, 4, 4, 1))) == 1.0
    depth = torch.ones(1, 8, 8, 1)
    image = torch.zeros(1, 8, 8, 3)
    assert float(depth_smoothness(depth, image)) == 0
    step = depth.clone()
    step[:, :, 4:] = 2.0
    smooth_image = float(depth_smoothness(step, image))
    edge_image = image.clone()
    edge_image[:, :, 4:] = 1.0  # a colour edge where the depth jumps: penalised less
    assert 0 < float(depth_smoothness(step, edge_image)) < smooth_image
    mask = torch.zeros(1, 8, 8, 1)
    mask[:, :, :4] = 1  # the jump lies outside the mask
    assert float(depth_smoothness(step, image, mask)) == 0


def test_weighted_regularizers():
    regs = {"plane_tv": torch.tensor(2.0), "time_l1": torch.tensor(3.0)}
    out = weighted_regularizers(regs, LossWeights(plane_tv=0.5, time_l1=0.0))
    assert set(out) == {"plane_tv"} and float(out["plane_tv"]) == 1.0
    with pytest.raises(ValueError, match="no weight"):
        weighted_regularizers({"bogus": torch.tensor(1.0)}, LossWeights())


def test_log_linear_schedule():
    assert log_linear(0, 1e-2, 1e-4, 100) == pytest.approx(1e-2)
    assert log_linear(50, 1e-2, 1e-4, 100) == pytest.approx(1e-3)
    assert log_linear(100, 1e-2, 1e-4, 100) == pytest.approx(1e-4)
    assert log_linear(500, 1e-2, 1e-4, 100) == pytest.approx(1e-4)
    assert log_linear(10, 1e-2, 1e-4, 0) == 1e-2
    rates = learning_rates_at(LearningRates(decay_steps=10), 5, stage_length=1000)
    assert rates["means"] == pytest.approx(math.sqrt(1.6e-3 * 1.6e-5))


@pytest.mark.parametrize(
    "deform",
    [HEX, DeformConfig(field=ControlPointConfig(num_points=4, width=8, depth=1))],
)
def test_optimizer_groups_cover_every_parameter(deform):
    model = DynamicGaussians(random_in_sphere(10), deform)
    optimizer = build_optimizer(model, LearningRates())
    names = [g["name"] for g in optimizer.param_groups]
    assert {"means", "log_scales", "quats", "opacity_logits", "sh"} <= set(names) and len(names) == len(set(names))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    assert optimizer.defaults["eps"] == 1e-15
    set_learning_rates(optimizer, LearningRates(), 1000, 1000)
    lr = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lr["means"] == pytest.approx(1.6e-5) and lr["sh"] == pytest.approx(2.5e-3)


def test_checkpoint_swap_and_fallback(tmp_path):
    model = DynamicGaussians(random_in_sphere(10), HEX)
    save_checkpoint(tmp_path, model, {"step": 1}, {"step": 1})
    model.params["means"].data += 1.0
    save_checkpoint(tmp_path, model, {"step": 2}, {"step": 2})
    loaded, state, info = load_checkpoint(tmp_path)
    assert info["step"] == 2 and state["step"] == 2
    assert torch.equal(loaded.params["means"], model.params["means"].detach())
    assert not (tmp_path / ".checkpoint.tmp").exists() and not (tmp_path / ".checkpoint.old").exists()
    # A crash between the two renames leaves only the previous checkpoint: it is found.
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")
    assert find_checkpoint(tmp_path) == tmp_path / ".checkpoint.old"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")


def test_heldout_excludes_trained_view_time_pairs():
    from gen4d.cameras import Cameras, orbit
    from gen4d.data.dataset import MultiViewVideo
    from gen4d.recon.outputs import heldout_splits

    orbit_cams = orbit(0.0, [0.0, 120.0, 240.0, 360.0], 2.0, 40.0, 16, 16, times=[0.0, 1 / 3, 2 / 3, 1.0])
    front = orbit(0.0, 0.0, 2.0, 40.0, 16, 16, times=[0.0, 1 / 3, 2 / 3, 1.0])
    cams = Cameras.cat([orbit_cams, front])
    video = MultiViewVideo(
        torch.zeros(8, 16, 16, 3), None, cams, {"orbit": torch.arange(4), "front": torch.arange(4, 8)}
    )
    held = heldout_splits(video, video.splits["orbit"])
    # front frame 0 = orbit pose 0 at t = 0; front frame 3 = orbit pose 3 (azimuth 360) at t = 1
    assert held["front"].tolist() == [5, 6]
    assert heldout_splits(video, torch.arange(8)) == {}  # a trained-on split is not held out


def test_presets_round_trip_and_validate():
    assert {"default", "paper", "demo"} <= set(PRESETS)
    assert ConstructConfig() == PRESETS["default"]  # the dataclass defaults are the default preset
    for config in PRESETS.values():
        assert from_dict(ConstructConfig, to_dict(config)) == config
    paper = PRESETS["paper"]
    assert (paper.coarse.iterations, paper.fine.iterations, paper.coarse.cameras_per_step) == (5000, 2000, 1)
    with pytest.raises(ValueError, match="iterations"):
        ConstructConfig(coarse=StageConfig(iterations=0), fine=StageConfig(iterations=0))


def test_each_stage_runs_its_own_learning_rate_schedule(tmp_path, monkeypatch):
    """The learning rates the optimiser holds at each step of a short run: the coarse stage decays over
    its own steps, and the fine stage starts its schedule again at its first step (stage step, not
    the global step)."""
    from gen4d.data.synthetic import synthetic_dataset
    from gen4d.densify import DensifyConfig
    from gen4d.recon.construct import InitConfig, OutputConfig, reconstruct

    coarse, fine = 3, 4
    lr = LearningRates(
        means=1e-2, means_final=1e-4, field_grid=1e-2, field_grid_final=1e-4, field_mlp=1e-3, field_mlp_final=1e-5
    )
    config = ConstructConfig(
        device="cpu", backend="torch", tile_size=8, init=InitConfig(num_points=40), lr=lr,
        coarse=StageConfig(iterations=coarse, cameras_per_step=1, static_orbit=True),
        fine=StageConfig(iterations=fine, cameras_per_step=1, static_orbit=False),
        deform=HEX, densify=DensifyConfig(enabled=False), log_every=100, checkpoint_every=0,
        output=OutputConfig(ply=False, video=False, renders=False, lpips=False, evaluate=False),
    )  # fmt: skip
    seen: list[dict[str, float]] = []
    from gen4d.recon.optim import Adam

    original = Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append({group["name"]: group["lr"] for group in self.param_groups})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Adam, "step", recording_step)
    reconstruct(synthetic_dataset(size=16, frames=4, eval_views=1), config, tmp_path / "run", progress=False, echo=None)
    assert len(seen) == coarse + fine
    for step, rates in enumerate(seen):
        stage_step, length = (step, coarse) if step < coarse else (step - coarse, fine)
        assert rates["means"] == pytest.approx(log_linear(stage_step, 1e-2, 1e-4, length), rel=1e-9), step
        if "field.grid" in rates and step >= coarse:
            assert rates["field.grid"] == pytest.approx(log_linear(stage_step, 1e-2, 1e-4, length), rel=1e-9), step
    assert seen[coarse]["means"] == pytest.approx(1e-2)  # the fine stage restarts at the initial rate


class _RecordingGraphs:
    """A StepGraphs stand-in on the CPU: records what training_step asks and hands back eager results
    computed the same way, tagged, so the test sees which ones the step used."""

    def __init__(self):
        self.calls = []

    def deformation(self, model, times, weights):
        self.calls.append("deformation")
        at = model.at(times)
        regs = weighted_regularizers(model.regularization(times, at=at), weights)
        return at, {name: value * 0 + 123.0 for name, value in regs.items()}

    def image_losses(self, output, target, alpha, weights, lpips_model=None):
        self.calls.append("images")
        return {"l1": l1(output.rgb, target) * 0 + 7.0}


@pytest.mark.parametrize("densify", [False, True])
def test_training_step_uses_graph_results_also_while_densifying(densify):
    """The step takes the image terms and the deformation (with its regularisers) from the graphs,
    in a densifying stage too (the graphs capture again after a refinement)."""
    from gen4d.data.synthetic import synthetic_dataset
    from gen4d.densify import DensifyConfig, DensifyStrategy
    from gen4d.recon.step import TrainData, training_step
    from gen4d.render import RenderOptions

    hexplane = HexPlaneConfig(features=4, resolution=(4, 4, 4, 3), multires=(1,), width=8)
    model = DynamicGaussians(random_in_sphere(60, seed=0), DeformConfig(field=hexplane), deform_enabled=True)
    data = TrainData(synthetic_dataset(size=16, frames=4), torch.device("cpu"))
    cams, target, alpha, bg = data.batch(data.pool(True), 2, 0, "white")
    strategy = DensifyStrategy(DensifyConfig(start=0, stop=10, every=5)) if densify else None
    state = strategy.initial_state(model) if strategy else None
    graphs = _RecordingGraphs()
    weights = LossWeights()
    losses, _ = training_step(
        model, build_optimizer(model, LearningRates()), cams, target, alpha, bg, weights,
        RenderOptions(backend="torch"), strategy, state, 0, graphs=graphs,
    )  # fmt: skip
    assert graphs.calls == ["deformation", "images"]
    assert float(losses.terms["l1"]) == 7.0 and "dssim" not in losses.terms  # the graph's terms replace the eager ones
    assert {float(losses.terms[k]) for k in ("plane_tv", "time_smoothness", "time_l1")} == {123.0}
