"""gen4d's Adam (gen4d.recon.optim.Adam): torch.optim.Adam's maths and state layout, without its
start-up import of torch._dynamo."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gen4d.recon.optim import Adam


def _problem(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(50, 3, generator=gen)), torch.nn.Parameter(torch.randn(7, generator=gen))]


def _groups(params):
    return [{"params": [params[0]], "lr": 0.1, "name": "a"}, {"params": [params[1]], "lr": 0.01, "name": "b"}]


def _train(params, optimizer, steps: int) -> None:
    for step in range(steps):
        loss = (params[0] ** 3).sum() + params[1].sin().sum()
        loss.backward()
        if step == 3:
            params[1].grad = None  # a group without gradients this step is skipped, as torch does
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("fused", [False, True])
def test_adam_is_bit_identical_to_torch_adam(fused):
    ours, theirs = _problem(), _problem()
    mine = Adam(_groups(ours), lr=0.1, eps=1e-15, fused=fused)
    reference = torch.optim.Adam(_groups(theirs), lr=0.1, eps=1e-15, fused=fused)
    _train(ours, mine, 12)
    _train(theirs, reference, 12)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    for a, b in zip(ours, theirs):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(mine.state[a][key], reference.state[b][key]), key


def test_adam_state_dict_round_trips_with_torch_adam():
    ours, theirs = _problem(), _problem()
    mine = Adam(_groups(ours), lr=0.1, eps=1e-15)
    reference = torch.optim.Adam(_groups(theirs), lr=0.1, eps=1e-15)
    _train(ours, mine, 5)
    _train(theirs, reference, 5)
    saved = mine.state_dict()
    assert saved["param_groups"][0].keys() == reference.state_dict()["param_groups"][0].keys()
    # torch's state loads into gen4d's, and continuing gives the same parameters as torch continuing.
    continued = Adam(_groups(ours), lr=0.1, eps=1e-15)
    continued.load_state_dict(reference.state_dict())
    _train(ours, continued, 5)
    _train(theirs, reference, 5)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="parameter groups"):
        Adam(_groups(ours)[:1], lr=0.1).load_state_dict(saved)


def test_building_the_optimiser_does_not_import_dynamo():
    code = (
        "import sys, torch\n"
        "from gen4d.recon.optim import Adam\n"
        "p = torch.nn.Parameter(torch.zeros(3))\n"
        "o = Adam([{'params': [p], 'name': 'means'}], lr=0.1)\n"
        "p.grad = torch.ones(3); o.step(); o.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
