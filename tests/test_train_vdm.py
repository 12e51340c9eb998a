"""gen4d train-vdm on toy clips with a tiny UNet (CPU): exact resume, 2 processes (gloo) vs 1,
data errors, checkpoint format, and the train -> sample -> dataset command line path."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="training needs diffusers (pip install 'gen4d[diffusion]')")
pytest.importorskip("accelerate", reason="training needs accelerate (pip install 'gen4d[diffusion]')")

from gen4d.config import set_fields  # noqa: E402
from gen4d.run.checkpoint import flatten_optimizer_state, unflatten_optimizer_state  # noqa: E402
from gen4d.train.config import TRAIN_PRESETS  # noqa: E402
from gen4d.train.data import global_batch_indices  # noqa: E402
from gen4d.train.synthetic import write_toy_clips  # noqa: E402

FRAMES, SIZE = 4, 8


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_clips(folder, count=4, num_frames=FRAMES, size=SIZE)
    return folder


def tiny_config(data: Path, out: Path, steps: int, **changes):
    config = copy.deepcopy(TRAIN_PRESETS["tiny"])
    config.data.paths = (str(data),)
    config.data.size = SIZE
    config.out = str(out)
    config.optim.steps = steps
    return set_fields(config, changes)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_resume_after_3_steps_equals_6_uninterrupted_steps(clips, tmp_path):
    from gen4d.train.vdm import train_vdm

    train_vdm(tiny_config(clips, tmp_path / "full", 6, checkpoint_every=3), progress=False)
    first = train_vdm(tiny_config(clips, tmp_path / "split", 3, checkpoint_every=3), progress=False)
    assert first["step"] == 3
    second = train_vdm(tiny_config(clips, tmp_path / "split", 6, checkpoint_every=3), progress=False)
    assert second["step"] == 6
    for run in ("full", "split"):  # the latest checkpoint, and the one before it (keep_checkpoints=2)
        assert json.loads((tmp_path / run / "checkpoint" / "checkpoint.json").read_text())["step"] == 6
        assert (tmp_path / run / "checkpoints" / "step_0000003" / "model.safetensors").is_file()
    for name in ("model", "ema", "training_state"):  # training_state: the optimiser's moments, RNG states
        a = read_tensors(tmp_path / "full" / "checkpoint" / f"{name}.safetensors")
        b = read_tensors(tmp_path / "split" / "checkpoint" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{name}:{key}")
    curve = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in curve] == [r["loss"] for r in resumed]
    # The exported model holds the EMA weights and records the data's motion statistics.
    spec = json.loads((tmp_path / "full" / "model" / "model.json").read_text())
    assert spec["motion_stats"]["count"] == 4 and spec["motion_stats"]["min"] == 0.0
    exported = read_tensors(tmp_path / "full" / "model" / "unet.safetensors")
    ema = read_tensors(tmp_path / "full" / "checkpoint" / "ema.safetensors")
    torch.testing.assert_close(exported["conv_out.weight"], ema["conv_out.weight"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_loss_of_one_process(clips, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, json\n"
        "from gen4d.config import from_dict\n"
        "from gen4d.train.config import TrainConfig\n"
        "from gen4d.train.vdm import train_vdm\n"
        "train_vdm(from_dict(TrainConfig, json.load(open(sys.argv[1]))), progress=False)\n"
    )
    from gen4d.config import to_dict

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    results = {}
    for procs in (1, 2):
        # Global batch 2: one process takes both clips, two processes one each. Dropout off and
        # condition dropout on (so the dropped rows are compared too).
        config = tiny_config(clips, tmp_path / f"p{procs}", 2, **{"model.dropout": 0.0, "uncond_prob": 0.5})
        (tmp_path / f"c{procs}.json").write_text(json.dumps(to_dict(config)))
        if procs == 1:
            from gen4d.train.vdm import train_vdm

            train_vdm(config, progress=False)
        else:
            launcher = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                str(procs),
                "--master_port",
                str(_free_port()),
            ]
            done = subprocess.run(
                launcher + [str(script), str(tmp_path / f"c{procs}.json")],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stderr[-3000:]
        results[procs] = [json.loads(x) for x in (tmp_path / f"p{procs}" / "metrics.jsonl").read_text().splitlines()]
    assert len(results[1]) == len(results[2]) == 2
    for one, two in zip(results[1], results[2]):
        for key in ("loss", "ldm", "mr"):
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
    a = read_tensors(tmp_path / "p1" / "checkpoint" / "model.safetensors")
    b = read_tensors(tmp_path / "p2" / "checkpoint" / "model.safetensors")
    for key in a:  # same update up to float summation order
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3, msg=key)


def test_data_and_config_errors_name_what_to_provide(clips, tmp_path):
    from gen4d.cameras import diffusion4d_orbit
    from gen4d.data.dataset import MultiViewVideo
    from gen4d.data.manifest import save_dataset
    from gen4d.train.vdm import train_vdm

    with pytest.raises(ValueError, match="6-frame videos"):
        train_vdm(tiny_config(clips, tmp_path / "a", 1, **{"data.num_frames": 6}), progress=False)
    only_orbit = MultiViewVideo(
        images=torch.rand(FRAMES, SIZE, SIZE, 3),
        alphas=torch.ones(FRAMES, SIZE, SIZE, 1),
        cameras=diffusion4d_orbit(FRAMES, size=SIZE).with_times(torch.linspace(0, 1, FRAMES)),
        splits={"orbit": torch.arange(FRAMES)},
        name="no_static",
    )
    save_dataset(only_orbit, tmp_path / "no_static")
    with pytest.raises(ValueError, match="static orbit V-bar"):
        train_vdm(tiny_config(tmp_path / "no_static", tmp_path / "b", 1), progress=False)
    with pytest.raises(ValueError, match="not divisible"):
        train_vdm(
            tiny_config(clips, tmp_path / "c", 1, **{"optim.batch_size": 3, "optim.grad_accum": 2}), progress=False
        )
    with pytest.raises(ValueError, match="codec=vae needs a base model"):
        tiny_config(clips, tmp_path / "d", 1, **{"model.codec": "vae"}).validate()
    with pytest.raises(FileNotFoundError, match="no such training data"):
        train_vdm(tiny_config(tmp_path / "missing", tmp_path / "e", 1), progress=False)
    # The failed start left no checkpoint: the corrected retry (other settings) is not blocked by it.
    train_vdm(tiny_config(clips, tmp_path / "e", 1, **{"optim.lr": 0.5}), progress=False)
    assert json.loads((tmp_path / "e" / "config.json").read_text())["optim"]["lr"] == 0.5
    # A run folder is resumed only with the same settings.
    train_vdm(tiny_config(clips, tmp_path / "f", 1), progress=False)
    with pytest.raises(ValueError, match="different config.*optim.lr"):
        train_vdm(tiny_config(clips, tmp_path / "f", 2, **{"optim.lr": 0.5}), progress=False)


def test_optimizer_state_round_trip_and_batch_order():
    param = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(3)
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    back = unflatten_optimizer_state(tensors, meta)
    fresh = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    fresh.load_state_dict(back)
    for key, value in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(fresh.state_dict()["state"][0][key], value)
    # Each epoch visits every clip once; the order is a pure function of (seed, step).
    order = torch.cat([global_batch_indices(5, step, 5, seed=3) for step in range(2)])
    assert sorted(order[:5].tolist()) == list(range(5)) and sorted(order[5:].tolist()) == list(range(5))
    assert torch.equal(global_batch_indices(5, 1, 5, seed=3), order[5:])
    assert not torch.equal(global_batch_indices(5, 0, 5, seed=4), order[:5])


def test_cli_train_then_sample_writes_a_dataset(clips, tmp_path):
    from gen4d.cli import main
    from gen4d.data.dataset import load_dataset

    run = tmp_path / "run"
    assert (
        main(
            [
                "train-vdm",
                str(clips),
                "--out",
                str(run),
                "--preset",
                "tiny",
                "--data.size",
                str(SIZE),
                "--optim.steps",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample-vdm",
                str(run / "model"),
                "--out",
                str(tmp_path / "gen"),
                "--image",
                str(clips / "clip_003" / "orbit" / "00000.png"),
                "--steps",
                "2",
                "--motion",
                "0.02",
                "--no-progress",
            ]
        )
        == 0
    )
    video = load_dataset(tmp_path / "gen")
    assert len(video.split("orbit")) == FRAMES and len(video.split("static_orbit")) == FRAMES
    meta = json.loads((tmp_path / "gen" / "manifest.json").read_text())["generator"]
    assert meta["motion"] == 0.02 and meta["static_orbit_source"] == "base model"
    # Missing inputs are user errors with a message, not tracebacks.
    assert main(["sample-vdm", str(run / "model"), "--out", str(tmp_path / "x"), "--steps", "1", "--no-progress"]) == 2
    assert main(["sample-vdm", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2


def test_user_folder_is_refused_and_untouched(clips, tmp_path):
    from gen4d.errors import UserError
    from gen4d.train.vdm import train_vdm

    user = tmp_path / "mine"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    with pytest.raises(UserError, match="not a gen4d run folder"):
        train_vdm(tiny_config(clips, user, 1), progress=False)
    assert sorted(p.name for p in user.iterdir()) == ["config.json"]
    assert (user / "config.json").read_text() == '{"mine": true}'
