"""No host-device synchronisation inside a training step (issue 11, item 4).

Inputs are validated once where they enter (dataset load, model construction, the public
``render()``); the training step renders with ``RenderOptions(check_values=False)`` and its losses
skip value checks, so a step never reads a device value back to the host except on densification
steps (every ``every`` steps).

On the CPU a read-back cannot be seen as a sync, so the CPU test counts the Python-level ways to
read a tensor's value (``bool(t)``, ``t.item()``, ``float(t)``, ``int(t)``, ``t.tolist()``,
``t.cpu()``, ``t.numpy()``, ``torch.nonzero`` and boolean-mask indexing) during training steps,
and the ways to copy host data to the device on every call (indexing with a Python list,
``torch.tensor`` / ``torch.as_tensor`` of Python data with a ``device``): on a GPU each of those
copies from pageable memory is a synchronisation too.
Two places are left out, by design:

* the pure-PyTorch reference rasteriser (``render/reference.py``): its tile lists have
  data-dependent sizes, so it reads counts back by construction; the GPU path uses gsplat;
* ``torch/optim``: the non-fused Adam used on the CPU keeps its step counter on the CPU (on the
  GPU gen4d uses the fused Adam, whose counters stay on the device).

The CUDA test runs the same steps under ``torch.cuda.set_sync_debug_mode("error")`` (gsplat's own
forward is exempt: it reads the number of tile intersections back to size its buffers).
"""

from __future__ import annotations

import collections
import math
import traceback
from dataclasses import replace

import pytest
import torch
from torch.overrides import TorchFunctionMode

import gen4d.render.core as render_core
from gen4d.cameras import Cameras, orbit
from gen4d.data.synthetic import synthetic_dataset
from gen4d.deform import ControlPointConfig, DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig, DensifyStrategy, MCMCConfig, MCMCStrategy
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.metrics import ssim
from gen4d.recon.losses import LossWeights
from gen4d.recon.optim import LearningRates, build_optimizer
from gen4d.recon.step import TrainData, training_step
from gen4d.render import RenderOptions, render

SMALL_HEX = DeformConfig(field=HexPlaneConfig(features=4, resolution=(4, 4, 4, 3), multires=(1,), width=8))
SMALL_CP = DeformConfig(field=ControlPointConfig(num_points=8, width=8, depth=1))
READS = ("__bool__", "item", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy", "nonzero")
EXEMPT = ("gen4d/render/reference.py", "torch/optim/")
"""Frames whose reads are not counted (module docstring)."""


class ReadCounter(TorchFunctionMode):
    """Counts host reads of tensor values while entered, keyed by the innermost gen4d line.

    A torch-function mode, not patched ``torch.Tensor`` methods: a Python ``__getitem__`` set on
    ``torch.Tensor`` and removed again leaves CPython's sequence slot behind, after which
    ``torch.Tensor([0-d tensors])`` (as diffusers' schedulers call it) fails in later tests."""

    def __init__(self):
        super().__init__()
        self.reads: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS:
            self._record(name)
        elif name in ("__getitem__", "__setitem__") and len(args) > 1 and _host_index(args[1]):
            self._record(_host_index(args[1]) + ("-assign" if name == "__setitem__" else ""))
        elif (
            name in ("tensor", "as_tensor")
            and kwargs.get("device") is not None
            and args
            and not isinstance(args[0], torch.Tensor)
        ):
            self._record(f"{name}(python data, device=...)")
        return func(*args, **kwargs)

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        if any(exempt in frame.filename.replace("\\", "/") for frame in stack for exempt in EXEMPT):
            return
        ours = [f for f in stack if "/gen4d/" in f.filename.replace("\\", "/") and "/tests/" not in f.filename]
        where = ours[-1] if ours else stack[-1]
        self.reads[(what, where.filename.rsplit("gen4d/", 1)[-1], where.lineno, where.line)] += 1


def _host_index(index) -> str:
    """'mask-index' for a boolean-mask index (nonzero: a sync), 'list-index' for a Python list
    (copied to the device), '' otherwise."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items):
        return "mask-index"
    return "list-index" if any(isinstance(i, list) for i in items) else ""


@pytest.fixture(scope="module")
def scene():
    return synthetic_dataset(size=24, frames=4, eval_views=0)


def _setup(scene, deform: bool, strategy_kind: str, device="cpu", field=SMALL_HEX):
    device = torch.device(device)
    model = DynamicGaussians(random_in_sphere(40, seed=0), field, deform_enabled=False)
    if deform:
        model.enable_deformation(prepare=True)
    model = model.to(device)
    optimizer = build_optimizer(model, LearningRates())
    if strategy_kind == "default":
        # Statistics every step; refinement only at multiples of `every` (none in these steps).
        strategy = DensifyStrategy(DensifyConfig(start=0, every=1000, stop=10_000, prune_screen_size=0.5))
    else:
        strategy = MCMCStrategy(MCMCConfig(start=0, every=1000, stop=10_000))
    data = TrainData(scene, device, seed=0)
    return model, optimizer, strategy, strategy.initial_state(model), data


def _steps(model, optimizer, strategy, state, data, steps, counter=None, options=None):
    options = options or RenderOptions(backend="torch", tile_size=8)
    pool = data.pool(static_orbit=False)
    weights = LossWeights(depth_smoothness=0.1)
    for step in steps:
        cameras, target, alpha, background = data.batch(pool, 2, step, "random")
        if counter is None:
            training_step(model, optimizer, cameras, target, alpha, background, weights, options, strategy, state, step)
            continue
        with counter:
            training_step(model, optimizer, cameras, target, alpha, background, weights, options, strategy, state, step)


@pytest.mark.parametrize(("deform", "strategy_kind"), [(False, "default"), (True, "default"), (True, "mcmc")])
def test_training_step_reads_nothing_back(scene, monkeypatch, deform, strategy_kind, field=SMALL_HEX):
    model, optimizer, strategy, state, data = _setup(scene, deform, strategy_kind, field=field)
    _steps(model, optimizer, strategy, state, data, range(1, 3))  # warm-up (lazy imports, caches)
    counter = ReadCounter()
    _steps(model, optimizer, strategy, state, data, range(3, 7), counter)
    assert dict(counter.reads) == {}, "host reads inside training_step:\n" + "\n".join(
        f"{count} x {key}" for key, count in counter.reads.most_common()
    )
    assert strategy_kind != "default" or bool(state["count"].sum() > 0)  # the statistics were gathered


def test_training_step_reads_nothing_back_control_points(scene, monkeypatch):
    test_training_step_reads_nothing_back(scene, monkeypatch, True, "default", field=SMALL_CP)


def test_the_counter_sees_reads(monkeypatch):
    counter = ReadCounter()
    x = torch.ones(3)
    with counter:
        bool(x.all()), x.sum().item(), float(x[0]), x.tolist(), x[x > 0], torch.nonzero(x)  # noqa: B018
        x[[0, 2]], torch.tensor([1.0], device=x.device), torch.as_tensor(x, device=x.device)  # noqa: B018
    assert sum(counter.reads.values()) == 8, counter.reads


def test_public_entry_points_still_check_values():
    gaussians = random_in_sphere(10, seed=0)
    cameras = orbit(0.0, [0.0, 90.0], width=16, height=16)
    bad = gaussians.with_(means=gaussians.means.clone().index_fill_(0, torch.tensor([3]), math.nan))
    with pytest.raises(ValueError, match=r"gaussians\.means: 3 non-finite"):
        render(bad, cameras, options=RenderOptions(backend="torch"))
    with pytest.raises(ValueError, match="background: 6 non-finite"):
        render(gaussians, cameras, torch.full((3,), math.nan), RenderOptions(backend="torch"))
    # The unchecked path renders what it is given (the caller checked its inputs once).
    out = render(bad, cameras, torch.full((3,), 0.5), RenderOptions(backend="torch", check_values=False))
    assert out.rgb.shape == (2, 16, 16, 3)
    # Shapes are always checked.
    with pytest.raises(ValueError, match=r"gaussians\.quats"):
        render(gaussians.with_(quats=gaussians.quats[:, :3]), cameras, options=RenderOptions(check_values=False))
    nan = torch.full((1, 16, 16, 3), math.nan)
    with pytest.raises(ValueError, match="pred: .* non-finite"):
        ssim(nan, torch.zeros_like(nan))
    assert torch.isnan(ssim(nan, torch.zeros_like(nan), check_values=False))


def test_datasets_check_their_values_where_they_enter(scene):
    from gen4d.data.multiview import MultiViewVideo

    images = scene.images.clone()
    images[0, 3, 4, 1] = math.nan
    with pytest.raises(ValueError, match=r"dataset\.images: 1 non-finite"):
        MultiViewVideo(images, scene.alphas, scene.cameras, scene.splits)
    alphas = scene.alphas.clone()
    alphas[1, 0, 0, 0] = math.inf
    with pytest.raises(ValueError, match=r"dataset\.alphas: 1 non-finite"):
        MultiViewVideo(scene.images, alphas, scene.cameras, scene.splits)


def test_cameras_check_values_on_construction_not_when_derived():
    cameras = orbit(0.0, [0.0, 90.0, 180.0], width=16, height=16, times=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match=r"cameras\.times: expected values in \[0, 1\]"):
        replace(cameras, times=torch.tensor([0.0, 0.5, 2.0]))
    with pytest.raises(ValueError, match=r"cameras\.fx: focal lengths must be > 0"):
        Cameras(cameras.world_to_camera, -cameras.fx, cameras.fy, cameras.cx, cameras.cy, 16, 16, cameras.times)
    with pytest.raises(ValueError, match=r"cameras\.times: expected shape \(3,\)"):
        replace(cameras, times=torch.zeros(2), check_values=False)  # shapes are always checked

    def no_reads(*args, **kwargs):
        raise AssertionError("a derived batch read values back")

    original = Cameras._check_values
    Cameras._check_values = no_reads
    try:
        derived = [cameras[torch.tensor([2, 0])], cameras[1:], cameras.to(dtype=torch.float64)]
        derived += [Cameras.cat([cameras, cameras]), cameras.resized(8, 8)]
    finally:
        Cameras._check_values = original
    assert [len(c) for c in derived] == [2, 2, 3, 6, 3]
    assert torch.equal(derived[0].times, torch.tensor([1.0, 0.0]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("deform", "strategy_kind"), [(False, "default"), (True, "default"), (True, "mcmc")])
def test_training_step_does_not_sync_on_cuda(scene, monkeypatch, deform, strategy_kind):
    """Training steps (no densification among them) under sync debug mode "error" after warm-up."""
    gsplat = pytest.importorskip("gsplat")
    real_rasterization = gsplat.rasterization

    def rasterization(*args, **kwargs):
        # gsplat sizes its tile-intersection buffers from a count read back in its forward.
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_rasterization(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(gsplat, "rasterization", rasterization)
    assert render_core.resolve_backend("auto", torch.device("cuda")) == "gsplat"
    model, optimizer, strategy, state, data = _setup(scene, deform, strategy_kind, device="cuda")
    options = RenderOptions(backend="gsplat")
    _steps(model, optimizer, strategy, state, data, range(1, 4), options=options)  # warm-up
    pool = data.pool(static_orbit=False)
    batches = [data.batch(pool, 2, step, "random") for step in range(4, 9)]  # the loop's part, not the step's
    torch.cuda.synchronize()
    weights = LossWeights(depth_smoothness=0.1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, (cameras, target, alpha, background) in zip(range(4, 9), batches, strict=True):
            training_step(model, optimizer, cameras, target, alpha, background, weights, options, strategy, state, step)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
