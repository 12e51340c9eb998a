"""The run engine (gen4d.run): run-folder marker and policy, checkpoints without pickle, wall-time
checkpoints, the resume config check, and what an interrupt says."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gen4d.cli import main as cli_main
from gen4d.data.synthetic import synthetic_dataset
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.densify import DensifyConfig
from gen4d.errors import RunInterrupted, UserError
from gen4d.recon import load_run
from gen4d.recon.construct import ConstructConfig, InitConfig, OutputConfig, StageConfig, reconstruct
from gen4d.run import MARKER, open_run
from gen4d.run.checkpoint import load_tree, save_tree, write_checkpoint
from gen4d.run.folder import config_differences

SMALL_HEX = HexPlaneConfig(features=8, resolution=(8, 8, 8, 5), multires=(1, 2), bounds=1.0, width=32)
NO_OUTPUTS = OutputConfig(ply=False, video=False, renders=False, lpips=False, evaluate=False)


@pytest.fixture(scope="module")
def scene():
    return synthetic_dataset(size=24, frames=6, eval_views=2)


@pytest.fixture(scope="module")
def data(scene, tmp_path_factory):
    from gen4d.data.manifest import save_dataset

    folder = tmp_path_factory.mktemp("data") / "scene"
    save_dataset(scene, folder)
    return folder


def tiny(coarse=2, fine=3, **changes) -> ConstructConfig:
    config = ConstructConfig(
        device="cpu", backend="torch", tile_size=8, init=InitConfig(num_points=40),
        coarse=StageConfig(iterations=coarse, cameras_per_step=1), fine=StageConfig(iterations=fine, cameras_per_step=1),
        deform=DeformConfig(field=SMALL_HEX),
        densify=DensifyConfig(start=2, stop=100, every=2, reset_every=0, max_gaussians=160),
        log_every=2, checkpoint_every=0, output=NO_OUTPUTS,
    )  # fmt: skip
    return replace(config, **changes)


class _Payload:
    """Unpickling this creates the file ``path``: what an attacker's training_state.pt would do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- no pickle where a run folder is read ---------------------------------------------------------------
def test_planted_pickle_is_never_executed(scene, data, tmp_path, capsys):
    run = tmp_path / "run"
    reconstruct(scene, tiny(), run, progress=False, echo=None, stop_after=2)
    pwned = tmp_path / "pwned"

    def plant():
        for name in ("training_state.pt", "optimizer.pt", "model.pt"):
            (run / "checkpoint" / name).write_bytes(pickle.dumps(_Payload(pwned)))

    # gen4d's own loading: the model of a run (eval, exporters, view), the eval command, resume
    plant()
    load_run(run)
    report = tmp_path / "report"
    assert cli_main(["eval", str(run), "--gt", str(data), "--out", str(report), "--device", "cpu"]) in (0, 2)
    assert not pwned.exists(), "a pickle in the run folder was executed"
    with_ply = tiny(output=replace(NO_OUTPUTS, ply=True))
    reconstruct(scene, with_ply, run, resume=True, progress=False, echo=None)
    assert not pwned.exists(), "a pickle in the run folder was executed"
    plant()
    # gen4d view's loading: the PLY frames only
    from gen4d.gaussians import load_ply
    from gen4d.viewer import find_ply_sequence

    frames = [load_ply(f) for f in find_ply_sequence(run)]
    assert len(frames) == scene.num_frames and not pwned.exists()
    # the same payload under a gen4d file name is refused (safetensors), not executed
    (run / "checkpoint" / "training_state.safetensors").write_bytes(pickle.dumps(_Payload(pwned)))
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error for a file that is not one
        load_tree(run / "checkpoint", "training_state")
    assert not pwned.exists()


def test_tree_round_trip_keeps_optimizer_state_exactly(tmp_path):
    param = torch.nn.Parameter(torch.randn(5, 3))
    optimizer = torch.optim.Adam([{"params": [param], "name": "means"}], lr=1e-3, betas=(0.8, 0.95))
    param.grad = torch.randn(5, 3)
    optimizer.step()
    tree = {"optimizer": optimizer.state_dict(), "history": [{"step": 1, "psnr": 20.5}], "rng": torch.get_rng_state()}
    save_tree(tmp_path, "state", tree)
    loaded = load_tree(tmp_path, "state")
    assert loaded["optimizer"]["param_groups"] == tree["optimizer"]["param_groups"]
    assert loaded["history"] == tree["history"] and torch.equal(loaded["rng"], tree["rng"])
    for key, value in tree["optimizer"]["state"][0].items():
        assert torch.equal(loaded["optimizer"]["state"][0][key], value), key
    again = torch.optim.Adam([{"params": [param], "name": "means"}], lr=1e-3)
    again.load_state_dict(loaded["optimizer"])
    assert again.param_groups[0]["betas"] == (0.8, 0.95)
    with pytest.raises(TypeError, match="cannot store"):
        save_tree(tmp_path, "bad", {"x": object()})


def test_keep_last_n_checkpoints(tmp_path):
    for step in (1, 2, 3, 4):
        write_checkpoint(tmp_path, lambda folder: None, {"step": step}, keep=3)
    assert json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())["step"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    write_checkpoint(tmp_path / "one", lambda folder: None, {"step": 1})
    write_checkpoint(tmp_path / "one", lambda folder: None, {"step": 2})
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["checkpoint"]


# -- the run-folder policy ------------------------------------------------------------------------------
def _user_folder(path: Path) -> Path:
    (path / "videos").mkdir(parents=True)
    (path / "videos" / "holiday.mp4").write_bytes(b"mine")
    (path / "renders").mkdir()
    (path / "renders" / "final.png").write_bytes(b"mine")
    (path / "config.json").write_text('{"mine": true}')
    return path


def _unchanged(path: Path) -> bool:
    return (
        (path / "videos" / "holiday.mp4").read_bytes() == b"mine"
        and (path / "renders" / "final.png").read_bytes() == b"mine"
        and (path / "config.json").read_text() == '{"mine": true}'
        and not (path / MARKER).exists()
    )


@pytest.mark.parametrize(
    "command", ["reconstruct", "reconstruct --resume", "reconstruct --overwrite", "demo", "demo --resume"]
)
def test_user_folder_is_refused_and_untouched(data, tmp_path, capsys, command):
    user = _user_folder(tmp_path / "mine")
    name, *flags = command.split()
    args = [name] + ([str(data)] if name == "reconstruct" else ["--data", str(data)])
    code = cli_main(
        args + ["--out", str(user), "--no-progress", "--coarse.iterations", "1", "--fine.iterations", "1", *flags]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(user) in err and "another --out" in err, err
    assert "Traceback" not in err
    assert _unchanged(user)


def test_overwrite_deletes_only_what_gen4d_wrote(scene, tmp_path):
    run = tmp_path / "run"
    reconstruct(scene, tiny(), run, progress=False, echo=None, stop_after=2)
    (run / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="--resume to continue it"):
        reconstruct(scene, tiny(), run, progress=False, echo=None)
    reconstruct(scene, tiny(), run, overwrite=True, progress=False, echo=None)
    assert (run / "notes.txt").read_text() == "my notes"
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["step"] == 5
    assert json.loads((run / MARKER).read_text())["kind"] == "reconstruct"


def test_overwrite_ignores_names_a_crafted_marker_lists(tmp_path):
    """The marker is a file in the folder: --overwrite deletes the run kind's own entries, not what it lists."""
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.txt").write_text("keep")
    run = tmp_path / "run"
    open_run(run, "reconstruct", ("checkpoint", "log.txt"))
    (run / "mine.txt").write_text("mine")
    (run / "log.txt").write_text("old log")
    marker = json.loads((run / MARKER).read_text())
    marker["entries"] = ["../precious", "mine.txt", "log.txt"]
    (run / MARKER).write_text(json.dumps(marker))
    open_run(run, "reconstruct", ("checkpoint", "log.txt"), overwrite=True)
    assert (outside / "data.txt").read_text() == "keep" and (run / "mine.txt").read_text() == "mine"
    assert not (run / "log.txt").exists()


def test_demo_replaces_only_its_own_run(data, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--data", str(data), "--no-progress", "--coarse.iterations", "1",
            "--fine.iterations", "2", "--output.video", "false", "--output.ply", "false", "--output.renders", "false"]  # fmt: skip
    assert cli_main(args) == 0
    (out / "keep.txt").write_text("mine")
    assert cli_main(args) == 0 and "replacing the previous run" in capsys.readouterr().out
    assert (out / "keep.txt").read_text() == "mine"
    assert cli_main(args + ["--resume"]) == 0  # --resume continues the demo's own run (here: already complete)
    assert "resumed from" in (out / "log.txt").read_text() and (out / "keep.txt").read_text() == "mine"
    # a run of `gen4d reconstruct` is not the demo's to replace
    run = tmp_path / "run"
    assert cli_main(["reconstruct", str(data), "--out", str(run), "--no-progress", "--preset", "demo",
                     "--coarse.iterations", "1", "--fine.iterations", "1", "--output.video", "false"]) == 0  # fmt: skip
    assert cli_main(["demo", *args[1:2], str(run), *args[3:]]) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["file", "under_file"])
def test_bad_out_paths_are_user_errors(data, tmp_path, capsys, case):
    target = tmp_path / "a_file"
    target.write_text("x")
    out = target if case == "file" else target / "run"
    code = cli_main(["reconstruct", str(data), "--out", str(out), "--no-progress", "--fine.iterations", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and "Traceback" not in err, err
    assert target.read_text() == "x"


def test_open_run_kinds_and_empty_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = open_run(empty, "video", ["config.json"])
    assert not run.existed and json.loads((empty / MARKER).read_text())["kind"] == "video"
    with pytest.raises(UserError, match="holds a gen4d video run, not a reconstruct run"):
        open_run(empty, "reconstruct", ["config.json"])
    with pytest.raises(UserError, match="exclude each other"):
        open_run(tmp_path / "new", "video", [], resume=True, overwrite=True)
    (empty / MARKER).write_text("{not json")  # a damaged marker: the folder is not provably gen4d's
    with pytest.raises(UserError, match=rf"is not a gen4d run folder \(its {MARKER} is damaged\)"):
        open_run(empty, "video", ["config.json"], overwrite=True)
    assert (empty / MARKER).read_text() == "{not json"


# -- resume config, wall-time checkpoints, interrupts ----------------------------------------------------
def test_resume_with_a_changed_config_names_the_fields(scene, tmp_path):
    run = tmp_path / "run"
    reconstruct(scene, tiny(), run, progress=False, echo=None, stop_after=3)
    changed = tiny(seed=3)
    changed = replace(changed, lr=replace(changed.lr, means=1e-2))
    with pytest.raises(UserError, match=r"lr\.means, seed") as info:
        reconstruct(scene, changed, run, resume=True, progress=False, echo=None)
    assert "fine.iterations" in str(info.value)  # says what may change
    # fields that may change on resume: the fine stage's length, outputs, logging
    longer = tiny(fine=4, log_every=1, output=replace(NO_OUTPUTS, ply=True))
    metrics = reconstruct(scene, longer, run, resume=True, progress=False, echo=None)
    assert metrics["iterations"] == 6 and len(list((run / "ply").glob("*.ply"))) == 6
    assert config_differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, ["a.c"]) == []


def _interrupt_at(monkeypatch, call: int) -> None:
    from gen4d.recon import construct

    real_step = construct.training_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(construct, "training_step", interrupted)


def test_wall_time_checkpoint_keeps_work_on_interrupt(scene, tmp_path, monkeypatch):
    """checkpoint_seconds=0: a checkpoint after every step, although checkpoint_every is 0 and the
    coarse stage (a checkpoint point) is not over."""
    _interrupt_at(monkeypatch, 4)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted, match="--resume continues from step 3"):
        reconstruct(scene, tiny(coarse=5, fine=2, checkpoint_seconds=0.0), run, progress=False, echo=None)
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["step"] == 3


def test_interrupt_before_any_checkpoint_says_nothing_was_saved(scene, data, tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, 2)
    run = tmp_path / "run"
    code = cli_main(["reconstruct", str(data), "--out", str(run), "--no-progress", "--device", "cpu", "--preset", "demo",
                     "--coarse.iterations", "4", "--checkpoint_seconds", "-1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130 and "nothing was saved" in err and "finished work is kept" not in err, err
    assert not (run / "checkpoint").exists()


# -- the engine's hot path ----------------------------------------------------------------------------
_READBACKS = {"item", "tolist", "__float__", "__int__", "__bool__", "numpy"}


class _CountingTensor(torch.Tensor):
    """Counts the calls that read a tensor back to the host (a device sync on a GPU)."""

    readbacks = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in _READBACKS:
            _CountingTensor.readbacks += 1
        return super().__torch_function__(func, types, args, kwargs or {})


class _ToyTask:
    """Fits one number to 3 with SGD; its losses are counting tensors."""

    title = "toy"
    nan_hint = "Lower the learning rate"
    resume_how = "--resume"

    def __init__(self):
        self.x = torch.nn.Parameter(torch.zeros(()))
        self.optimizer = torch.optim.SGD([self.x], lr=0.1)

    def step(self, step):
        loss = (self.x - 3.0).square()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return {"loss": loss.detach().as_subclass(_CountingTensor)}

    def describe(self, step, means):
        return {"loss": f"{means['loss']:.4f}"}

    def record(self, step, means, steps, train_time):
        pass

    def should_stop(self, step):
        return False

    def must_checkpoint(self, step):
        return False

    def evaluate_due(self, step):
        return False

    def evaluate(self, step, train_time):
        pass

    def parameters(self):
        return [self.x]

    def state(self):
        return {"optimizer": self.optimizer.state_dict()}

    def load_state(self, state):
        self.optimizer.load_state_dict(state["optimizer"])

    def write_checkpoint(self, folder):
        pass

    def checkpoint_info(self, step):
        return {}


def test_engine_reads_losses_back_only_at_logging_steps(tmp_path):
    from gen4d.run import Engine, LoopSettings

    _CountingTensor.readbacks = 0
    settings = LoopSettings(total_steps=20, log_every=5, checkpoint_every=0, checkpoint_seconds=-1)
    result = Engine(tmp_path, settings, torch.device("cpu"), progress=False).run(_ToyTask())
    assert result.step == 20 and not result.stopped_early
    assert _CountingTensor.readbacks == 4  # one read-back per logging step (5, 10, 15, 20), none per step
    assert json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text())["step"] == 20


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root can write anywhere")  # fmt: skip
def test_unwritable_out_is_a_user_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            open_run(locked / "run", "reconstruct", ["config.json"])
    finally:
        locked.chmod(0o700)
