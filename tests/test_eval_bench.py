"""gen4d bench: runs reconstruct over datasets x presets (tiny smoke sizes), one table, reuse on rerun."""

from __future__ import annotations

import pytest

from gen4d.data.manifest import save_dataset
from gen4d.data.synthetic import synthetic_dataset
from gen4d.eval.bench import BenchConfig, bench_markdown, run_bench


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench") / "toy_scene"
    save_dataset(synthetic_dataset(size=32, frames=4, eval_views=2, blobs=2, per_blob=20), folder)
    return folder


SMOKE = BenchConfig(presets=("demo",), iterations=(2, 2), size=32, device="cpu", backend="torch", outputs=False)


def test_bench_table_and_reuse(dataset_dir, tmp_path, monkeypatch):
    for var in ("GEN4D_WEIGHTS_DIR", "TORCH_HOME", "HF_HOME"):  # hermetic: no pretrained weights
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    out = tmp_path / "bench"
    lines = []
    rows = run_bench([dataset_dir], SMOKE, out, progress=False, echo=lines.append)
    assert len(rows) == 1
    row = rows[0]
    assert row["dataset"] == "toy_scene" and row["preset"] == "demo" and row["split"] == "eval"
    assert row["iterations"] == 4 and row["device"] == "cpu" and row["backend"] == "torch"
    assert 0 < row["psnr"] < 100 and 0 < row["ssim"] <= 1 and 0 <= row["iou"] <= 1
    assert row["wall_time_s"] > 0 and row["peak_rss_mib"] > 0
    assert not (out / "toy_scene__demo" / "videos").exists()  # outputs off
    text = (out / "bench.md").read_text()
    assert "| toy_scene | demo | eval |" in text and "Peak RSS MiB" in text and "Silhouette IoU" in text
    assert (out / "bench.json").is_file()
    metrics_file = out / "toy_scene__demo" / "metrics.json"
    stamp = metrics_file.stat().st_mtime_ns
    again = run_bench([dataset_dir], SMOKE, out, progress=False, echo=lines.append)
    assert metrics_file.stat().st_mtime_ns == stamp  # reused, not rerun
    assert again[0]["psnr"] == row["psnr"]
    assert any("reusing" in line for line in lines)
    # the full protocol on top of the reused run (no pretrained weights here: those metrics are skipped)
    full = run_bench(
        [dataset_dir], BenchConfig(**{**SMOKE.__dict__, "full_eval": True}), out, progress=False, echo=None
    )
    assert full[0]["eval"]["protocol"] == "consistent4d"
    assert full[0]["eval"]["metrics"]["psnr"] > 0 and "fvd" in full[0]["eval"]["skipped"]
    assert (out / "toy_scene__demo" / "eval" / "report.md").is_file()
    assert "Full evaluation" in bench_markdown(full)


def test_bench_cli_and_errors(dataset_dir, tmp_path, capsys):
    from gen4d.cli import main

    out = tmp_path / "bench_cli"
    args = ["bench", str(dataset_dir), "--out", str(out), "--presets", "demo", "--iterations", "1,1", "--size", "32"]
    args += ["--device", "cpu", "--backend", "torch", "--outputs", "false", "--no-progress"]
    assert main(args) == 0
    assert "| toy_scene | demo |" in capsys.readouterr().out
    assert main(["bench", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no such dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown preset"):
        run_bench([dataset_dir], BenchConfig(presets=("fastest",)), tmp_path / "x")
    with pytest.raises(ValueError, match="coarse, fine"):
        run_bench([dataset_dir], BenchConfig(iterations=(5,)), tmp_path / "x")
