"""Find a whole-object turn per time by search, before the fine stage (:class:`gen4d.deform.turn.TurnTrack`).

After the static stage the canonical Gaussians are the object at time 0. For every time of the
orbit video the canonical set is rendered turned by each candidate yaw (``step`` degrees apart, at
``size`` px) from that time's training cameras and compared with its images (mean absolute
difference of the silhouette plus that of the colours on white). A shortest path through the
(time x angle) costs, with the turn at the first time fixed to 0 and a penalty on the change
between neighbouring times (``smoothness``, in units of the mean per-time cost per 180 degrees),
gives one angle per time; each is then refined in 1-degree steps around it.

The track is kept only when it explains the images clearly better than no turn: its summed cost
must be at least ``min_gain`` (a fraction) below the cost of the identity, and it must turn by at
least ``min_degrees`` somewhere. Otherwise the model is left untouched, so objects that do not
turn train exactly as without the search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from gen4d.config import check_non_negative, check_positive, check_range
from gen4d.data.dataset import MultiViewVideo
from gen4d.deform.turn import turn, unwrap_degrees
from gen4d.gaussians.dynamic import DynamicGaussians
from gen4d.render import RenderOptions, render

__all__ = [
    "TurnSearchConfig",
    "RigidMotionConfig",
    "search_turn",
    "object_center",
    "learn_rigid_motion",
    "rigid_motion_report",
]


@dataclass(frozen=True)
class TurnSearchConfig:
    """Search for a whole-object turn about the vertical axis per time before the fine stage."""

    enabled: bool = True
    """Search (needs a coarse stage trained on the static orbit alone, so the canonical set is the object at time 0)."""
    step: float = 10.0
    """Spacing of the candidate angles, degrees (refined in 1-degree steps afterwards)."""
    size: int = 64
    """Longer side of the images compared, pixels."""
    smoothness: float = 1.0
    """Penalty on a change of angle between neighbouring times (mean per-time cost per 180 degrees)."""
    min_gain: float = 0.2
    """Keep the track only if it lowers the summed image cost by at least this fraction."""
    min_degrees: float = 20.0
    """Keep the track only if it turns by at least this much (degrees) at some time."""

    def __post_init__(self) -> None:
        check_range(self, "step", 1.0, 90.0)
        check_positive(self, "size")
        check_non_negative(self, "smoothness")
        check_range(self, "min_gain", 0.0, 1.0)
        check_non_negative(self, "min_degrees")


@dataclass(frozen=True)
class RigidMotionConfig:
    """A learned whole-object rigid motion per time (rotation about the object's centre and
    translation, on top of the searched turn) in the fine stage (:meth:`gen4d.deform.turn.TurnTrack.make_learnable`)."""

    when: Literal["never", "turn", "always"] = "turn"
    """Learn it never, only when the turn search kept a turn ('turn': the object turns as a whole), or always (6 numbers per orbit time; zero at the first time, which the static orbit shows)."""


def _targets(dataset: MultiViewVideo, index: torch.Tensor, size: int, device: torch.device):
    scale = size / max(dataset.width, dataset.height)
    width, height = max(1, round(dataset.width * scale)), max(1, round(dataset.height * scale))
    rgb = dataset.images[index].to(device).permute(0, 3, 1, 2)
    alpha = None if dataset.alphas is None else dataset.alphas[index].to(device).permute(0, 3, 1, 2)
    if alpha is not None:
        rgb = rgb * alpha + (1 - alpha)  # on white, as the renders below
    shrink = lambda x: F.interpolate(x, size=(height, width), mode="area").permute(0, 2, 3, 1)  # noqa: E731
    return (
        shrink(rgb),
        None if alpha is None else shrink(alpha),
        dataset.cameras[index].resized(width, height).to(device),
    )


@torch.no_grad()
def _costs(canonical, center, cameras, rgb, alpha, degrees: torch.Tensor, options: RenderOptions, chunk: int = 32):
    """(M,) mean |alpha - truth| + mean |rgb - truth| of each image against the canonical set turned by
    that image's angle (``degrees`` (M,)); one rasteriser call per ``chunk`` images."""
    white = torch.ones(3, device=center.device)
    degrees = degrees.to(center.device)
    out = []
    for start in range(0, len(cameras), chunk):
        sl = slice(start, start + chunk)
        count = degrees[sl].numel()
        turned = turn(canonical.map(lambda x, n=count: x.expand(n, *x.shape)), degrees[sl], center)
        output = render(turned, cameras[sl], white, options)
        cost = (output.rgb - rgb[sl]).abs().mean((1, 2, 3))
        if alpha is not None:
            cost = cost + (output.alpha - alpha[sl]).abs().mean((1, 2, 3))
        out.append(cost)
    return torch.cat(out).cpu()


def _per_time(per_image: torch.Tensor, which: torch.Tensor, count: int) -> torch.Tensor:
    """Mean over the images of each time: (M, ...) -> (count, ...)."""
    total = torch.zeros(count, *per_image.shape[1:]).index_add_(0, which, per_image)
    return total / torch.bincount(which, minlength=count).clamp_min(1).view(-1, *[1] * (per_image.ndim - 1))


def object_center(canonical) -> torch.Tensor:
    """Opacity-weighted mean position (3,) of a canonical set: the point the whole-object motions turn about."""
    weights = torch.sigmoid(canonical.opacity_logits)
    return (canonical.means * weights[:, None]).sum(0) / weights.sum().clamp_min(1e-8)


def _shortest_path(costs: torch.Tensor, degrees: torch.Tensor, penalty: float) -> torch.Tensor:
    """Angle index per time (T,) minimising sum of costs (T, A) + penalty * |change| / 180, first time at angle 0."""
    diff = (degrees[:, None] - degrees[None, :]).abs()
    jump = penalty * torch.minimum(diff, 360.0 - diff) / 180.0  # (A from, A to)
    total = torch.full_like(costs[0], float("inf"))
    total[0] = costs[0, 0]
    back = []
    for t in range(1, costs.shape[0]):
        best, arg = (total[:, None] + jump).min(0)
        back.append(arg)
        total = best + costs[t]
    path = [int(total.argmin())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return torch.tensor(path[::-1])


def search_turn(
    model: DynamicGaussians, dataset: MultiViewVideo, config: TurnSearchConfig, options: RenderOptions
) -> dict[str, Any]:
    """Search a turn track for ``model`` on the orbit split of ``dataset``; set it on ``model.turn``
    when it is kept. Returns a report (``kept``, ``reason``, ``gain``, per-time ``degrees``)."""
    index = dataset.splits["orbit"]
    device = model.device
    times_all = dataset.cameras.times[index]
    knots, which = torch.unique(times_all, sorted=True, return_inverse=True)
    if knots.numel() < 2:
        return {"kept": False, "reason": "fewer than 2 times"}
    rgb, alpha, cameras = _targets(dataset, index, config.size, device)
    canonical = model.canonical().detach()
    center = object_center(canonical)

    def costs(per_image_degrees: torch.Tensor) -> torch.Tensor:
        return _costs(canonical, center, cameras, rgb, alpha, per_image_degrees, options)

    count = max(2, round(360.0 / config.step))
    coarse = torch.arange(count, dtype=torch.float32) * (360.0 / count)
    per_time = _per_time(torch.stack([costs(angle.expand(len(index))) for angle in coarse], 1), which, knots.numel())
    identity = float(per_time[:, 0].sum())
    penalty = config.smoothness * identity / knots.numel()
    path = coarse[_shortest_path(per_time, coarse, penalty)]
    # Refine each time's angle in 1-degree steps around its coarse value (the first time stays at 0).
    half = max(1, int(config.step // 2))
    offsets = torch.arange(-half, half + 1, dtype=torch.float32)
    offsets_of = torch.where(torch.arange(knots.numel())[:, None] == 0, 0.0, offsets[None, :])  # (T, offsets)
    candidates = path[:, None] + offsets_of
    refined = _per_time(
        torch.stack([costs(candidates[which, j]) for j in range(offsets.numel())], 1), which, knots.numel()
    )
    best = refined.argmin(1)
    fine = candidates.gather(1, best[:, None])[:, 0]
    fine_cost = refined.gather(1, best[:, None])[:, 0]
    degrees = unwrap_degrees(fine)
    gain = 1.0 - float(fine_cost.sum()) / max(identity, 1e-12)
    largest = float(degrees.abs().max())
    report = {"gain": round(gain, 4), "largest_degrees": round(largest, 1),
              "degrees": [round(float(d), 1) for d in degrees], "times": [round(float(t), 4) for t in knots]}  # fmt: skip
    if gain < config.min_gain or largest < config.min_degrees:
        report.update(
            kept=False,
            reason=f"gain {gain:.3f} (min {config.min_gain}), largest turn {largest:.0f} degrees (min {config.min_degrees:.0f})",
        )
        return report
    model.turn.set(knots, degrees, center)
    report.update(kept=True, reason=f"gain {gain:.3f}, largest turn {largest:.0f} degrees")
    return report


def learn_rigid_motion(model: DynamicGaussians, dataset: MultiViewVideo) -> list[torch.nn.Parameter]:
    """Give ``model.turn`` a learned rigid motion at the orbit's times (keeping a searched turn when it
    has one, else a zero turn about the canonical set's centre); returns the new parameters."""
    if not model.turn.active:
        knots = torch.unique(dataset.cameras.times[dataset.splits["orbit"]], sorted=True)
        if knots.numel() < 2:
            raise ValueError(f"{dataset.name}: a learned rigid motion needs 2 or more orbit times")
        model.turn.set(knots, torch.zeros_like(knots), object_center(model.canonical().detach()))
    return model.turn.make_learnable()


def rigid_motion_report(model: DynamicGaussians) -> dict[str, Any] | None:
    """The learned whole-object motion per time (degrees of rotation, translation length), or None."""
    if not model.turn.learnable:
        return None
    with torch.no_grad():
        rotation, shift = model.turn.rigid(model.turn.times)
    return {"degrees": [round(float(d), 2) for d in rotation.norm(dim=-1).rad2deg()],
            "translation": [round(float(d), 4) for d in shift.norm(dim=-1)],
            "times": [round(float(t), 4) for t in model.turn.times]}  # fmt: skip
