"""The web player: the bundled page, `gen4d export --format html` and its refusals, the demo's run
entry, and (where Chromium is installed) the page in headless Chromium against gen4d's renderer:
the JavaScript decoder against read_splat4d, screenshots at given cameras and times (silhouette
IoU and PSNR), and the frame rate it reaches."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gen4d.cli import main
from gen4d.deform import DeformConfig, HexPlaneConfig
from gen4d.export.chromium import Chromium, find_chromium
from gen4d.export.ply_sequence import frame_times
from gen4d.export.splat4d import decode_splat4d, encode_splat4d
from gen4d.export.web_player import embedded_asset, is_player_html, player_html, write_player_html
from gen4d.gaussians import random_in_sphere
from gen4d.gaussians.dynamic import DynamicGaussians

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_HEX = HexPlaneConfig(features=4, resolution=(8, 8, 8, 5), multires=(1,), width=8)


def moving_model(count: int = 300, sh_degree: int = 0, seed: int = 3) -> DynamicGaussians:
    """Random Gaussians whose field moves, turns and resizes them over time."""
    torch.manual_seed(0)
    model = DynamicGaussians(random_in_sphere(count, opacity=0.6, sh_degree=sh_degree, seed=seed), DeformConfig(field=SMALL_HEX))  # fmt: skip
    with torch.no_grad():
        model.field.head_out_weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
        model.field.grid.temporal[0].mul_(torch.linspace(0.2, 1.8, 5)[:, None])
        if sh_degree:
            model.params["sh"][:, 1:].normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    return model.eval()


def asset_bytes(model: DynamicGaussians, frames: int = 5) -> bytes:
    with torch.no_grad():
        return encode_splat4d(model.at(frame_times(frames)), fps=10)


# -- the page and the export command (no browser) ---------------------------------------------------
def test_bundled_page_holds_the_scripts_and_the_asset(tmp_path):
    data = asset_bytes(moving_model(50))
    path = write_player_html(data, tmp_path / "p.html")
    page = path.read_text()
    assert is_player_html(path) and "<script src=" not in page  # every script inlined: opens from file://
    assert "gen4dSplat4D" in page and "gen4dPlayer" in page
    assert embedded_asset(path) == data
    assert decode_splat4d(embedded_asset(path)).num_frames == 5
    (tmp_path / "other.html").write_text("<html>mine</html>")
    assert not is_player_html(tmp_path / "other.html") and not is_player_html(tmp_path)
    with pytest.raises(ValueError, match="not a .splat4d file"):
        player_html(b"PK\x03\x04" + bytes(80))


def test_export_html_command_and_its_refusals(tmp_path):
    from gen4d.recon.checkpoint import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run, moving_model(40))
    out = tmp_path / "web" / "player.html"
    assert main(["export", str(run), "--format", "html", "--out", str(out), "--frames", "3"]) == 0
    assert read_splat4d_bytes(out).num_frames == 3
    assert main(["export", str(run), "--format", "html", "--out", str(out), "--frames", "4"]) == 0  # its own page
    assert read_splat4d_bytes(out).num_frames == 4
    mine = tmp_path / "index.html"
    mine.write_text("<html>my page</html>")
    assert main(["export", str(run), "--format", "html", "--out", str(mine)]) == 2
    assert mine.read_text() == "<html>my page</html>"
    assert main(["export", str(run), "--format", "html", "--out", str(tmp_path)]) == 2  # a folder
    assert main(["export", str(tmp_path / "nothing"), "--format", "html", "--out", str(tmp_path / "x.html")]) == 2
    assert main(["export", str(run), "--format", "html", "--out", str(mine / "x.html")]) == 2  # under a file
    assert not (tmp_path / "x.html").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_export_html_to_a_read_only_folder_is_refused(tmp_path, capsys):
    from gen4d.recon.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run", moving_model(20))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["export", str(tmp_path / "run"), "--format", "html", "--out", str(locked / "p.html")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def read_splat4d_bytes(page: Path):
    return decode_splat4d(embedded_asset(page))


def test_demo_player_is_a_declared_run_entry(tmp_path):
    """The demo's player.html and export/asset.glb are deleted by --overwrite like the run's other
    outputs; a user's file is not."""
    from gen4d.commands.demo import write_exports
    from gen4d.recon.checkpoint import save_checkpoint
    from gen4d.recon.construct import RUN_ENTRIES, RUN_KIND
    from gen4d.run.folder import open_run

    run = tmp_path / "demo"
    open_run(run, RUN_KIND, RUN_ENTRIES, command="demo")
    save_checkpoint(run, moving_model(30))
    glb, player = write_exports(run, fps=12)
    assert player == run / "player.html" and is_player_html(player)
    assert glb is None or glb == run / "export" / "asset.glb" and glb.is_file()
    assert read_splat4d_bytes(player).num_frames == 24 and read_splat4d_bytes(player).fps == 12
    (run / "notes.txt").write_text("mine")
    open_run(run, RUN_KIND, RUN_ENTRIES, overwrite=True, command="demo")
    assert not player.exists() and not (run / "export").exists() and (run / "notes.txt").read_text() == "mine"


# -- in headless Chromium ---------------------------------------------------------------------------
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found: `apt-get install chromium` (scripts/sysdeps.sh does it as root)"
)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium not found")
    from gen4d.export.player_check import webgl2_renderer

    with Chromium(CHROMIUM, width=480, height=360) as chromium:
        if webgl2_renderer(chromium) is None:
            pytest.skip(f"{chromium.version} has no WebGL2 here (its SwiftShader fallback is missing)")
        yield chromium


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny 4D construction on the embedded default data (a few seconds on one core)."""
    from gen4d.commands.demo import default_data
    from gen4d.recon.construct import OutputConfig, preset, reconstruct
    from gen4d.recon.presets import with_iterations

    config = replace(
        with_iterations(preset("demo"), coarse=40, fine=40),
        size=48,
        device="cpu",
        backend="torch",
        init=replace(preset("demo").init, num_points=1500),
        checkpoint_every=0,
        output=OutputConfig(ply=False, video=False, renders=False, lpips=False, evaluate=False),
    )
    run = tmp_path_factory.mktemp("player") / "run"
    reconstruct(default_data(), config, run, progress=False)
    return run


@needs_chromium
def test_javascript_decoder_matches_read_splat4d(browser, tmp_path):
    from gen4d.export.player_check import open_player

    data = asset_bytes(moving_model(120, sh_degree=1), frames=4)
    path = write_player_html(data, tmp_path / "p.html")
    summary = open_player(browser, path)
    asset = decode_splat4d(data)
    assert summary == {"count": 120, "frames": 4, "coeffs": 4, "fps": 10, "flags": 1}  # scales per frame
    sh = torch.tensor(browser.evaluate("Array.from(gen4dPlayer.asset.sh)"))
    torch.testing.assert_close(sh, asset.sh.reshape(-1), rtol=0, atol=0)  # float16 decoded exactly
    for index in (0, 3):
        got = browser.evaluate(
            f"(() => {{ const f = gen4dPlayer.asset.frame({index}); return Object.fromEntries("
            "Object.entries(f).map(([k, v]) => [k, Array.from(v)])); })()"
        )
        frame = asset.frame(index)
        torch.testing.assert_close(torch.tensor(got["means"]).reshape(-1, 3), frame.means, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(got["quats"]).reshape(-1, 4), frame.quats, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(got["logScales"]).reshape(-1, 3), frame.log_scales, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(got["opacity"]), frame.opacities, rtol=0, atol=1e-6)
    refusals = browser.evaluate(
        "(() => { const bytes = gen4dPlayer.asset.bytes; const reasons = []; "
        "for (const data of [bytes.subarray(0, bytes.length - 10), new Uint8Array(80)]) { "
        "try { gen4dSplat4D.decode(data); reasons.push('decoded'); } catch (err) { reasons.push(err.message); } } "
        "return reasons; })()"
    )
    assert "truncated or damaged" in refusals[0] and "not a .splat4d file" in refusals[1]


@needs_chromium
def test_time_between_stored_frames(browser, tmp_path):
    """smooth: positions and log-scales linear, rotations normalised-linear between the two stored
    frames around t; not smooth: the nearest stored frame (Splat4D.at)."""
    from gen4d.export.player_check import open_player
    from gen4d.gaussians.core import quaternion_to_matrix

    data = asset_bytes(moving_model(80), frames=4)
    open_player(browser, write_player_html(data, tmp_path / "p.html"))
    asset = decode_splat4d(data)

    def player_at(time: float, smooth: bool) -> tuple[torch.Tensor, torch.Tensor]:
        got = browser.evaluate(
            f"(() => {{ const g = gen4dPlayer.gaussiansAt({time}, {str(smooth).lower()}); "
            "return [Array.from(g.means), Array.from(g.covariances)]; })()"
        )
        return torch.tensor(got[0]).reshape(-1, 3), torch.tensor(got[1]).reshape(-1, 6)

    def covariances(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
        m = quaternion_to_matrix(quats) * log_scales.exp()[:, None, :]
        full = m @ m.transpose(1, 2)
        return full[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]

    first, second = asset.frame(1), asset.frame(2)  # t = 0.4 is 1.2 frames: 80 % frame 1, 20 % frame 2
    means, covs = player_at(0.4, smooth=True)
    torch.testing.assert_close(means, 0.8 * first.means + 0.2 * second.means, rtol=0, atol=1e-6)
    sign = torch.where((first.quats * second.quats).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    quats = 0.8 * first.quats + 0.2 * sign * second.quats
    expected = covariances(0.8 * first.log_scales + 0.2 * second.log_scales, quats)
    torch.testing.assert_close(covs, expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(means, first.means, atol=1e-4)  # the asset does move between frames
    means, covs = player_at(0.4, smooth=False)
    nearest = asset.at(torch.tensor([0.4]))
    torch.testing.assert_close(means, nearest.means[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(covs, covariances(nearest.log_scales[0], nearest.quats[0]), rtol=1e-4, atol=1e-7)


@needs_chromium
def test_view_dependent_colours_match_gen4d(browser, tmp_path):
    """SH degree 1 colours seen from two sides (the camera convention and SH evaluation in JS)."""
    from gen4d.export.player_check import compare_to_gen4d, open_player

    data = asset_bytes(moving_model(300, sh_degree=1), frames=3)
    open_player(browser, write_player_html(data, tmp_path / "p.html"))
    asset = decode_splat4d(data)
    for azimuth, elevation, time in ((35.0, 20.0, 0.5), (200.0, -30.0, 1.0)):
        view = {"azimuth": azimuth, "elevation": elevation, "radius": 2.2, "fov": 45.0, "target": [0, 0, 0], "time": time}  # fmt: skip
        scores = compare_to_gen4d(browser, asset.at, {**view, "smooth": False}, 64, 48)
        assert scores["foreground"] > 0.1 and scores["iou"] >= 0.97 and scores["psnr"] > 45, scores


@needs_chromium
def test_player_matches_gen4d_on_a_trained_run(browser, trained_run, tmp_path):
    """The exported page of a run trained on the embedded default, at given cameras and times,
    against gen4d's render of the same camera and time; then its frame rate."""
    from gen4d.export.player_check import compare_to_gen4d, measure_fps, open_player
    from gen4d.recon.checkpoint import load_run

    page = tmp_path / "run.html"
    assert main(["export", str(trained_run), "--format", "html", "--out", str(page), "--frames", "6"]) == 0
    summary = open_player(browser, page)
    asset = read_splat4d_bytes(page)
    assert summary["count"] == asset.means.shape[1] and summary["frames"] == 6
    target = [0.0, 0.0, 0.0]
    # Stored frames (t = f / 5): the file's own frames, as gen4d renders them.
    for azimuth, elevation, time in ((0.0, 15.0, 0.4), (120.0, 0.0, 1.0)):
        view = {"azimuth": azimuth, "elevation": elevation, "radius": 2.0, "fov": 39.6, "target": target, "time": time}
        scores = compare_to_gen4d(browser, asset.at, view, 96, 96)
        print(f"player vs gen4d render of the file, az {azimuth} t {time}: IoU {scores['iou']:.4f} PSNR {scores['psnr']:.2f} dB")  # fmt: skip
        assert scores["foreground"] > 0.05 and scores["iou"] >= 0.9 and scores["psnr"] > 30, scores
    # Between stored frames the player interpolates; against the model itself at that time.
    model = load_run(trained_run)
    view = {"azimuth": 60.0, "elevation": 10.0, "radius": 2.0, "fov": 39.6, "target": target, "time": 0.5, "smooth": True}  # fmt: skip
    scores = compare_to_gen4d(browser, model.at, view, 96, 96)
    print(f"player (interpolated) vs the model at t 0.5: IoU {scores['iou']:.4f} PSNR {scores['psnr']:.2f} dB")
    assert scores["iou"] >= 0.9, scores
    fps = measure_fps(browser, frames=30, width=480, height=320)
    print(f"player frame rate at 480x320: {fps['fps']:.1f} fps ({fps['cpuMsPerFrame']:.2f} ms CPU per frame, {fps['drawn']} Gaussians)")  # fmt: skip
    assert fps["fps"] > 0 and fps["drawn"] > 0


@needs_chromium
def test_standalone_page_loads_src_over_http(browser, tmp_path):
    """The unbundled player folder (package data) served over HTTP fetches ?src=; from file:// it
    says why it cannot."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from gen4d.export.chromium import ChromiumError
    from gen4d.export.player_check import open_player
    from gen4d.export.web_player import PLAYER_DIR

    site = tmp_path / "site"
    shutil.copytree(PLAYER_DIR, site)
    (site / "asset.splat4d").write_bytes(asset_bytes(moving_model(30), frames=2))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        summary = open_player(browser, f"http://127.0.0.1:{server.server_port}/index.html?src=asset.splat4d")
    finally:
        server.shutdown()
        server.server_close()
    assert summary["count"] == 30 and summary["frames"] == 2
    with pytest.raises(ChromiumError, match="file:// page"):
        open_player(browser, (site / "index.html").as_uri() + "?src=asset.splat4d")


@needs_chromium
def test_controls_turn_zoom_and_play(browser, tmp_path):
    """Mouse drag turns the orbit camera, the wheel moves it in, the play button runs time."""
    from gen4d.export.player_check import open_player

    page = write_player_html(asset_bytes(moving_model(60), frames=3), tmp_path / "p.html")
    open_player(browser, page.as_uri() + "#azimuth=90&elevation=-10&time=0.25&target=0,0,0.1")  # a view in the URL
    view = browser.evaluate("gen4dPlayer.getView()")
    assert (view["azimuth"], view["elevation"], view["time"], view["target"]) == (90, -10, 0.25, [0, 0, 0.1])
    browser.evaluate("gen4dPlayer.setSize(null, null); gen4dPlayer.setView({playing: false, time: 0}); 1")

    def mouse(kind: str, x: float, y: float, **extra) -> None:
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", **extra})

    before = browser.evaluate("gen4dPlayer.getView()")
    mouse("mousePressed", 200, 150, clickCount=1, buttons=1)
    mouse("mouseMoved", 230, 160, buttons=1)
    mouse("mouseMoved", 260, 170, buttons=1)
    mouse("mouseReleased", 260, 170, clickCount=1)
    after = browser.evaluate("gen4dPlayer.getView()")
    assert after["azimuth"] == pytest.approx(before["azimuth"] - 0.4 * 60)  # drag right: the object turns right
    assert after["elevation"] == pytest.approx(before["elevation"] + 0.4 * 20)
    browser.call("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": 200, "y": 150, "deltaX": 0, "deltaY": -200})
    assert browser.evaluate("gen4dPlayer.getView().radius") < after["radius"]
    assert browser.evaluate("document.getElementById('gen4d-play').click(); gen4dPlayer.getView().playing")
    assert browser.wait_for("gen4dPlayer.getView().time > 0.05", timeout=10)
    assert not browser.evaluate("document.getElementById('gen4d-play').click(); gen4dPlayer.getView().playing")
