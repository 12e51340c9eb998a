"""The ``gen4d`` command's own behaviour: fast --help / --version, one-line errors that name the
option, and every option checked before any work starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gen4d.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\n"
        "from gen4d.cli import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "usage: gen4d" in result.stdout and "reconstruct" in result.stdout
    assert "gen4d 0." in result.stdout
    assert result.stdout.strip().endswith("NO-TORCH")


def test_version(capsys):
    from gen4d import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gen4d {__version__}"


def test_command_help_still_lists_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "--help"])
    out = capsys.readouterr().out
    assert "--init.num_points" in out and "--preset" in out


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["reconstruct", "DATA", "--out", "RUN", "--preset", "x"],
         "gen4d reconstruct: error: argument --preset: invalid choice: 'x' (choose from"),
        (["reconstruct", "DATA", "--out", "RUN", "--size", "abc"],
         "gen4d reconstruct: error: argument --size: expected an integer, got 'abc'"),
        (["reconstruct", "DATA", "--out", "RUN", "--backend", "cuda"],
         "gen4d reconstruct: error: argument --backend: expected one of 'auto', 'gsplat', 'torch', got 'cuda'"),
        (["video", "IN", "--out", "RUN", "--views.black_background_prob", "half"],
         "gen4d video: error: argument --views.black_background_prob: expected a number, got 'half'"),
        (["reconstruct", "DATA", "--out", "RUN", "--output.video", "maybe"],
         "gen4d reconstruct: error: argument --output.video: expected true or false, got 'maybe'"),
        (["nosuchcommand"], "gen4d: error: argument COMMAND: invalid choice: 'nosuchcommand'"),
        (["reconstruct", "DATA"], "gen4d reconstruct: error: the following arguments are required: --out"),
    ],
)  # fmt: skip
def test_argparse_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err  # the error and the pointer to --help, no usage dump
    assert err[0].startswith(expected), err[0]
    prog = err[0].split(": error:")[0]
    assert err[1] == f"(see '{prog} --help')"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["reconstruct", "{data}", "--out", "{out}", "--size", "-1"], "--size: expected an integer >= 0, got -1"),
        (["reconstruct", "{data}", "--out", " "], "--out is empty; pass a folder path"),
        (["render", "procedural:1", "--out", ""], "--out is empty; pass a folder path"),
        (["reconstruct", "{data}", "--out", "{out}", "--init.num_points", "0"],
         "--init.num_points: expected an integer > 0, got 0"),
        (["reconstruct", "{data}", "--out", "{out}", "--output.video_frames", "0"],
         "--output.video_frames: expected an integer > 0, got 0"),
        (["reconstruct", "{data}", "--out", "{out}", "--init.opacity", "1.5"],
         "--init.opacity: expected a number in [0.0, 1.0], got 1.5"),
        (["reconstruct", "{data}", "--out", "{out}", "--coarse.cameras_per_step", "0"],
         "--coarse.cameras_per_step: expected an integer > 0, got 0"),
        (["demo", "--out", "{out}", "--log_every", "0"], "--log_every: expected an integer > 0, got 0"),
        (["video", "{data}", "--out", "{out}", "--steps", "0"], "--steps: expected an integer > 0, got 0"),
        (["video", "{data}", "--out", "{out}", "--input.size", "-5"], "--input.size: expected an integer > 0, got -5"),
        (["video", "{data}", "--out", "{out}", "--output.round_frames", "0"],
         "--output.round_frames: expected an integer > 0, got 0"),
        (["video", "{data}", "--out", "{out}", "--views.sizes", "128,0"], "--views.sizes: expected integers > 0"),
        (["train-vdm", "{data}", "--out", "{out}", "--optim.lr", "0"], "--optim.lr: expected a number > 0, got 0.0"),
        (["train-vdm", "{data}", "--out", "{out}", "--data.size", "0"], "--data.size: expected an integer > 0, got 0"),
        (["sample-vdm", "{data}", "--out", "{out}", "--steps", "0"], "--steps: expected an integer > 0, got 0"),
        (["reconstruct", "{data}", "--out", "{out}", "--densify.every", "0"],
         "--densify.every: expected an integer > 0, got 0"),
        (["reconstruct", "{data}", "--out", "{out}", "--lr.means=-1e-3"],
         "--lr.means: expected a number >= 0, got -0.001"),
        (["reconstruct", "{data}", "--out", "{out}", "--deform.field.resolution", "32,32,0,8"],
         "--deform.field.resolution: expected integers > 0, got (32, 32, 0, 8)"),
        (["reconstruct", "{data}", "--out", "{out}", "--loss.l1", "-1"], "--loss.l1: expected a number >= 0, got -1.0"),
        (["reconstruct", "{data}", "--out", "{out}", "--densify", "mcmc", "--densify.cap", "0"],
         "--densify.cap: expected an integer > 0, got 0"),
        (["reconstruct", "{data}", "--out", "{out}", "--preset", "demo", "--deform.field.num_points", "64"],
         "--deform.field.num_points: is a field of deform.field control_points, but deform.field is 'hexplane' here "
         "(choose it with --deform.field control_points)"),
        (["video", "{data}", "--out", "{out}", "--sds.anneal.min_start", "1.5"],
         "--sds.anneal.min_start: expected a number in [0.0, 1.0], got 1.5"),
        (["video", "{data}", "--out", "{out}", "--multiview.steps", "0"],
         "--multiview.steps: expected an integer > 0, got 0"),
        (["eval", "{data}", "--gt", "{data}", "--out", "{out}", "--metrics", "psnr,fid"],
         "--metrics: unknown ['fid']; expected a subset of psnr, ssim, lpips, clip, fvd"),
        (["eval", "{data}", "--gt", "{data}", "--out", "{out}", "--orbit_views", "0"],
         "--orbit_views: expected an integer > 0, got 0"),
        (["bench", "{data}", "--out", "{out}", "--iterations", "5"],
         "--iterations: expected two integers >= 0 (coarse, fine), got (5,)"),
        (["curate", "{data}", "--out", "{out}", "--ssim_low", "0.99"],
         "--ssim_low: expected at most ssim_high = 0.95, got 0.99"),
        (["curate", "{data}", "--out", "{out}", "--border_pixels", "0"],
         "--border_pixels: expected an integer > 0, got 0"),
        (["video", "{data}", "--out", "{out}", "--deform.field", "control_points",
          "--deform.field.neighbours", "0"],
         "--deform.field.neighbours: expected an integer > 0, got 0"),
    ],
)  # fmt: skip
def test_bad_option_values_fail_before_any_work(tmp_path, capsys, argv, message):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    argv = [a.format(data=data, out=out) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == f"gen4d {argv[0]}: error: {message}" or err[0].startswith(f"gen4d {argv[0]}: error: {message}")
    assert not out.exists()  # nothing was started


def test_stored_config_errors_name_the_file_and_field(tmp_path):
    from gen4d.config import load_config, to_dict
    from gen4d.io import write_json
    from gen4d.recon.construct import PRESETS, ConstructConfig

    data = to_dict(PRESETS["demo"])
    data["init"]["num_points"] = "many"
    path = write_json(tmp_path / "config.json", data)
    with pytest.raises(ValueError, match=r"config\.json: init\.num_points: expected an integer, got 'many'"):
        load_config(ConstructConfig, path)
    data["init"]["num_points"] = -3
    write_json(path, data)
    with pytest.raises(ValueError, match=r"config\.json: init\.num_points: expected an integer > 0, got -3"):
        load_config(ConstructConfig, path)


def test_sample_vdm_next_hint_is_a_valid_reconstruct_command(tmp_path):
    import shlex

    from gen4d.cli import build_parser
    from gen4d.commands.sample_vdm import next_command

    hint = next_command(tmp_path / "my gen")
    words = shlex.split(hint)
    assert words[0] == "gen4d"
    parser, _ = build_parser(["reconstruct"])
    args = parser.parse_args(words[1:])  # exits (SystemExit 2) when --out is missing
    assert args.data == str(tmp_path / "my gen") and args.out == str(tmp_path / "my gen_4d")


def test_hints_name_options_that_exist():
    """The CLIP hint must name the eval option (--clip_model), not an ambiguous prefix (--clip)."""
    import inspect

    from gen4d.cli import build_parser
    from gen4d.metrics import clip

    source = inspect.getsource(clip)
    assert "gen4d eval --clip_model FOLDER" in source and "gen4d eval --clip FOLDER" not in source
    parser, _ = build_parser(["eval"])
    args = parser.parse_args(["eval", "RUN", "--gt", "DATA", "--out", "R", "--clip_model", "FOLDER"])
    assert getattr(args, "cfg:clip_model") == "FOLDER"


def test_thread_count_defaults():
    from gen4d.threads import default_threads

    assert default_threads({}, cores=1, load=0.0)[0] == 1
    assert default_threads({}, cores=2, load=0.2)[0] == 2  # an idle small box uses both cores
    assert default_threads({}, cores=2, load=1.0)[0] == 1  # a busy one: OpenMP threads would wait on each other
    assert default_threads({}, cores=2, load=6.0)[0] == 1
    assert default_threads({}, cores=8, load=0.0)[0] == 4
    assert default_threads({}, cores=8, load=6.0)[0] == 2
    assert default_threads({}, cores=64, load=0.0)[0] == 4
    assert default_threads({"OMP_NUM_THREADS": "3"}, cores=2) == (3, "OMP_NUM_THREADS=3")
    assert default_threads({"OMP_NUM_THREADS": "3", "GEN4D_THREADS": "2"}, cores=2)[0] == 2
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS: expected a whole number of threads > 0, got 'many'"):
        default_threads({"OMP_NUM_THREADS": "many"}, cores=2)


def test_cli_sets_torch_threads():
    code = (
        "import os\n"
        "os.environ.pop('OMP_NUM_THREADS', None)\n"
        "os.environ['GEN4D_THREADS'] = '1'\n"
        "import torch\n"
        "torch.set_num_threads(2)\n"  # what torch would pick on this 2-core machine
        "from gen4d.cli import main\n"
        "assert main(['info']) == 0\n"
        "print('THREADS', torch.get_num_threads())\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "THREADS 1" in result.stdout


def test_reconstruct_on_cpu_defaults_to_the_demo_preset(monkeypatch, capsys, tmp_path):
    import torch

    from gen4d.commands.reconstruct import resolve_config
    from gen4d.recon.construct import PRESETS

    parser, _ = build_parser(["reconstruct"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = resolve_config(parser.parse_args(["reconstruct", "DATA", "--out", str(tmp_path / "run")]))
    assert config == PRESETS["demo"]
    note = capsys.readouterr().out
    assert "preset 'demo'" in note and "--preset default" in note and "min" in note
    # An explicit preset, or a GPU, keeps the GPU preset (and says nothing).
    argv = ["reconstruct", "DATA", "--out", str(tmp_path / "run"), "--preset", "default"]
    config = resolve_config(parser.parse_args(argv))
    assert config == PRESETS["default"] and capsys.readouterr().out == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    argv = ["reconstruct", "DATA", "--out", str(tmp_path / "r2")]
    assert resolve_config(parser.parse_args(argv)) == PRESETS["default"]


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["curate", "A", "--out", "o.jsonl", "--workers", "-1"], "argument --workers: expected an integer >= 0, got '-1'"),
        (["curate", "A", "--out", "o.jsonl", "--size", "abc"], "argument --size: expected an integer >= 8, got 'abc'"),
        (["curate", "A", "--out", "o.jsonl", "--size", "-1"], "argument --size: expected an integer >= 8, got '-1'"),
        (["curate", "A", "--out", "o.jsonl", "--frames", "1"], "argument --frames: expected an integer >= 2, got '1'"),
        (["view", "RUN", "--port", "70000"], "argument --port: expected an integer >= 1 and <= 65535, got '70000'"),
        (["view", "RUN", "--fps", "0"], "argument --fps: expected a number > 0 and <= 120, got '0'"),
        (["view", "RUN", "--fps", "nan"], "argument --fps: expected a number > 0 and <= 120, got 'nan'"),
    ],
)  # fmt: skip
def test_plain_options_are_range_checked(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"gen4d {argv[0]}: error: {expected}", err


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    (tmp_path / "assets").mkdir()
    out = blocker / "curated.jsonl"
    assert main(["curate", str(tmp_path / "assets"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gen4d curate: error: {blocker}"), err
    assert ("a file is in the way" in err[0] or "not a folder" in err[0]) and "Traceback" not in err[0]


def test_an_asset_list_that_is_a_folder_says_so(tmp_path, capsys):
    assert main(["render", "--assets", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--assets {tmp_path}: a folder (expected a text file, one asset path or id a line)" in err, err
    assert not (tmp_path / "out").exists()
