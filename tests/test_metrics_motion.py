"""Motion magnitude m(V): definition, numpy/torch agreement, batching, no torch needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from gen4d.metrics.motion import motion_magnitude


def test_known_value_and_normalisation():
    static = np.zeros((4, 8, 8, 3))
    video = np.zeros((4, 8, 8, 3))
    video[1] = 0.5  # one frame differs by 0.5 everywhere: 1/T * 0.25
    assert motion_magnitude(video, static) == pytest.approx(0.25 / 4)
    # resolution independent (mean, not sum, over a frame)
    big = np.repeat(np.repeat(video, 2, axis=1), 2, axis=2)
    assert motion_magnitude(big, np.zeros_like(big)) == pytest.approx(0.25 / 4)
    assert motion_magnitude(static, static) == 0.0


def test_numpy_torch_agree_and_torch_is_differentiable():
    rng = np.random.default_rng(0)
    video, static = rng.random((2, 5, 6, 7, 3)), rng.random((2, 5, 6, 7, 3))
    ref = motion_magnitude(video, static, batch_dims=1)
    assert ref.shape == (2,)
    assert ref[0] == pytest.approx(motion_magnitude(video[0], static[0]))
    v = torch.tensor(video, requires_grad=True)
    out = motion_magnitude(v, torch.tensor(static), batch_dims=1)
    assert isinstance(out, torch.Tensor) and out.shape == (2,)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12)
    out.sum().backward()
    assert v.grad is not None
    # mixed inputs: the numpy side follows the tensor
    assert torch.allclose(motion_magnitude(torch.tensor(video), static, batch_dims=1), out.detach())


def test_errors():
    with pytest.raises(ValueError, match="differ"):
        motion_magnitude(np.zeros((4, 8, 8, 3)), np.zeros((3, 8, 8, 3)))
    with pytest.raises(ValueError, match="batch axes"):
        motion_magnitude(np.zeros((4,)), np.zeros((4,)))


def test_importable_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from gen4d.metrics.motion import motion_magnitude\n"
        "from gen4d.metrics import motion_magnitude as m2\n"
        "import numpy as np; print(m2(np.ones((2, 3)), np.zeros((2, 3))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1.0"


def test_motion_from_the_papers_sum():
    """The paper's eq. 1 sums the squared difference over a frame; gen4d's m averages it."""
    from gen4d.metrics.motion import motion_from_sum

    rng = np.random.default_rng(0)
    video, static = rng.random((6, 20, 16, 3)), rng.random((6, 20, 16, 3))
    paper = float(((video - static) ** 2).sum(axis=(1, 2, 3)).mean())  # 1/T sum_i ||I_i - Ibar_i||^2, summed
    assert motion_from_sum(paper, 20, 16) == pytest.approx(float(motion_magnitude(video, static)), rel=1e-12)
    assert motion_from_sum(1966.08, 256, 256) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="positive frame size"):
        motion_from_sum(1.0, 0, 256)


def test_sample_config_takes_one_motion_unit():
    from gen4d.config import ConfigError
    from gen4d.diffusion.vdm.pipeline import SampleConfig

    assert SampleConfig(motion_sum=100.0).motion_sum == 100.0
    with pytest.raises(ConfigError, match="not both"):
        SampleConfig(motion=0.01, motion_sum=100.0)
