"""STAG4D's optimisation step as the public code does it, seen from outside the loop: the
reference-view loss on each of the step's frames with the ramp, and the Zero-1-to-3 condition
(nearest anchored view, poses at the equivalent radius). A recording Zero-1-to-3 stand-in
replaces the model, so these run in seconds on the CPU."""

from __future__ import annotations

import importlib
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from gen4d.cameras import Cameras, orbit
from gen4d.data.dataset import MultiViewVideo
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig
from gen4d.recon.stag4d import (
    RandomViews,
    SDSConfig,
    Stag4DConfig,
    Stag4DLoss,
    Stag4DOutput,
    optimise,
    reference_losses,
)
from gen4d.recon.stag4d.conditions import _equivalent_radius

# The module of the step (the package's name ``optimise`` is the function); the spy patches its global.
optimise_module = importlib.import_module("gen4d.recon.stag4d.optimise")

pytestmark = pytest.mark.usefixtures("single_thread")

FRAMES, SIZE = 3, 16
VIEW_AZIMUTHS = (30.0, 90.0, 150.0, -150.0, -90.0, -30.0)
VIEW_ELEVATIONS = (20.0, -10.0, 20.0, -10.0, 20.0, -10.0)
VIEW_FOV = 30.0  # Zero123++ v1.2's output field of view, narrower than the reference's 49.1 deg


class RecordingGuidance:
    """Zero-1-to-3 stand-in: each encoded condition image gets a running id (its CLIP embedding);
    every SDS call records the condition ids and the poses it was given."""

    schedule = SimpleNamespace(num_train_timesteps=1000)

    def __init__(self):
        from gen4d.diffusion.zero123 import Zero123Condition

        self._condition = Zero123Condition
        self.encoded = 0
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def encode_condition(self, images: torch.Tensor):
        count = images.shape[0]
        ids = torch.arange(self.encoded, self.encoded + count, dtype=torch.float32)[:, None]
        self.encoded += count
        return self._condition(ids, torch.zeros(count, 4, 2, 2))

    def sds(self, images, condition, pose, timesteps, guidance_scale=5.0, generator=None):
        self.calls.append((condition.clip[:, 0].long().cpu(), pose.detach().cpu()))
        return SimpleNamespace(loss=images.sum() * 0.0)


def _reference() -> MultiViewVideo:
    """3 frames seen from the front; frame k is a flat colour 0.2 + 0.3 k (so a target names its frame)."""
    times = torch.linspace(0, 1, FRAMES)
    colours = 0.2 + 0.3 * torch.arange(FRAMES, dtype=torch.float32)
    images = colours[:, None, None, None].expand(FRAMES, SIZE, SIZE, 3).contiguous()
    alphas = torch.ones(FRAMES, SIZE, SIZE, 1)
    cams = orbit(0.0, 0.0, 2.0, 49.1, SIZE, SIZE, times)
    return MultiViewVideo(
        images=images, alphas=alphas, cameras=cams, splits={"front": torch.arange(FRAMES)}, num_frames=FRAMES
    )


def _views() -> MultiViewVideo:
    """Six anchored views per frame at radius 2 with a 30 deg field of view."""
    times = torch.linspace(0, 1, FRAMES)
    cams = Cameras.cat(
        [
            orbit(el, az, 2.0, VIEW_FOV, SIZE, SIZE, times[[f]])
            for f in range(FRAMES)
            for el, az in zip(VIEW_ELEVATIONS, VIEW_AZIMUTHS)
        ]
    )
    count = FRAMES * 6
    images = torch.rand(count, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(0))
    return MultiViewVideo(
        images=images, alphas=torch.ones(count, SIZE, SIZE, 1), cameras=cams, frames=torch.arange(FRAMES).repeat_interleave(6),
        num_frames=FRAMES, splits={"zero123pp": torch.arange(count)},
    )  # fmt: skip


def _config(**changes) -> Stag4DConfig:
    base = dict(
        device="cpu", backend="torch", steps=4, static_steps=1, ramp_steps=10, views_per_step=4, num_points=200,
        deform=DeformConfig(field=HexPlaneConfig(features=4, resolution=(8, 8, 8, 4), multires=(1,), width=16, regularizer="stag4d")),
        densify=DensifyConfig(start=1000, stop=2000), views=RandomViews(sizes=(SIZE,), size_steps=()),
        sds=SDSConfig(input_prob=0.0, input_azimuth_deg=0.0), output=Stag4DOutput(ply=False, videos=False, renders=False),
        log_every=2, checkpoint_every=0,
    )  # fmt: skip
    base.update(changes)
    return Stag4DConfig(**base)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    """A 4-step run (1 static) with the recording guidance; the reference losses' arguments are recorded too."""
    calls = []
    original = reference_losses

    def spy(rgb, alpha, target_rgb, target_alpha, ramp, weights):
        calls.append((target_rgb[..., 0].mean(dim=(1, 2)).detach().cpu(), float(ramp), rgb.shape[0]))
        return original(rgb, alpha, target_rgb, target_alpha, ramp, weights)

    guidance = RecordingGuidance()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optimise_module, "reference_losses", spy)
        optimise(_reference(), _views(), guidance, _config(), tmp_path_factory.mktemp("run"), progress=False)
    return SimpleNamespace(reference=calls, guidance=guidance)


def test_reference_losses_sum_the_per_frame_losses():
    generator = torch.Generator().manual_seed(1)
    rgb, target = torch.rand(4, 5, 6, 3, generator=generator), torch.rand(4, 5, 6, 3, generator=generator)
    alpha, target_alpha = torch.rand(4, 5, 6, 1, generator=generator), torch.rand(4, 5, 6, 1, generator=generator)
    weights = Stag4DLoss(ref_rgb=20000.0, ref_alpha=5000.0)
    terms = reference_losses(rgb, alpha, target, target_alpha, 0.25, weights)
    rgb_sum = sum(float(((rgb[k] - target[k]) ** 2).mean()) for k in range(4))
    alpha_sum = sum(float(((alpha[k] - target_alpha[k]) ** 2).mean()) for k in range(4))
    assert float(terms["ref_rgb"]) == pytest.approx(0.25 * 20000 * rgb_sum, rel=1e-5)
    assert float(terms["ref_alpha"]) == pytest.approx(0.25 * 5000 * alpha_sum, rel=1e-5)
    with pytest.raises(ValueError, match="reference_losses"):
        reference_losses(rgb[:2], alpha, target, target_alpha, 1.0, weights)


def test_reference_loss_covers_each_of_the_steps_frames(recorded_run):
    colours = 0.2 + 0.3 * torch.arange(FRAMES, dtype=torch.float32)
    calls = recorded_run.reference
    assert len(calls) == 4
    for targets, _, rendered in calls:
        assert rendered == 4 and targets.shape == (4,)  # one render and one target per frame of the step
        assert all(float((colours - value).abs().min()) < 1e-6 for value in targets)  # each target is an input frame
    assert torch.allclose(calls[0][0], colours[FRAMES // 2].expand(4))  # static stage: the middle frame
    assert any(len(set(targets.tolist())) > 1 for targets, _, _ in calls[1:])  # later: several frames per step


def test_reference_loss_ramp_grows_with_the_step(recorded_run):
    """r = (step + 1) / ramp_steps (the public code's step_ratio after its step increment)."""
    assert [ramp for _, ramp, _ in recorded_run.reference] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Absolute azimuth difference in degrees, wrapped to [0, 180]."""
    return ((a - b + 180.0) % 360.0 - 180.0).abs()


def _pose_azimuth_deg(pose: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.atan2(pose[:, 1], pose[:, 2]))


def test_sds_conditions_on_the_nearest_anchored_view(recorded_run):
    """With input_prob 0 and input_azimuth 0 every sample is conditioned on an anchored view of
    its frame: the one nearest in azimuth to the random view (recovered as the condition's
    azimuth + the pose's delta azimuth)."""
    calls = recorded_run.guidance.calls
    assert len(calls) == 4 and all(len(ids) == 4 for ids, _ in calls)
    view_azimuth = torch.tensor(VIEW_AZIMUTHS)
    for ids, pose in calls:
        views = ids - FRAMES  # the frames were encoded first (ids 0..F-1), then the views in order
        assert bool((views >= 0).all()), "every sample should be conditioned on an anchored view"
        own = view_azimuth[views % 6]
        target = own + _pose_azimuth_deg(pose)
        chosen = distance(own, target)
        best = distance(view_azimuth[None, :], target[:, None]).min(-1).values
        assert torch.allclose(chosen, best, atol=1e-3), (chosen, best)
        assert bool((chosen <= 30.0 + 1e-3).all())  # six views 60 deg apart: the nearest is within 30 deg


def test_sds_poses_use_the_equivalent_radius_of_the_condition(recorded_run):
    """An anchored view at radius 2 with a 30 deg fov shows the object as large as a 49.1 deg camera
    at 2 tan(15) / tan(24.55) = 1.17; the pose's delta radius is render radius - that."""
    expected = 2.0 - 2.0 * math.tan(math.radians(VIEW_FOV / 2)) / math.tan(math.radians(49.1 / 2))
    for _, pose in recorded_run.guidance.calls:
        assert torch.allclose(pose[:, 3], torch.full((4,), expected), atol=1e-4)


def test_equivalent_radius():
    cams = orbit(0.0, 0.0, 3.0, 30.0, 8, 8, torch.zeros(1))
    radius = _equivalent_radius(cams, torch.tensor([3.0]), 49.1)
    assert float(radius) == pytest.approx(3.0 * math.tan(math.radians(15)) / math.tan(math.radians(24.55)), rel=1e-5)
    same = orbit(0.0, 0.0, 3.0, 49.1, 8, 8, torch.zeros(1))
    assert float(_equivalent_radius(same, torch.tensor([3.0]), 49.1)) == pytest.approx(3.0, rel=1e-5)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    """Stopping after 3 steps and resuming to 6 gives the checkpoint of a 6-step run (densification,
    the static -> dynamic switch, SDS conditions and the per-frame reference loss all on the way)."""
    from safetensors.torch import load_file

    config = _config(
        steps=6,
        static_steps=2,
        densify=DensifyConfig(start=3, stop=6, every=2, threshold_mode="percentile", percentile=20.0),
    )
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir(), part.mkdir()
    optimise(_reference(), _views(), RecordingGuidance(), config, full, progress=False)
    optimise(_reference(), _views(), RecordingGuidance(), replace(config, steps=3), part, progress=False)
    optimise(_reference(), _views(), RecordingGuidance(), config, part, resume=True, progress=False)
    a, b = (
        load_file(str(full / "checkpoint" / "model.safetensors")),
        load_file(str(part / "checkpoint" / "model.safetensors")),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape and torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=0), key
