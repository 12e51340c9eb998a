"""Bad input fails early with an error that names the argument and what was expected."""

from __future__ import annotations

import json

import pytest
import torch

import gen4d.render.core as render_core
from gen4d.cameras import Cameras, diffusion4d_orbit, look_at, orbit, zero123pp_poses
from gen4d.gaussians import Gaussians, from_points, random_in_sphere
from gen4d.render import RenderOptions, render


def _gaussians(n: int = 5, k: int = 1) -> Gaussians:
    return Gaussians(
        torch.zeros(n, 3),
        torch.full((n, 3), -2.0),
        torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).clone(),
        torch.zeros(n),
        torch.zeros(n, k, 3),
    )


def _cameras(count: int = 2) -> Cameras:
    return orbit(0.0, [float(30 * i) for i in range(count)], 2.0, 40.0, 16, 16)


def _render(g, cams=None, background=None, **options):
    return render(g, _cameras() if cams is None else cams, background, RenderOptions(backend="torch", **options))


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("means", torch.zeros(5, 2), r"gaussians\.means: expected shape \(N, 3\) or \(B, N, 3\), got \(5, 2\)"),
        ("means", torch.zeros(2, 2, 5, 3), r"gaussians\.means: expected shape .*got \(2, 2, 5, 3\)"),
        ("log_scales", torch.zeros(6, 3), r"gaussians\.log_scales: expected shape \(5, 3\), got \(6, 3\)"),
        ("quats", torch.zeros(5, 3), r"gaussians\.quats: expected shape \(5, 4\), got \(5, 3\)"),
        ("opacity_logits", torch.zeros(5, 1), r"gaussians\.opacity_logits: expected shape \(5,\), got \(5, 1\)"),
        ("sh", torch.zeros(5, 5, 3), r"gaussians\.sh: .*5 coefficients.*expected 1, 4, 9 or 16"),
        ("sh", torch.zeros(5, 4), r"gaussians\.sh: expected shape \(5, 'K', 3\), got \(5, 4\)"),
    ],
)
def test_wrong_gaussian_shapes(field, value, pattern):
    g = _gaussians().with_(**{field: value})
    with pytest.raises(ValueError, match=pattern):
        _render(g)


def test_mismatched_batch_sizes():
    g = _gaussians().map(lambda x: x[None].expand(3, *x.shape))
    with pytest.raises(ValueError, match=r"batched gaussians hold 3 sets but there are 2 cameras"):
        _render(g)
    mixed = g.with_(log_scales=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match=r"gaussians\.log_scales: expected shape \(3, 5, 3\), got \(2, 5, 3\)"):
        _render(mixed, _cameras(3))
    with pytest.raises(ValueError, match=r"background: expected shape \(3,\) or \(C, 3\) = \(2, 3\), got \(3, 3\)"):
        _render(_gaussians(), background=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"background: expected shape \(3,\) or \(C, 3\) = \(2, 3\), got \(4,\)"):
        _render(_gaussians(), background=torch.zeros(4))


@pytest.mark.parametrize("field", ["means", "log_scales", "quats", "opacity_logits", "sh"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters(field, bad):
    g = _gaussians()
    value = getattr(g, field).clone()
    value.view(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"gaussians\.{field}: 1 non-finite value\(s\) \(NaN or Inf\)"):
        _render(g.with_(**{field: value}))


def test_zero_gaussians_and_zero_cameras():
    with pytest.raises(ValueError, match=r"gaussians is empty \(N = 0\)"):
        _render(_gaussians(0))
    with pytest.raises(ValueError, match=r"cameras is empty"):
        _render(_gaussians(), _cameras()[torch.zeros(0, dtype=torch.long)])
    with pytest.raises(ValueError, match="count must be > 0"):
        random_in_sphere(0)
    with pytest.raises(ValueError, match="points is empty"):
        from_points(torch.zeros(0, 3))


def test_wrong_types_and_dtypes():
    with pytest.raises(TypeError, match="gaussians must be a gen4d Gaussians"):
        render({"means": torch.zeros(1, 3)}, _cameras())
    with pytest.raises(TypeError, match="cameras must be gen4d Cameras"):
        render(_gaussians(), torch.eye(4)[None])
    g = _gaussians()
    with pytest.raises(
        ValueError,
        match=r"gaussians\.log_scales: dtype torch\.float64 differs from gaussians\.means \(torch\.float32\)",
    ):
        _render(g.with_(log_scales=g.log_scales.double()))
    with pytest.raises(ValueError, match=r"gaussians\.means: expected a floating-point tensor, got torch\.int64"):
        _render(g.map(lambda x: x.long()))
    with pytest.raises(TypeError, match=r"gaussians\.means: expected a torch\.Tensor, got ndarray"):
        _render(g.with_(means=g.means.numpy()))


@pytest.mark.parametrize("field,value,pattern", [
    ("fx", torch.tensor([0.0, 20.0]), r"cameras\.fx: focal lengths must be > 0, got \[0\.0, 20\.0\]"),
    ("fy", torch.tensor([20.0, -1.0]), r"cameras\.fy: focal lengths must be > 0"),
    ("fx", torch.tensor([20.0]), r"cameras\.fx: expected shape \(2,\), got \(1,\)"),
    ("cy", torch.ones(2, 1), r"cameras\.cy: expected shape \(2,\), got \(2, 1\)"),
    ("world_to_camera", torch.eye(4)[:3][None].expand(2, 3, 4), r"cameras\.world_to_camera: expected shape \(C, 4, 4\), got \(2, 3, 4\)"),
    ("times", torch.tensor([0.0, 1.5]), r"cameras\.times: expected values in \[0, 1\]"),
    ("width", 0, r"cameras\.width/height: expected positive ints, got 0x16"),
])  # fmt: skip
def test_bad_cameras(field, value, pattern):
    cams = _cameras()
    parts = dict(
        world_to_camera=cams.world_to_camera,
        fx=cams.fx,
        fy=cams.fy,
        cx=cams.cx,
        cy=cams.cy,
        width=cams.width,
        height=cams.height,
        times=cams.times,
    )
    parts[field] = value
    with pytest.raises(ValueError, match=pattern):
        Cameras(**parts)


def test_non_finite_camera_matrix():
    cams = _cameras()
    w2c = cams.world_to_camera.clone()
    w2c[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"cameras\.world_to_camera: 1 non-finite"):
        Cameras(w2c, cams.fx, cams.fy, cams.cx, cams.cy, cams.width, cams.height, cams.times)


def test_bad_pose_builders():
    with pytest.raises(ValueError, match=r"orbit: radius must be > 0"):
        orbit(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"orbit: fov_deg must be in \(0, 180\)"):
        orbit(0.0, 0.0, 2.0, 180.0)
    with pytest.raises(ValueError, match=r"orbit: azimuths_deg has 2 values; expected 1 or 3"):
        orbit([0.0, 1.0, 2.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"zero123pp_poses: version must be 'v1.1' or 'v1.2'"):
        zero123pp_poses("v2")
    with pytest.raises(ValueError, match=r"num_views must be >= 2"):
        diffusion4d_orbit(1)
    with pytest.raises(ValueError, match=r"eyes: expected shape \(C, 3\), got \(3,\)"):
        look_at(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"points: expected shape \(\*, 3\), got \(3,\)"):
        _cameras().project(torch.zeros(3))


@pytest.mark.parametrize("backend", ["cuda", "", "Torch"])
def test_unknown_backend(backend):
    with pytest.raises(
        ValueError, match=rf"RenderOptions\.backend: unknown backend {backend!r}; expected 'auto', 'gsplat' or 'torch'"
    ):
        render(_gaussians(), _cameras(), None, RenderOptions(backend=backend))


def test_bad_tiling_options():
    with pytest.raises(ValueError, match=r"RenderOptions\.tile_size must be > 0, got 0"):
        _render(_gaussians(), tile_size=0)
    with pytest.raises(ValueError, match=r"RenderOptions\.max_elements must be > 0, got -1"):
        _render(_gaussians(), max_elements=-1)


def test_explicit_gsplat_without_cuda(monkeypatch):
    """On a machine without gsplat or without a CUDA device, backend='gsplat' says how to get it."""
    options = RenderOptions(backend="gsplat")
    hint = r"pip install 'gen4d\[cuda\]'"
    monkeypatch.setattr(render_core, "_gsplat_importable", lambda: False)
    with pytest.raises(RuntimeError, match=rf"RenderOptions\.backend='gsplat': gsplat is not installed.*{hint}"):
        render(_gaussians(), _cameras(), None, options)
    # gsplat importable but the tensors live on the CPU.
    monkeypatch.setattr(render_core, "_gsplat_importable", lambda: True)
    with pytest.raises(
        RuntimeError, match=rf"RenderOptions\.backend='gsplat' needs tensors on a CUDA device \(got cpu\).*{hint}"
    ):
        render(_gaussians(), _cameras(), None, options)
    # 'auto' falls back to the torch reference on the CPU.
    out = render(_gaussians(), _cameras(), None, RenderOptions(backend="auto"))
    assert out.backend == "torch"


# -- bad files and options through the CLI: exit code 2, one line naming the file or option ---------------------
def _saved_run(folder):
    """A minimal run folder: RUN/checkpoint with a tiny model (no training)."""
    from gen4d.deform import DeformConfig, HexPlaneConfig
    from gen4d.gaussians.dynamic import DynamicGaussians
    from gen4d.recon import save_checkpoint

    config = DeformConfig(field=HexPlaneConfig(features=2, resolution=(4, 4, 4, 2), multires=(1,), width=8))
    model = DynamicGaussians(random_in_sphere(20, radius=0.5, seed=0), config)
    save_checkpoint(folder, model, training_state={"step": torch.zeros(1)}, info={"step": 1})
    return folder


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    for needle in needles:
        assert str(needle) in err[0], err
    return err[0]


@pytest.mark.parametrize(
    "damage,needle",
    [
        (lambda ck: (ck / "model.safetensors").write_bytes(b"\x00" * 12), "model.safetensors: not a readable safetensors"),
        (lambda ck: (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:100]),
         "model.safetensors: not a readable safetensors"),
        (lambda ck: (ck / "model.json").write_text("[1]"), "checkpoint: not a loadable gen4d model checkpoint"),
        (lambda ck: (ck / "model.json").write_text('{"format": "gen4d.DynamicGaussians/1"}'),
         "lacks the 'deform' field"),
    ],
)  # fmt: skip
def test_damaged_checkpoint_is_one_line(tmp_path, capsys, damage, needle):
    from gen4d.cli import main

    run = _saved_run(tmp_path / "run")
    damage(run / "checkpoint")
    assert main(["export", str(run), "--out", str(tmp_path / "a.splat4d")]) == 2
    _one_error_line(capsys, needle, run / "checkpoint")
    assert not (tmp_path / "a.splat4d").exists()


def test_damaged_training_state_names_the_file(tmp_path):
    from gen4d.run.checkpoint import load_tree

    run = _saved_run(tmp_path / "run")
    (run / "checkpoint" / "training_state.safetensors").write_text("garbage")
    with pytest.raises(ValueError, match=r"training_state\.safetensors: not a readable safetensors file"):
        load_tree(run / "checkpoint", "training_state")


def test_weight_files_that_are_not_state_dicts(tmp_path):
    from gen4d.metrics.fvd import InceptionI3d
    from gen4d.metrics.perceptual import VGG16Features

    garbage, tensor = tmp_path / "garbage.pth", tmp_path / "tensor.pth"
    garbage.write_text("not a checkpoint\n")
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"garbage\.pth: not readable as a torchvision VGG16 checkpoint"):
        VGG16Features().load_torchvision(garbage)
    with pytest.raises(ValueError, match=r"tensor\.pth: expected a torchvision VGG16 checkpoint as a state dict"):
        VGG16Features().load_torchvision(tensor)
    with pytest.raises(ValueError, match=r"garbage\.pth: not readable as an Inception-v1 I3D checkpoint"):
        InceptionI3d().load_checkpoint(garbage)


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", "mps"])
def test_bad_device_names_the_option_and_writes_nothing(tmp_path, capsys, device):
    from gen4d.cli import main
    from gen4d.run.device import resolve_device

    with pytest.raises(ValueError, match=rf"--device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got '{device}'"):
        resolve_device(device)
    out = tmp_path / "run"
    assert main(["reconstruct", str(tmp_path / "data"), "--out", str(out), "--device", device, "--no-progress"]) == 2
    _one_error_line(capsys, "--device")
    assert not out.exists()  # refused before the run folder is made


def test_config_file_errors_name_the_file(tmp_path, capsys):
    from gen4d.cli import main

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"coarse": {"bogus": 1}}))
    args = ["reconstruct", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--config", str(config)]
    assert main(args + ["--no-progress"]) == 2
    _one_error_line(capsys, config, "coarse.bogus: unknown config key")
    config.write_text('{"lr": {"means": Infinity}}')
    assert main(args + ["--no-progress"]) == 2
    _one_error_line(capsys, config, "lr.means: expected a finite number")


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_option_values_are_refused(tmp_path, capsys, value):
    from gen4d.cli import main

    with pytest.raises(SystemExit) as info:
        main(["reconstruct", str(tmp_path / "data"), "--out", str(tmp_path / "run"), f"--lr.means={value}"])
    assert info.value.code == 2
    assert f"argument --lr.means: expected a finite number, got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _user_folder(path):
    path.mkdir()
    (path / "report.md").write_text("my notes")
    (path / "bench.md").write_text("my table")
    return path


def test_eval_out_never_writes_into_a_users_folder(tmp_path, capsys):
    from gen4d.cli import main
    from gen4d.commands.eval import check_out
    from gen4d.errors import UserError

    run, user = tmp_path / "run", _user_folder(tmp_path / "mine")
    run.mkdir()
    assert main(["eval", str(run), "--gt", str(tmp_path / "gt"), "--out", str(user)]) == 2
    _one_error_line(capsys, f"--out {user} is not empty and holds no gen4d eval report")
    assert (user / "report.md").read_text() == "my notes" and not (user / "report.json").exists()
    # an earlier gen4d report is replaced only with --overwrite
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.json").write_text(json.dumps({"format": "gen4d.eval/1"}))
    with pytest.raises(UserError, match="already holds a gen4d eval report; pass --overwrite"):
        check_out(earlier, overwrite=False)
    check_out(earlier, overwrite=True)
    check_out(tmp_path / "new", overwrite=False)


def test_bench_out_never_writes_into_a_users_folder(tmp_path, capsys):
    from gen4d.cli import main

    user = _user_folder(tmp_path / "mine")
    data = tmp_path / "data"
    data.mkdir()
    assert main(["bench", str(data), "--out", str(user), "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, f"--out {user} is not empty and holds no gen4d benchmark")
    assert sorted(p.name for p in user.iterdir()) == ["bench.md", "report.md"]
    assert (user / "bench.md").read_text() == "my table"


def test_render_out_never_writes_into_a_users_folder(tmp_path):
    from gen4d.data.blender import RenderConfig, render_asset
    from gen4d.errors import UserError

    user = _user_folder(tmp_path / "mine")
    with pytest.raises(UserError, match=r"is not empty and holds no gen4d render \(manifest\.json\)"):
        render_asset("procedural:1", user, RenderConfig(size=16), progress=False)
    assert sorted(p.name for p in user.iterdir()) == ["bench.md", "report.md"]


def test_reconstruct_with_a_mistyped_dataset_leaves_no_run_folder(tmp_path, capsys):
    from gen4d.cli import main

    out = tmp_path / "run"
    args = ["reconstruct", str(tmp_path / "no_such_data"), "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(args) == 2
    _one_error_line(capsys, tmp_path / "no_such_data")
    assert not out.exists()  # so the corrected command runs without --resume / --overwrite


def test_reconstruct_size_beyond_the_limit_names_the_option(tmp_path, capsys):
    from gen4d.cli import main

    out = tmp_path / "run"
    assert main(["reconstruct", "x", "--out", str(out), "--size", "100000", "--device", "cpu", "--no-progress"]) == 2
    _one_error_line(capsys, "--size: expected at most 8192 pixels per side")
    assert not out.exists()
