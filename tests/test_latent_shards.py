"""The sharded latent cache (gen4d cache-latents) and its streamed reading by train-vdm: resume of the
cache job, disjoint and complete shares of 3 gloo processes, and training from the cache = from folders."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="training needs diffusers (pip install 'gen4d[diffusion]')")
pytest.importorskip("accelerate", reason="training needs accelerate (pip install 'gen4d[diffusion]')")

from gen4d.errors import UserError  # noqa: E402
from gen4d.train.shards import ShardStream, write_latent_cache  # noqa: E402
from gen4d.train.synthetic import write_toy_clips  # noqa: E402

FRAMES, SIZE = 4, 8
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_clips(folder, count=6, num_frames=FRAMES, size=SIZE)
    return folder


def read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_cache_job_resumes_after_a_kill_and_matches_the_in_memory_encodings(clips, tmp_path):
    from gen4d.diffusion.vdm.encoders import PixelCodec
    from gen4d.train.data import find_datasets, load_clips

    kwargs = dict(size=SIZE, num_frames=FRAMES, per_shard=2)

    def stop(shard):
        raise KeyboardInterrupt  # killed after its first whole shard

    with pytest.raises(KeyboardInterrupt):
        write_latent_cache([clips], tmp_path / "cache", on_shard=stop, **kwargs)
    cache = tmp_path / "cache"
    assert not json.loads((cache / "index.json").read_text())["complete"]
    assert sorted(p.name for p in cache.glob("shard_*")) == ["shard_000000.safetensors"]
    (cache / ".shard_000001.safetensors.x.tmp.safetensors").write_bytes(b"half a shard")  # a kill mid-write
    first = (cache / "shard_000000.safetensors").stat().st_mtime_ns
    index = write_latent_cache([clips], cache, workers=2, **kwargs)  # resumed by 2 worker processes
    assert index["complete"] and index["objects"] == 6 and len(index["shards"]) == 3
    assert (cache / "shard_000000.safetensors").stat().st_mtime_ns == first  # skipped, not rewritten
    write_latent_cache([clips], tmp_path / "straight", **kwargs)
    memory = load_clips(find_datasets([clips]), SIZE, FRAMES, PixelCodec().encode, "pixel:scratch")
    for i, shard in enumerate(index["shards"]):
        a, b = read(cache / shard["file"]), read(tmp_path / "straight" / shard["file"])
        assert a.keys() == b.keys() == {"latents", "static_latents", "motion"}
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        torch.testing.assert_close(a["latents"], memory.latents[2 * i : 2 * i + 2], rtol=0, atol=0)
        torch.testing.assert_close(a["motion"].float(), memory.motion[2 * i : 2 * i + 2])
    with pytest.raises(UserError, match="other data or settings"):
        write_latent_cache([clips], cache, size=SIZE, num_frames=FRAMES, per_shard=3)


def _gloo_worker(rank: int, world: int, cache: str, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    stream = ShardStream(cache, dist.get_rank(), dist.get_world_size(), local_batch=1, grad_accum=1, seed=3)
    per_epoch = {}
    step = 0
    for epoch in range(3):
        names = []
        for _ in range(stream.steps_in_epoch(epoch)):
            names += stream.micro_batch(step, 0).names
            step += 1
        per_epoch[epoch] = names
    gathered = [None] * world
    dist.all_gather_object(gathered, per_epoch)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


def test_three_gloo_processes_read_disjoint_complete_shares(clips, tmp_path):
    index = write_latent_cache([clips], tmp_path / "cache", size=SIZE, num_frames=FRAMES, per_shard=2)
    every = sorted(n for s in index["shards"] for n in s["objects"])
    out = tmp_path / "names.json"
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.spawn(_gloo_worker, args=(3, str(tmp_path / "cache"), init, str(out)), nprocs=3)
    shares = json.loads(out.read_text())  # [rank][epoch] -> names
    orders = []
    for epoch in ("0", "1", "2"):
        seen = [share[epoch] for share in shares]
        flat = [n for names in seen for n in names]
        assert sorted(flat) == every  # complete, and nothing twice
        assert all(len(names) == 2 for names in seen)  # one whole shard each
        orders.append(seen)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # shares are re-drawn per epoch


def tiny_config(data, out: Path, steps: int, **changes):
    from gen4d.config import set_fields
    from gen4d.train.config import TRAIN_PRESETS

    config = copy.deepcopy(TRAIN_PRESETS["tiny"])
    config.data.paths = (str(data),) if data else ()
    config.data.size = SIZE
    config.out = str(out)
    config.optim.steps = steps
    return set_fields(config, changes)


def test_training_from_the_cache_equals_training_from_the_folders(tmp_path):
    from gen4d.train.vdm import train_vdm

    data = tmp_path / "data"
    write_toy_clips(data, count=4, num_frames=FRAMES, size=SIZE)
    write_latent_cache([data], tmp_path / "cache", size=SIZE, num_frames=FRAMES, per_shard=1)
    steps = 4  # two epochs of 4 clips at batch 2
    train_vdm(tiny_config(data, tmp_path / "folders", steps), progress=False)
    train_vdm(tiny_config(None, tmp_path / "shards", steps, **{"data.shards": str(tmp_path / "cache")}), progress=False)
    curves = [
        [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("folders", "shards")
    ]
    assert len(curves[0]) == len(curves[1]) == steps
    for a, b in zip(*curves):
        for key in ("loss", "ldm", "mr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), key
    a = read(tmp_path / "folders" / "model" / "unet.safetensors")
    b = read(tmp_path / "shards" / "model" / "unet.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    spec = [json.loads((tmp_path / run / "model" / "model.json").read_text()) for run in ("folders", "shards")]
    assert spec[0]["motion_stats"] == pytest.approx(spec[1]["motion_stats"])
    assert spec[0]["orbit_cameras"] == spec[1]["orbit_cameras"]
    # A cache written for another image size is refused by name.
    write_latent_cache([data], tmp_path / "cache16", size=16, num_frames=FRAMES, per_shard=1)
    with pytest.raises(UserError, match="size=16"):
        train_vdm(tiny_config(None, tmp_path / "bad", 1, **{"data.shards": str(tmp_path / "cache16")}), progress=False)
    assert os.path.isdir(tmp_path / "bad")
