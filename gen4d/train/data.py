"""Training clips for the video model: (V, V-bar, condition, m) from gen4d datasets.

Every dataset folder (a gen4d manifest folder, e.g. from ``gen4d render``, or the Diffusion4D
format) gives one clip: its ``orbit`` split V (T views at times 0..1) and its ``static_orbit``
split V-bar (the same poses at time 0). The image condition is V's first view (front, t = 0, as in
the paper); the static-3D condition is V-bar; the text condition is a caption. m = m(V) against
V-bar on images composited on white (:func:`gen4d.metrics.motion.motion_magnitude`).

Clips are encoded once (the codec's latents, CLIP embeddings) and kept in memory; with a cache
folder the encodings are stored as safetensors per clip, keyed by the dataset's manifest contents,
the image size and the codec, so later runs (and the other processes of a multi-GPU run) read them.

Sampling is a pure function of (seed, step): :func:`global_batch_indices` draws global batches from
seeded per-epoch permutations, so a resumed run and a run on any number of processes see the same
clips in the same order, and :func:`sample_seed` seeds the per-sample noise, timestep and
condition dropout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ClipSet",
    "find_datasets",
    "clip_from_dataset",
    "encode_clip",
    "load_clips",
    "global_batch_indices",
    "sample_seed",
]


def sample_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy SeedSequence): independent streams per (seed, step, sample)."""
    words = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & ((1 << 63) - 1)


def global_batch_indices(num_clips: int, step: int, global_batch: int, seed: int) -> torch.Tensor:
    """(global_batch,) clip indices of training step ``step``: consecutive slices of per-epoch random
    permutations (every clip once per epoch), a pure function of its arguments."""
    if num_clips < 1:
        raise ValueError("no training clips")
    start = step * global_batch
    out = []
    epoch_cache: dict[int, torch.Tensor] = {}
    for position in range(start, start + global_batch):
        epoch, offset = divmod(position, num_clips)
        if epoch not in epoch_cache:
            gen = torch.Generator().manual_seed(sample_seed(seed, epoch, 0x5EED))
            epoch_cache[epoch] = torch.randperm(num_clips, generator=gen)
        out.append(int(epoch_cache[epoch][offset]))
    return torch.tensor(out, dtype=torch.long)


def find_datasets(paths: Sequence[str | Path]) -> list[Path]:
    """Dataset folders under ``paths``: each path is a dataset (has manifest.json or Diffusion4D
    images) or a folder searched recursively for manifest.json files. Sorted, de-duplicated."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"no such training data: {path}")
        if path.is_file() and path.name == "manifest.json":
            found.append(path.parent)
        elif (path / "manifest.json").is_file() or any(path.glob("multi_frame*.png")):
            found.append(path)
        else:
            below = sorted(p.parent for p in path.rglob("manifest.json"))
            if not below:
                raise ValueError(f"{path}: no datasets (folders with manifest.json from `gen4d render`) found")
            found.extend(below)
    return sorted(set(found))


@dataclass
class ClipSet:
    """N encoded training clips, in memory (CPU)."""

    latents: torch.Tensor
    """(N, C, T, h, w) latents of the orbit videos V."""
    static_latents: torch.Tensor
    """(N, C, T, h, w) latents of the static orbits V-bar."""
    motion: torch.Tensor
    """(N,) m(V) on images composited on white."""
    image_embeds: torch.Tensor | None
    """(N, D) CLIP image embeddings of the condition views (V's first view), or None."""
    text: torch.Tensor | None
    """(N, L, D) caption tokens, or None."""
    names: list[str]
    """Dataset name of each clip."""
    cameras: object | None = None
    """Orbit cameras of the first clip (recorded in the trained model's spec)."""

    def __len__(self) -> int:
        return int(self.latents.shape[0])


def _encode_key(folder: Path, size: int, codec_id: str, frames: int) -> str:
    manifest = folder / "manifest.json"
    digest = hashlib.sha1()
    if manifest.is_file():
        digest.update(manifest.read_bytes())
    else:
        for p in sorted(folder.glob("*.png")):
            digest.update(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    digest.update(f"|{size}|{codec_id}|{frames}".encode())
    return digest.hexdigest()[:20]


def clip_from_dataset(folder: Path, size: int, num_frames: int):
    """(orbit (T, H, W, 4), static (T, H, W, 4), m, orbit cameras) from one dataset folder, with
    checks that name what to provide."""
    from gen4d.data.dataset import load_dataset
    from gen4d.metrics.motion import motion_magnitude

    video = load_dataset(folder, size=size)
    for split in ("orbit", "static_orbit"):
        if not video.has_split(split):
            what = "the orbital video V" if split == "orbit" else "the static orbit V-bar (object frozen at t = 0)"
            raise ValueError(f"{folder}: no {split!r} split; training needs {what}; render it with `gen4d render`")
    orbit, static = video.split("orbit"), video.split("static_orbit")
    for part, name in ((orbit, "orbit"), (static, "static_orbit")):
        if len(part) != num_frames:
            raise ValueError(
                f"{folder}: the {name} split has {len(part)} views; this model is trained on "
                f"{num_frames}-frame videos (set --data.num_frames or render {num_frames} views)"
            )
    order = torch.argsort(orbit.cameras.times, stable=True)
    orbit = orbit.subset(order)
    if not torch.allclose(orbit.cameras.world_to_camera, static.cameras.world_to_camera, atol=1e-3):
        raise ValueError(
            f"{folder}: the static_orbit views do not use the orbit's camera poses (view by view); "
            "V-bar must be rendered from V's cameras"
        )

    def rgba(part):
        alpha = part.alphas if part.alphas is not None else torch.ones_like(part.images[..., :1])
        return torch.cat([part.images, alpha], dim=-1)

    white = lambda x: x[..., :3] * x[..., 3:] + (1 - x[..., 3:])  # noqa: E731
    v, vbar = rgba(orbit), rgba(static)
    m = float(motion_magnitude(white(v), white(vbar)))
    return v, vbar, m, orbit.cameras


def encode_clip(
    folder: Path,
    size: int,
    num_frames: int,
    encode: Callable[[torch.Tensor], torch.Tensor],
    image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
    caption: str | None = None,
) -> tuple[dict[str, torch.Tensor], object]:
    """The encodings of one dataset folder ({'latents', 'static_latents', 'motion' (1,) float64
    [, 'image_embeds'] [, 'text']}, on the CPU) and its orbit cameras."""
    v, vbar, m, cams = clip_from_dataset(folder, size, num_frames)
    with torch.no_grad():
        entry = {
            "latents": encode(v[None])[0].cpu(),
            "static_latents": encode(vbar[None])[0].cpu(),
            "motion": torch.tensor([m], dtype=torch.float64),
        }
        if image_encoder is not None:
            front = v[0, ..., :3] * v[0, ..., 3:] + (1 - v[0, ..., 3:])
            entry["image_embeds"] = image_encoder(front[None])[0].float().cpu()
        if caption is not None:
            entry["text"] = text_encoder([caption])[0].float().cpu()
    return entry, cams


def load_clips(
    folders: Sequence[Path],
    size: int,
    num_frames: int,
    encode: Callable[[torch.Tensor], torch.Tensor],
    codec_id: str,
    image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
    captions: dict[str, str] | None = None,
    cache: str | Path | None = None,
    write_cache: bool = True,
    progress: bool = False,
    dtype: torch.dtype = torch.float16,
) -> ClipSet:
    """Encode every dataset into a :class:`ClipSet` (see the module docstring).

    encode: (B, T, H, W, 4) RGBA in [0, 1] -> (B, C, T, h, w) latents.
    image_encoder: (B, H, W, 3) -> (B, D); text_encoder: prompts -> (B, L, D) (both optional).
    captions: dataset name -> prompt (the text variant needs one per clip).
    """
    from safetensors.torch import load_file, save_file

    from gen4d.io import atomic_path

    if not folders:
        raise ValueError("no training datasets given")
    cache_dir = Path(cache) if cache else None
    latents, statics, motions, embeds, texts, names = [], [], [], [], [], []
    cameras = None
    iterator = folders
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(folders, desc="encoding clips")
    for folder in iterator:
        folder = Path(folder)
        name = folder.name
        caption = None
        if text_encoder is not None and captions is not None:
            if name not in captions:
                raise ValueError(f"no caption for dataset {name!r} in the captions file; add one")
            caption = captions[name]
        entry = None
        key = _encode_key(folder, size, codec_id + (f"|{caption}" if caption else ""), num_frames)
        cache_file = cache_dir / f"{name}-{key}.safetensors" if cache_dir else None
        if cache_file is not None and cache_file.is_file():
            entry = load_file(str(cache_file))
            if cameras is None:
                _, _, _, cameras = clip_from_dataset(folder, size, num_frames)
        if entry is None:
            entry, cams = encode_clip(folder, size, num_frames, encode, image_encoder, text_encoder, caption)
            cameras = cameras if cameras is not None else cams
            if cache_file is not None and write_cache:
                with atomic_path(cache_file) as tmp:
                    save_file({k: t.contiguous() for k, t in entry.items()}, str(tmp))
        latents.append(entry["latents"].to(dtype))
        statics.append(entry["static_latents"].to(dtype))
        motions.append(float(entry["motion"][0]))
        if "image_embeds" in entry:
            embeds.append(entry["image_embeds"])
        if "text" in entry:
            texts.append(entry["text"])
        names.append(name)
    shapes = {tuple(z.shape) for z in latents}
    if len(shapes) != 1:
        raise ValueError(f"training clips encode to different shapes {sorted(shapes)}; use one image size")
    return ClipSet(
        latents=torch.stack(latents),
        static_latents=torch.stack(statics),
        motion=torch.tensor(motions, dtype=torch.float32),
        image_embeds=torch.stack(embeds) if len(embeds) == len(latents) else None,
        text=torch.stack(texts) if len(texts) == len(latents) else None,
        names=names,
        cameras=cameras,
    )


def read_captions(path: str | Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object {{dataset name: caption}}")
    return data
