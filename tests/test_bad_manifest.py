"""A hand-edited manifest with a wrong field fails with one message naming the file, the image
and the field (not a TypeError traceback or ``invalid literal for int()``)."""

from __future__ import annotations

import json

import pytest
import torch

from gen4d.cameras import orbit
from gen4d.cli import main
from gen4d.data.dataset import MultiViewVideo
from gen4d.data.manifest import load_manifest, save_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_manifest") / "toy"
    times = torch.arange(3) / 2
    cameras = orbit(0.0, 120.0 * torch.arange(3), 2.0, 40.0, 8, 8, times)
    video = MultiViewVideo(
        images=torch.rand(3, 8, 8, 3),
        alphas=torch.ones(3, 8, 8, 1),
        cameras=cameras,
        splits={"orbit": torch.arange(3)},
        num_frames=3,
        name="toy",
    )
    save_dataset(video, folder)
    return folder


def _edited(dataset, tmp_path, edit):
    data = json.loads((dataset / "manifest.json").read_text())
    edit(data)
    folder = tmp_path / "edited"
    folder.mkdir()
    for png in dataset.glob("*.png"):
        (folder / png.name).write_bytes(png.read_bytes())
    for sub in dataset.iterdir():
        if sub.is_dir():
            (folder / sub.name).mkdir()
            for png in sub.iterdir():
                (folder / sub.name / png.name).write_bytes(png.read_bytes())
    (folder / "manifest.json").write_text(json.dumps(data))
    return folder


def _set_image(index, key, value):
    def edit(data):
        data["images"][index][key] = value

    return edit


def _set_top(key, value):
    def edit(data):
        data[key] = value

    return edit


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (_set_image(1, "fx", None), r"image 1 \(.*\): field 'fx': expected a focal length in pixels > 0, got None"),
        (_set_image(0, "fy", "20"), r"image 0 \(.*\): field 'fy': expected a focal length .*, got '20'"),
        (_set_image(2, "time", "soon"), r"image 2 \(.*\): field 'time': expected a number in \[0, 1\], got 'soon'"),
        (_set_image(0, "frame_index", 1.5), r"image 0 \(.*\): field 'frame_index': expected an integer in 0\.\.2"),
        (_set_image(0, "cx", [1]), r"image 0 \(.*\): field 'cx': expected a principal point"),
        (_set_image(1, "world_to_camera", [[1, 0, 0]]),
         r"image 1 \(.*\): field 'world_to_camera': expected a finite 4x4"),
        (_set_image(0, "file", 3), r"image 0: field 'file': expected a relative path"),
        (_set_image(1, "world_to_camera", [[0, 0, 0, 0]] * 4),
         r"image 1 \(.*\): field 'world_to_camera': expected a camera pose: an invertible 3x3"),
        (_set_image(2, "world_to_camera", [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 1, 1]]),
         r"image 2 \(.*\): field 'world_to_camera': expected a camera pose.*last row \[0, 0, 0, 1\]"),
        (_set_image(0, "blender_camera_to_world", [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]]),
         r"image 0 \(.*\): blender_camera_to_world and world_to_camera disagree"),
        (_set_top("width", "wide"), r"field 'width': expected an integer > 0, got 'wide'"),
        (_set_top("height", -8), r"field 'height': expected an integer > 0, got -8"),
        (_set_top("num_frames", None), r"field 'num_frames': expected an integer > 0, got None"),
        (_set_top("extra_splits", {"x": ["a"]}), r"field 'extra_splits\.x': expected a list of image indices"),
    ],
)  # fmt: skip
def test_bad_manifest_fields_are_named(dataset, tmp_path, edit, pattern):
    folder = _edited(dataset, tmp_path, edit)
    with pytest.raises(ValueError, match=pattern) as info:
        load_manifest(folder)
    message = str(info.value)
    assert message.startswith(str(folder / "manifest.json"))
    assert "gen4d render" in message  # says what to do


def test_bad_manifest_through_the_cli_is_one_line(dataset, tmp_path, capsys):
    folder = _edited(dataset, tmp_path, _set_image(1, "fx", None))
    assert main(["reconstruct", str(folder), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json: image 1" in err[0] and "'fx'" in err[0], err


def test_good_manifest_still_loads(dataset):
    assert len(load_manifest(dataset)) == 3
