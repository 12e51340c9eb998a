"""Scoring a generated orbital video directly against the ground-truth orbit (the paper's
Diffusion4D* rows: the video model's own output, without a 4D construction).

The T generated frames are the orbit views of the ground truth's ``orbit`` split (camera and time
advancing together), in time order. PSNR / SSIM / LPIPS compare frame i with ground-truth view i on
white; CLIP-F scores the front view (frame 0, azimuth 0 at t = 0) and CLIP-O all T frames against the
reference (the prompt, or the ground truth's front image at t = 0), where the 4D protocol renders
the front view over time and 36 orbit views; FVD compares the generated clip with the ground-truth
orbit clip (pooled over videos: it needs at least two). Metrics run through
:func:`gen4d.eval.core.evaluate`, so missing weights are reported the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gen4d.data.dataset import MultiViewVideo
from gen4d.eval.core import EvalCase, EvalConfig, _Collected, _ground_truth, clip_reference

__all__ = ["read_video_frames", "collect_video", "video_case"]


def read_video_frames(path: str | Path) -> torch.Tensor:
    """(T, H, W, 3) float in [0, 1] from a video file or a frame folder; RGBA composited on white."""
    from gen4d.data.video_input import read_frames

    frames, _ = read_frames(path, max_frames=1024)
    video = torch.stack([torch.from_numpy(f.copy()) for f in frames]).float() / 255.0
    if video.shape[-1] == 4:
        video = video[..., :3] * video[..., 3:] + (1 - video[..., 3:])
    return video[..., :3].contiguous()


def video_case(name: str, frames: torch.Tensor, gt: MultiViewVideo) -> EvalCase:
    """An :class:`EvalCase` whose ``model`` is the generated frames (T, H, W, 3) (see :func:`collect_video`)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected frames (T, H, W, 3), got {tuple(frames.shape)}")
    if not gt.has_split("orbit"):
        raise ValueError(
            f"{gt.name}: scoring a video needs the ground truth's 'orbit' split; it has {sorted(gt.splits)}"
        )
    count = len(gt.splits["orbit"])
    if frames.shape[0] != count:
        raise ValueError(
            f"{name}: {frames.shape[0]} frames but the ground-truth orbit of {gt.name} has {count} views; "
            "pass the video generated for this orbit (one frame per view)"
        )
    return EvalCase(name=name, model=frames, gt=gt)


def collect_video(case: EvalCase, protocol: str, config: EvalConfig, options: Any = None) -> _Collected:
    """The video's frames paired with the ground-truth orbit (``evaluate(..., collect=collect_video)``)."""
    if protocol != "diffusion4d":
        raise ValueError("a generated video is scored with the diffusion4d protocol (pass --protocol diffusion4d)")
    gt = case.gt.resized(config.size) if config.size else case.gt
    index = gt.splits["orbit"]
    index = index[torch.argsort(gt.cameras.times[index], stable=True)]
    target = _ground_truth(gt, index, config.background)
    frames = case.model.float()
    if frames.shape[1:3] != target.shape[1:3]:  # compare at the ground truth's resolution
        frames = torch.nn.functional.interpolate(
            frames.permute(0, 3, 1, 2), size=tuple(target.shape[1:3]), mode="bilinear", antialias=True
        ).permute(0, 2, 3, 1)
    frames = frames.clamp(0, 1)
    collected = _Collected()
    collected.pairs["orbit"] = (frames, target)
    collected.clips.append((frames, target))
    collected.front = frames[:1]
    collected.orbit = frames
    collected.reference, collected.notes["clip_reference"] = clip_reference(gt, config)
    collected.notes["video"] = (
        "generated orbital video vs the ground-truth orbit: CLIP-F = frame 0, CLIP-O = all frames"
    )
    return collected
