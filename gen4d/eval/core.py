"""Evaluation of 4D runs against ground-truth multi-view videos (Consistent4D / Diffusion4D protocols).

A *case* is one run (a model with ``.render(cameras, background, options) -> RenderOutput``,
e.g. :func:`gen4d.recon.load_run`) and its ground truth (:class:`MultiViewVideo`). One *method*
is a list of cases (objects); its metrics pool every image and clip of every case:

* **consistent4d**: the ground truth's held-out ``eval`` split (4 views x T frames in the
  benchmark), composited on white; renders at the same cameras and times on white. PSNR, SSIM,
  LPIPS and CLIP (paired image-image cosine, images pre-resized to 512 as the benchmark does)
  averaged over all images; FVD over all views' clips (one clip per view, all frames in time order).
* **diffusion4d**: the ``orbit`` (V: 24 views, camera and time moving together) and ``front``
  (the front view over time) splits. PSNR / SSIM / LPIPS over those images; CLIP-F = mean cosine
  of the front-view renders against the reference (the text prompt if given, else the ground
  truth's front image at t = 0); CLIP-O = the same over ``orbit_views`` (36) renders spaced
  uniformly in azimuth (elevation 0, radius and FOV of the ground-truth orbit, time following
  the azimuth from 0 to 1); FVD over the orbit and front clips.

Metrics whose weights are missing (LPIPS, CLIP, FVD) are listed in ``skipped`` with the message
that says how to provide them, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from gen4d.cameras import Cameras, orbit
from gen4d.config import ConfigError, check_non_negative, check_positive
from gen4d.data.dataset import MultiViewVideo
from gen4d.eval.split import render_cameras, silhouette_counts

__all__ = [
    "EvalConfig",
    "EvalCase",
    "ALL_METRICS",
    "resolve_protocol",
    "group_views",
    "collect_case",
    "evaluate",
]

ALL_METRICS = ("psnr", "ssim", "lpips", "clip", "fvd", "iou")
Protocol = Literal["auto", "consistent4d", "diffusion4d"]


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate (the defaults follow the benchmarks; see docs/evaluation.md)."""

    protocol: Protocol = "auto"
    """'consistent4d' (held-out eval views), 'diffusion4d' (orbit + front) or 'auto' (eval split if present)."""
    metrics: tuple[str, ...] = ALL_METRICS
    """Metrics to compute, from psnr, ssim, lpips, clip, fvd, iou (clip = CLIP for consistent4d, CLIP-F/O for
    diffusion4d; iou = silhouette IoU of alpha > 0.5, when the ground truth has alpha)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background of renders and ground truth (both protocols use white)."""
    size: int = 0
    """Evaluation resolution (square); 0 = the ground truth's own."""
    eval_split: str = "eval"
    """Ground-truth split holding the consistent4d held-out views."""
    lpips_net: Literal["vgg", "alex"] = "vgg"
    """LPIPS trunk: 'vgg' (Consistent4D, torchmetrics) or 'alex'."""
    lpips_weights: str = ""
    """Torchvision trunk file or folder for LPIPS ('' = $GEN4D_WEIGHTS_DIR or torch hub's cache)."""
    clip_model: str = "openai/clip-vit-base-patch32"
    """CLIP folder or hub id in the local Hugging Face cache (never downloaded)."""
    clip_pre_resize: int = -1
    """Resize images to this square size before CLIP; -1 = protocol default (512 consistent4d, none diffusion4d); 0 = none."""
    prompt: str = ""
    """Text reference for CLIP-F / CLIP-O (text-to-4D); '' = the ground truth's front image at t = 0."""
    orbit_views: int = 36
    """Number of uniformly spaced orbit renders for CLIP-O (Diffusion4D uses 36)."""
    i3d_weights: str = ""
    """I3D file or folder for FVD (rgb_imagenet.pt; '' = $GEN4D_WEIGHTS_DIR or torch hub's cache)."""
    fvd_size: int = 224
    """I3D input size (224 = the FVD standard; other sizes give numbers comparable only among themselves)."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda[:i]'."""
    backend: Literal["auto", "gsplat", "torch"] = "auto"
    """Rasteriser backend for the renders."""
    render_batch: int = 8
    """Cameras per render call."""
    metric_batch: int = 8
    """Images per LPIPS / CLIP forward pass."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(ALL_METRICS))
        if unknown or not self.metrics:
            raise ConfigError(
                "metrics",
                f"unknown {unknown or 'none given'}; expected a subset of {', '.join(ALL_METRICS)}",
                "EvalConfig",
            )
        check_non_negative(self, "size")
        check_positive(self, "orbit_views", "fvd_size", "render_batch", "metric_batch")
        if self.clip_pre_resize < -1:
            raise ConfigError(
                "clip_pre_resize", f"expected -1, 0 or a size > 0, got {self.clip_pre_resize}", "EvalConfig"
            )


@dataclass
class EvalCase:
    """One object: a renderable model and its ground truth."""

    name: str
    """Label in reports (e.g. the run folder name)."""
    model: Any
    """Anything with ``.render(cameras, background, options) -> RenderOutput`` (e.g. gen4d.recon.DynamicGaussians)."""
    gt: MultiViewVideo
    """Ground truth with the protocol's splits."""
    generation_time_s: float | None = None
    """Wall time of the run that produced the model (from its logs), if known."""


@dataclass
class _Collected:
    """Renders and targets of one case, grouped for the metrics."""

    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """split -> (renders (M, H, W, 3), ground truth (M, H, W, 3))."""
    alphas: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """split -> (rendered alpha (M, H, W, 1), ground-truth alpha), for splits where both exist."""
    clips: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    """(render clip (T, H, W, 3), ground-truth clip (T, H, W, 3)) per view."""
    front: torch.Tensor | None = None
    """(T, H, W, 3) front-view renders for CLIP-F."""
    orbit: torch.Tensor | None = None
    """(orbit_views, H, W, 3) orbit renders for CLIP-O."""
    reference: torch.Tensor | str | None = None
    """CLIP-F / CLIP-O reference: a prompt or a (1, H, W, 3) image."""
    notes: dict[str, Any] = field(default_factory=dict)


def resolve_protocol(gt: MultiViewVideo, config: EvalConfig) -> str:
    """The protocol to use for ``gt`` (checks that the splits it needs exist)."""
    protocol = config.protocol
    if protocol == "auto" and config.eval_split != EvalConfig.eval_split and not gt.has_split(config.eval_split):
        # A split named on purpose and missing is a mistake, not a reason to switch protocols quietly.
        raise ValueError(
            f"--eval_split {config.eval_split!r}: {gt.name} has no such split (it has {sorted(gt.splits)}); "
            "name one of those, or leave --eval_split out"
        )
    if protocol == "auto":
        if gt.has_split(config.eval_split):
            protocol = "consistent4d"
        elif gt.has_split("orbit"):
            protocol = "diffusion4d"
        else:
            raise ValueError(
                f"{gt.name}: cannot pick an evaluation protocol: no {config.eval_split!r} split (consistent4d) and no "
                f"'orbit' split (diffusion4d); it has {sorted(gt.splits)}. Pass --protocol and a ground truth with those views"
            )
    if protocol == "consistent4d" and not gt.has_split(config.eval_split):
        raise ValueError(
            f"{gt.name}: the consistent4d protocol needs held-out views in split {config.eval_split!r}; "
            f"the ground truth has {sorted(gt.splits)}"
        )
    if protocol == "diffusion4d" and not gt.has_split("orbit"):
        raise ValueError(
            f"{gt.name}: the diffusion4d protocol needs an 'orbit' split; the ground truth has {sorted(gt.splits)}"
        )
    if protocol not in ("consistent4d", "diffusion4d"):
        raise ValueError(f"protocol: unknown {protocol!r}; expected 'auto', 'consistent4d' or 'diffusion4d'")
    return protocol


def group_views(cameras: Cameras, atol: float = 1e-4) -> list[torch.Tensor]:
    """Indices of the cameras grouped by pose (same extrinsics and intrinsics), each group sorted
    by time; groups in order of first appearance. A view seen at T times is one clip."""
    keys = torch.cat(
        [
            cameras.world_to_camera.reshape(len(cameras), 16),
            torch.stack([cameras.fx, cameras.fy, cameras.cx, cameras.cy], 1),
        ],
        dim=1,
    ).double()
    groups: list[list[int]] = []
    anchors: list[torch.Tensor] = []
    for i in range(len(cameras)):
        for group, anchor in zip(groups, anchors):
            if torch.allclose(keys[i], anchor, atol=atol, rtol=0):
                group.append(i)
                break
        else:
            groups.append([i])
            anchors.append(keys[i])
    out = []
    for group in groups:
        index = torch.tensor(group, dtype=torch.long)
        out.append(index[torch.argsort(cameras.times[index], stable=True)])
    return out


def _ground_truth(gt: MultiViewVideo, index: torch.Tensor, background: Sequence[float]) -> torch.Tensor:
    return gt.subset(index).composited(background).float().clamp(0, 1)


def _orbit_cameras(gt: MultiViewVideo, count: int) -> Cameras:
    """``count`` cameras uniformly in azimuth at elevation 0, with the radius and FOV of the
    ground truth's orbit, times 0 -> 1 along the orbit."""
    reference = gt.cameras[gt.splits["orbit"][:1]]
    radius = float(reference.centers[0].norm())
    fov = float(reference.fov_y_deg[0])
    steps = torch.arange(count, dtype=torch.float32)
    times = steps / max(count - 1, 1)
    return orbit(0.0, 360.0 * steps / count, radius, fov, gt.width, gt.height, times, fov_axis="y")


def clip_reference(gt: MultiViewVideo, config: EvalConfig) -> tuple[torch.Tensor | str, str]:
    """The CLIP-F / CLIP-O reference of the diffusion4d protocol and a note saying what it is: the
    prompt if given, else the ground truth's front (or orbit) image at the first time (1, H, W, 3)."""
    if config.prompt:
        return config.prompt, f"text: {config.prompt!r}"
    ref_split = "front" if gt.has_split("front") else "orbit"
    index = gt.splits[ref_split]
    first = index[torch.argmin(gt.cameras.times[index])]
    note = f"ground-truth {ref_split} image at t={float(gt.cameras.times[first]):.3f}"
    return _ground_truth(gt, first.view(1), config.background), note


def collect_case(case: EvalCase, protocol: str, config: EvalConfig, options: Any) -> _Collected:
    """Render ``case.model`` at the protocol's cameras and gather the matching ground truth."""
    gt = case.gt
    if config.size:
        gt = gt.resized(config.size)
    collected = _Collected()
    bg = config.background
    render = lambda cams: render_cameras(case.model, cams, bg, options, config.render_batch)  # noqa: E731
    if protocol == "consistent4d":
        splits = [config.eval_split]
    else:
        splits = ["orbit"] + (["front"] if gt.has_split("front") else [])
    for split in splits:
        index = gt.splits[split]
        out = render(gt.cameras[index])
        renders = out.rgb
        target = _ground_truth(gt, index, bg)
        collected.pairs[split] = (renders, target)
        if out.alpha is not None and gt.alphas is not None:
            collected.alphas[split] = (out.alpha, gt.alphas[index])
        # Clips: per view for held-out views; the whole split for an orbit / front video.
        if protocol == "consistent4d":
            for view in group_views(gt.cameras[index]):
                collected.clips.append((renders[view], target[view]))
        else:
            order = torch.argsort(gt.cameras.times[index], stable=True)
            collected.clips.append((renders[order], target[order]))
            if split == "front":
                collected.front = renders[order]
    if protocol == "diffusion4d":
        collected.reference, collected.notes["clip_reference"] = clip_reference(gt, config)
        if collected.front is None:
            collected.notes["clip_f"] = "no 'front' split: CLIP-F uses orbit view 0 only"
            collected.front = collected.pairs["orbit"][0][:1]
        if config.orbit_views > 0:
            collected.orbit = render(_orbit_cameras(gt, config.orbit_views)).rgb
    return collected


class _Networks:
    """Loads each metric network once, on first use; failures become 'skipped' reasons."""

    def __init__(self, config: EvalConfig, device: torch.device, protocol: str, loaders: dict[str, Callable] | None):
        self.config, self.device, self.protocol = config, device, protocol
        self.loaders = loaders or {}
        self.cache: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}

    def get(self, name: str):
        if name in self.cache:
            return self.cache[name]
        if name in self.skipped:
            return None
        from gen4d.metrics.weights import MissingWeightsError

        try:
            loader = self.loaders.get(name) or getattr(self, f"_load_{name}")
            self.cache[name] = loader()
        except (MissingWeightsError, ImportError) as err:
            self.skipped[name] = str(err)
            return None
        return self.cache[name]

    def _load_lpips(self):
        from gen4d.metrics.perceptual import LPIPS

        config = self.config
        return LPIPS.from_pretrained(config.lpips_net, trunk_weights=config.lpips_weights or None).to(self.device)

    def _load_clip(self):
        from gen4d.metrics.clip import CLIPScorer

        pre = self.config.clip_pre_resize
        if pre < 0:
            pre = 512 if self.protocol == "consistent4d" else 0
        return CLIPScorer.from_pretrained(self.config.clip_model, device=self.device, pre_resize=pre or None)

    def _load_fvd(self):
        from gen4d.metrics.fvd import load_i3d

        return load_i3d(self.config.i3d_weights or None, device=self.device)


def _batched(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor, size: int, device
) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, a.shape[0], size):
            out.append(fn(a[start : start + size].to(device), b[start : start + size].to(device)).float().cpu())
    return torch.cat(out)


def _mean(values: list[torch.Tensor]) -> float | None:
    if not values:
        return None
    return float(torch.cat(values).double().mean())


def evaluate(
    cases: Sequence[EvalCase],
    config: EvalConfig = EvalConfig(),
    method: str = "gen4d",
    loaders: dict[str, Callable[[], Any]] | None = None,
    progress: bool = True,
    collect: Callable[[EvalCase, str, EvalConfig, Any], _Collected] | None = None,
) -> dict[str, Any]:
    """Evaluate one method over ``cases``; returns the report dict (see :mod:`gen4d.eval.report`).

    loaders: optional overrides ``{"lpips" | "clip" | "fvd": () -> network}`` (tests pass small
    random networks; the defaults load pretrained weights or report the metric as skipped).
    collect: how a case's images are obtained (default :func:`collect_case`, rendering the model;
    :func:`gen4d.eval.video.collect_video` takes a generated video's frames instead).
    """
    from tqdm.auto import tqdm

    from gen4d.metrics.clip import clip_reference_similarity, clip_similarity
    from gen4d.metrics.fvd import MIN_FRAMES, fvd_from_features, i3d_features
    from gen4d.metrics.image import psnr, ssim
    from gen4d.render import RenderOptions

    if not cases:
        raise ValueError("evaluate: no cases; expected at least one (run, ground truth) pair")
    unknown = sorted(set(config.metrics) - set(ALL_METRICS))
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; expected a subset of {list(ALL_METRICS)}")
    protocols = {resolve_protocol(case.gt, config) for case in cases}
    if len(protocols) != 1:
        raise ValueError(f"cases need different protocols {sorted(protocols)}; pass --protocol to choose one")
    protocol = protocols.pop()
    device = torch.device(
        config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    options = RenderOptions(backend=config.backend)
    nets = _Networks(config, device, protocol, loaders)
    wanted = set(config.metrics)

    per_image: dict[str, list[torch.Tensor]] = {
        "psnr": [],
        "ssim": [],
        "lpips": [],
        "clip": [],
        "clip_f": [],
        "clip_o": [],
    }
    silhouettes = [0, 0]  # intersection and union pixel counts over every case
    clips_real: list[torch.Tensor] = []
    clips_fake: list[torch.Tensor] = []
    per_case: list[dict[str, Any]] = []
    notes: dict[str, Any] = {}
    image_count = 0
    for case in tqdm(cases, desc="eval", disable=not progress or len(cases) < 2):
        collected = (collect or collect_case)(case, protocol, config, options)
        notes.update(collected.notes)
        case_values: dict[str, list[torch.Tensor]] = {k: [] for k in per_image}
        case_iou = [0, 0]
        for split, (pred, target) in collected.pairs.items():
            if pred.shape != target.shape:
                raise ValueError(
                    f"{case.name}: renders {tuple(pred.shape)} and ground truth {tuple(target.shape)} of split {split!r} "
                    "differ; the model must render at the ground truth's resolution"
                )
            image_count += pred.shape[0]
            if "psnr" in wanted:
                case_values["psnr"].append(psnr(pred, target, reduction="none"))
            if "ssim" in wanted:
                case_values["ssim"].append(_batched(lambda a, b: ssim(a, b, reduction="none"), pred, target, 64, "cpu"))
            if "iou" in wanted and split in collected.alphas:
                inter, union = silhouette_counts(*collected.alphas[split])
                case_iou[0] += inter
                case_iou[1] += union
            if "lpips" in wanted and (net := nets.get("lpips")) is not None:
                case_values["lpips"].append(_batched(net, pred, target, config.metric_batch, device))
            if "clip" in wanted and protocol == "consistent4d" and (scorer := nets.get("clip")) is not None:
                sim = lambda a, b: clip_similarity(scorer, a, b, reduction="none")  # noqa: E731
                case_values["clip"].append(_batched(sim, pred, target, config.metric_batch, device))
        if "clip" in wanted and protocol == "diffusion4d" and (scorer := nets.get("clip")) is not None:
            with torch.no_grad():
                case_values["clip_f"].append(
                    clip_reference_similarity(scorer, collected.front, collected.reference, "none").cpu()
                )
                if collected.orbit is not None:
                    case_values["clip_o"].append(
                        clip_reference_similarity(scorer, collected.orbit, collected.reference, "none").cpu()
                    )
        for fake, real in collected.clips:
            clips_fake.append(fake)
            clips_real.append(real)
        for key, values in case_values.items():
            per_image[key].extend(values)
        silhouettes = [silhouettes[0] + case_iou[0], silhouettes[1] + case_iou[1]]
        case_metrics = {k: _mean(v) for k, v in case_values.items() if v}
        if "iou" in wanted and collected.alphas:
            case_metrics["iou"] = case_iou[0] / case_iou[1] if case_iou[1] else 1.0
        per_case.append(
            {
                "name": case.name,
                "ground_truth": case.gt.name,
                "images": int(sum(p.shape[0] for p, _ in collected.pairs.values())),
                "clips": len(collected.clips),
                "generation_time_s": case.generation_time_s,
                "metrics": case_metrics,
            }
        )

    metrics: dict[str, float | None] = {}
    for key in ("psnr", "ssim", "lpips", "clip", "clip_f", "clip_o"):
        value = _mean(per_image[key])
        if value is not None:
            metrics[key] = value
    skipped = {name: reason for name, reason in nets.skipped.items()}
    if "iou" in wanted:
        if all("iou" in c["metrics"] for c in per_case):
            metrics["iou"] = silhouettes[0] / silhouettes[1] if silhouettes[1] else 1.0
        else:
            skipped["iou"] = "no alpha in the ground truth or the renders (silhouette IoU needs both)"
    if "fvd" in wanted:
        frames = {c.shape[0] for c in clips_real}
        if len(clips_real) < 2:
            skipped["fvd"] = (
                f"only {len(clips_real)} clip per side; the pooled FVD needs at least 2 (evaluate more views or objects together)"
            )
        elif min(frames) < MIN_FRAMES:
            skipped["fvd"] = f"clips have {min(frames)} frames; I3D needs at least {MIN_FRAMES}"
        elif (i3d := nets.get("fvd")) is not None:
            real_feats = [i3d_features(i3d, clip[None].to(device), config.fvd_size) for clip in clips_real]
            fake_feats = [i3d_features(i3d, clip[None].to(device), config.fvd_size) for clip in clips_fake]
            import numpy as np

            metrics["fvd"] = fvd_from_features(np.concatenate(real_feats), np.concatenate(fake_feats))
        if "fvd" in nets.skipped:
            skipped["fvd"] = nets.skipped["fvd"]
    times = [c.generation_time_s for c in cases if c.generation_time_s is not None]
    if len(times) == len(cases):
        metrics["generation_time_s"] = float(sum(times) / len(times))
    else:
        missing = [c.name for c in cases if c.generation_time_s is None]
        skipped["generation_time"] = (
            f"no wall time in the run logs of {missing} (RUN/metrics.json 'wall_time_s' or RUN/log.txt)"
        )
    if protocol == "diffusion4d" and "clip" in skipped:  # CLIP feeds CLIP-F and CLIP-O there
        reason = skipped.pop("clip")
        skipped["clip_f"] = skipped["clip_o"] = reason
    if "lpips" in skipped:
        skipped[f"lpips_{config.lpips_net}"] = skipped.pop("lpips")
    if "lpips" in metrics:
        metrics[f"lpips_{config.lpips_net}"] = metrics.pop("lpips")

    return {
        "format": "gen4d.eval/1",
        "method": method,
        "protocol": protocol,
        "metrics": metrics,
        "skipped": skipped,
        "counts": {
            "cases": len(cases),
            "images": image_count,
            "clips_per_side": len(clips_real),
            "clip_frames": sorted({int(c.shape[0]) for c in clips_real}),
        },  # fmt: skip
        "cases": per_case,
        "notes": notes,
        "config": _config_dict(config),
        "device": str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})",
    }


def _config_dict(config: EvalConfig) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
