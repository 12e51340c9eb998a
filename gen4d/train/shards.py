"""A sharded latent cache of many training objects, and its streamed reading by every process.

Writing (:func:`write_latent_cache`, ``gen4d cache-latents``): the dataset folders (gen4d manifests
or Diffusion4D folders) are sorted and grouped into shards of ``per_shard`` objects; each shard is
one safetensors file (``latents`` and ``static_latents`` (n, C, T, h, w) float16, ``motion`` (n,)
float64, ``image_embeds`` (n, D) when the model has a CLIP image encoder) written atomically, and
``index.json`` lists the shards, their objects, the codec and the image size. Several worker
processes each take every W-th missing shard; a rerun skips the shards already on disk, so a
killed job resumes where it stopped (a half-written shard is only a temporary file).

Reading (:class:`ShardStream`): in epoch e the shards are permuted with (seed, e) and process r of
W takes every W-th shard of that permutation, its objects in an order drawn from (seed, e, shard):
the processes read disjoint shards, each epoch covers every shard once, and all of it is a pure
function of (seed, step), so a resumed run reads the same batches. Only the shards of the current
micro-batch are in memory. An epoch lasts as many steps as the process with the fewest objects
can fill (its remainder is skipped that epoch). With one process and one object per shard the
order is exactly the in-memory path's (:func:`gen4d.train.data.global_batch_indices`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gen4d.errors import UserError
from gen4d.io import atomic_path, read_json, write_json
from gen4d.train.data import ClipSet, encode_clip, find_datasets, sample_seed

__all__ = ["INDEX_FILE", "codec_id", "write_latent_cache", "ShardStream", "shard_order"]

INDEX_FILE = "index.json"
FORMAT = "gen4d.latent-cache/1"


def codec_id(kind: str, model: str | None) -> str:
    """What the latents depend on: the codec and the model it comes from (checked by train-vdm)."""
    return f"{kind}:{model or 'scratch'}"


def _encoders(kind: str, model: str | None, device: str):
    """(encode, image_encoder) for the codec: pixels, or the VAE / CLIP image encoder of ``model``
    (a gen4d model folder or a diffusers folder / hub id)."""
    from gen4d.diffusion.vdm.components import MODEL_FILE, _load_components
    from gen4d.diffusion.vdm.encoders import PixelCodec
    from gen4d.diffusion.vdm.spec import VDMSpec

    if kind == "pixel":
        return PixelCodec().encode, None
    if not model:
        raise UserError("--model: the vae codec needs the model the VAE comes from (a diffusers folder or hub id)")
    if (Path(model) / MODEL_FILE).is_file():
        from gen4d.config import from_dict

        spec = from_dict(VDMSpec, read_json(Path(model) / MODEL_FILE), strict=False)
        source = spec.base
    else:
        spec, source = VDMSpec(variant="image", codec="vae", base=model), model
    codec, _, image_encoder = _load_components(spec, source, device, torch.float32, encoders=True)
    return codec.encode, image_encoder


def _write_shards(jobs: list[tuple[int, str, list[str]]], kind, model, size, frames, device) -> list[int]:
    """Worker: encode and write each (shard, file, folders) job; returns the shards written."""
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    encode, image_encoder = _encoders(kind, model, device)
    done = []
    for shard, path, folders in jobs:
        entries = [encode_clip(Path(f), size, frames, encode, image_encoder)[0] for f in folders]
        tensors = {
            "latents": torch.stack([e["latents"] for e in entries]).to(torch.float16),
            "static_latents": torch.stack([e["static_latents"] for e in entries]).to(torch.float16),
            "motion": torch.cat([e["motion"] for e in entries]),
        }
        if image_encoder is not None:
            tensors["image_embeds"] = torch.stack([e["image_embeds"] for e in entries]).float()
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        done.append(shard)
    return done


def write_latent_cache(
    paths: Sequence[str | Path],
    out: str | Path,
    codec: str = "pixel",
    model: str | None = None,
    size: int = 64,
    num_frames: int = 24,
    per_shard: int = 64,
    workers: int = 1,
    device: str = "cpu",
    on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Encode every dataset under ``paths`` into the cache folder ``out`` (see the module docstring);
    returns the index. ``on_shard(shard)`` is called in this process after each shard it writes."""
    from safetensors import safe_open

    from gen4d.diffusion.vdm.spec import orbit_record
    from gen4d.train.data import clip_from_dataset

    if codec not in ("pixel", "vae"):
        raise UserError(f"--codec: expected pixel or vae, got {codec!r}")
    for name, value in (("per_shard", per_shard), ("workers", workers), ("size", size), ("frames", num_frames)):
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    out = Path(out)
    folders = [str(f) for f in find_datasets(paths)]
    plan = {
        "format": FORMAT,
        "codec": codec_id(codec, model),
        "size": size,
        "num_frames": num_frames,
        "per_shard": per_shard,
        "shards": [
            {"file": f"shard_{i:06d}.safetensors", "objects": [Path(f).name for f in folders[s : s + per_shard]],
             "folders": folders[s : s + per_shard]}
            for i, s in enumerate(range(0, len(folders), per_shard))
        ],
    }  # fmt: skip
    index_path = out / INDEX_FILE
    if index_path.is_file():
        old = read_json(index_path)
        keys = ("format", "codec", "size", "num_frames", "per_shard")
        if any(old.get(k) != plan[k] for k in keys) or [s["folders"] for s in old.get("shards", [])] != [
            s["folders"] for s in plan["shards"]
        ]:
            raise UserError(
                f"--out: {out} holds a latent cache of other data or settings; use a new folder to cache these"
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"--out: {out} is not empty and holds no latent cache ({INDEX_FILE}); choose a new folder")
    write_json(index_path, {**plan, "complete": False})
    todo = [(i, str(out / s["file"]), s["folders"]) for i, s in enumerate(plan["shards"])
            if not (out / s["file"]).is_file()]  # fmt: skip
    args = (codec, model, size, num_frames, device)
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        parts = [todo[w::workers] for w in range(min(workers, len(todo)))]
        with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
            for shards in pool.map(_write_shards, parts, *[[a] * len(parts) for a in args]):
                for shard in shards:
                    if on_shard is not None:
                        on_shard(shard)
    else:
        for job in todo:
            _write_shards([job], *args)
            if on_shard is not None:
                on_shard(job[0])
    motion = []
    for s in plan["shards"]:
        with safe_open(str(out / s["file"]), framework="pt") as f:
            motion.extend(float(m) for m in f.get_tensor("motion"))
    _, _, _, cameras = clip_from_dataset(Path(folders[0]), size, num_frames)
    index = {
        **plan,
        "complete": True,
        "objects": len(folders),
        "motion": motion,
        "orbit_cameras": orbit_record(cameras),
    }
    write_json(index_path, index)
    return index


def shard_order(num_shards: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """The shards process ``rank`` of ``world`` reads in ``epoch`` (disjoint across processes)."""
    gen = torch.Generator().manual_seed(sample_seed(seed, epoch, 0x5EED))
    return [int(s) for s in torch.randperm(num_shards, generator=gen)[rank::world]]


class ShardStream:
    """Micro-batches of a latent cache for one process (see the module docstring)."""

    def __init__(self, cache: str | Path, rank: int, world: int, local_batch: int, grad_accum: int, seed: int):
        self.folder = Path(cache)
        if not (self.folder / INDEX_FILE).is_file():
            raise UserError(
                f"--data.shards: no {INDEX_FILE} in {self.folder}; write the cache with `gen4d cache-latents`"
            )
        self.index = read_json(self.folder / INDEX_FILE)
        if self.index.get("format") != FORMAT or not self.index.get("complete"):
            raise UserError(f"--data.shards: {self.folder} is not a complete latent cache; rerun `gen4d cache-latents`")
        self.sizes = [len(s["objects"]) for s in self.index["shards"]]
        self.rank, self.world, self.seed = rank, world, seed
        self.local_batch, self.grad_accum = local_batch, grad_accum
        self.motion = torch.tensor(self.index["motion"], dtype=torch.float32)
        self._epochs: list[int] = []  # cumulative steps at the end of each epoch
        self._open: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        first = self._load(0)
        self.shape = tuple(first["latents"].shape[1:])
        self.has_image_embeds = "image_embeds" in first

    def __len__(self) -> int:
        return int(self.index["objects"])

    def _stream(self, epoch: int, rank: int) -> list[tuple[int, int]]:
        items = []
        for shard in shard_order(len(self.sizes), epoch, self.seed, rank, self.world):
            gen = torch.Generator().manual_seed(sample_seed(self.seed, epoch, shard, 0x5AD))
            items.extend((shard, int(row)) for row in torch.randperm(self.sizes[shard], generator=gen))
        return items

    def steps_in_epoch(self, epoch: int) -> int:
        per_step = self.local_batch * self.grad_accum
        steps = min(len(self._stream(epoch, r)) // per_step for r in range(self.world))
        if steps < 1:
            raise UserError(
                f"--data.shards: in epoch {epoch} a process gets fewer than {per_step} objects (local batch x "
                f"grad_accum) from {len(self.sizes)} shards over {self.world} processes; write smaller shards "
                "(--per-shard) or use fewer processes"
            )
        return steps

    def _locate(self, step: int) -> tuple[int, int]:
        while not self._epochs or self._epochs[-1] <= step:
            self._epochs.append((self._epochs[-1] if self._epochs else 0) + self.steps_in_epoch(len(self._epochs)))
        epoch = next(e for e, end in enumerate(self._epochs) if step < end)
        return epoch, step - (self._epochs[epoch - 1] if epoch else 0)

    def _load(self, shard: int) -> dict[str, torch.Tensor]:
        if shard not in self._open:
            from safetensors.torch import load_file

            self._open[shard] = load_file(str(self.folder / self.index["shards"][shard]["file"]))
            while len(self._open) > 2:  # the current shard and the one a batch may straddle into
                self._open.popitem(last=False)
        return self._open[shard]

    def items(self, step: int, micro: int) -> list[tuple[int, int]]:
        """(shard, row) of the objects of this process's micro-batch ``micro`` of ``step``."""
        epoch, offset = self._locate(step)
        start = (offset * self.grad_accum + micro) * self.local_batch
        return self._stream(epoch, self.rank)[start : start + self.local_batch]

    def micro_batch(self, step: int, micro: int) -> ClipSet:
        rows = [(self._load(shard), row) for shard, row in self.items(step, micro)]
        stack = lambda key: torch.stack([data[key][row] for data, row in rows])  # noqa: E731
        return ClipSet(
            latents=stack("latents"),
            static_latents=stack("static_latents"),
            motion=torch.stack([data["motion"][row] for data, row in rows]).float(),
            image_embeds=stack("image_embeds") if self.has_image_embeds else None,
            text=None,
            names=[self.index["shards"][s]["objects"][r] for s, r in self.items(step, micro)],
        )

    def check(self, codec: str, size: int, num_frames: int) -> None:
        """Fail when the cache was written for another codec / model or image size."""
        for name, want in (("codec", codec), ("size", size), ("num_frames", num_frames)):
            if self.index.get(name) != want:
                raise UserError(
                    f"--data.shards: the cache was written with {name}={self.index.get(name)!r} but this run uses "
                    f"{want!r}; write a cache with the run's settings (gen4d cache-latents)"
                )
