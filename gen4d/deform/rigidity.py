"""Local rigidity of the motion between neighbouring Gaussians (field-agnostic regulariser).

With one view per time step (an orbital video), a deformation field can explain each frame by
moving every Gaussian on its own: the training view is matched, but moving parts fall apart at
the views that time was not seen from. Real parts move (nearly) rigidly, so neighbouring
Gaussians should keep their distances and turn together. For a Gaussian ``i`` with canonical
position ``x_i``, canonical rotation ``q_i`` and its ``K`` nearest canonical neighbours ``j``,
at time ``t`` (primes: deformed):

* ``rigidity``: ``|(x'_j - x'_i) - R_i (x_j - x_i)|^2`` with ``R_i = R(q'_i) R(q_i)^T``, the
  rotation the field applied to ``i`` (Dynamic 3D Gaussians' local-rigidity loss, with the
  canonical set as the reference frame);
* ``isometry``: ``| |x'_j - x'_i| - |x_j - x_i| |`` (distances are kept);
* ``displacement`` (only when asked for): ``|x'_i - x_i|^2`` of the anchors moved by the field alone,
  for a field that should leave a learned whole-object motion to it (the caller decides when).

The first two are averaged over edges weighted by ``exp(-|x_j - x_i|^2 / (2 s^2))`` (``s^2`` = the mean
squared neighbour distance of the sample, so far neighbours count less) and over the step's
times, and divided by ``s^2`` and ``s`` respectively, so they are relative to the local spacing
of the Gaussians and their weights do not depend on the scene's scale; the displacement is averaged
over anchors and times and divided by ``s^2``.

Cost: a random sample of ``samples`` anchor Gaussians per call; their neighbours are found
among all canonical Gaussians on the fly (chunked distances), so there is no cached state to
keep in lockstep with densification and a resumed run draws the same samples (the global RNG
state is part of every checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gen4d.config import check_non_negative, check_positive
from gen4d.gaussians.core import Gaussians

__all__ = ["RigidityConfig", "nearest_neighbours", "rigidity_anchors", "rigidity_terms"]


@dataclass(frozen=True)
class RigidityConfig:
    """Local-rigidity regularisers of the motion (weights: LossWeights.rigidity / isometry)."""

    samples: int = 0
    """Anchor Gaussians drawn per step (0 = off)."""
    neighbours: int = 8
    """Nearest canonical neighbours of each anchor."""
    displacement: bool = False
    """While a whole-object rigid motion is learned (ConstructConfig.rigid), also ``displacement`` (weight
    LossWeights.displacement): the anchors' mean squared displacement by the field alone, relative to
    the mean squared neighbour distance, so the field leaves to the rigid motion what it explains."""

    def __post_init__(self) -> None:
        check_non_negative(self, "samples")
        check_positive(self, "neighbours")


def nearest_neighbours(query: torch.Tensor, points: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices (Q, k) of the ``k`` nearest ``points`` (N, 3) of each ``query`` (Q, 3), the point
    itself excluded when it is among ``points`` (distance 0 is skipped by taking k + 1)."""
    out = []
    for start in range(0, query.shape[0], chunk):
        dist = torch.cdist(query[start : start + chunk], points)
        out.append(dist.topk(k + 1, largest=False).indices[:, 1:])
    return torch.cat(out)


def rigidity_anchors(count: int, config: RigidityConfig, device: torch.device) -> torch.Tensor:
    """The anchor Gaussians of one step's rigidity terms: ``min(samples, count)`` random indices
    (drawn on ``device``'s generator)."""
    return torch.randint(0, count, (min(config.samples, count),), device=device)


def rigidity_terms(
    field,
    canonical: Gaussians,
    times: torch.Tensor,
    config: RigidityConfig,
    moved: Gaussians | None = None,
    anchors: torch.Tensor | None = None,
    whole: Callable[[Gaussians, torch.Tensor], Gaussians] | None = None,
) -> dict[str, torch.Tensor]:
    """``{"rigidity", "isometry"}`` (and ``displacement`` when the config asks) of ``field`` (a
    deformation field: ``(Gaussians (n), times (B,)) -> Gaussians (B, n)``) on a random sample of
    the canonical set (N, ...) at ``times`` (B,).
    ``moved``: the whole set already deformed to ``times`` (B, N, ...), e.g. the one a training step
    renders; the sample is then taken from it instead of running the field again (same values,
    one field pass per step, and a field with per-Gaussian caches never sees a subset).
    ``whole``: the rigid whole-object motion ``moved`` carries on top of the field (``(Gaussians (B,
    n), times) -> Gaussians``, e.g. the model's turn track); the displacement is measured from the
    canonical anchors moved by it, which equals the field's own displacement (a rigid motion keeps
    distances) without a second field pass. ``anchors``: the sample (:func:`rigidity_anchors`),
    drawn here when not given."""
    count = canonical.means.shape[0]
    k = min(config.neighbours, count - 1)
    if config.samples <= 0 or k < 1:
        return {}
    means = canonical.means
    if anchors is None:
        anchors = rigidity_anchors(count, config, means.device)
    with torch.no_grad():
        neighbours = nearest_neighbours(means[anchors].detach(), means.detach(), k)  # (S, K)
    rows = torch.cat([anchors[:, None], neighbours], 1)  # (S, 1 + K)
    flat = rows.reshape(-1)
    batch, samples = times.shape[0], rows.shape[0]
    carries_whole = moved is not None and whole is not None  # else ``moved`` is the field's alone
    if moved is None and getattr(field, "per_gaussian_parameters", dict)():
        # Parameters with one row per Gaussian (learned blend weights) describe the whole set only:
        # deform all of it and read the sample from it below.
        moved = field(canonical, times)
    if moved is None:
        moved = field(canonical.map(lambda x: x[flat]), times)  # (B, S * (1 + K), ...)
        now, q_now = moved.means, moved.quats.reshape(batch, samples, 1 + k, 4)[:, :, 0]
    else:  # only the rows the terms read: fewer gathers (and scatters in the backward pass)
        now, q_now = moved.means[:, flat], moved.quats[:, anchors]
    rest = means[flat].reshape(samples, 1 + k, 3)
    now = now.reshape(batch, samples, 1 + k, 3)
    rest_offset = rest[:, 1:] - rest[:, :1]  # (S, K, 3)
    now_offset = now[:, :, 1:] - now[:, :, :1]  # (B, S, K, 3)
    rest_sq = rest_offset.square().sum(-1)  # (S, K)
    scale = rest_sq.detach().mean().clamp_min(1e-12)
    weights = torch.exp(-rest_sq.detach() / (2 * scale))
    weights = weights / weights.sum()
    # Rotation the field gave each anchor, R(q') R(q)^T, applied to the rest offsets as two
    # quaternion rotations (fewer kernels than building and multiplying 3x3 matrices).
    q_rest = F.normalize(canonical.quats[anchors], dim=-1)  # (S, 4)
    conjugate = torch.cat([q_rest[:, :1], -q_rest[:, 1:]], dim=-1)  # no constant copied to the device per step
    unturned = _rotate(conjugate[:, None], rest_offset)  # R(q)^T (x_j - x_i): (S, K, 3)
    expected = _rotate(F.normalize(q_now, dim=-1)[:, :, None], unturned[None])  # (B, S, K, 3)
    # Relative to the mean neighbour distance, so weights do not depend on the scene's scale.
    rigidity = ((now_offset - expected).square().sum(-1) * weights).sum() / (batch * scale)
    length_now = (now_offset.square().sum(-1) + 1e-12).sqrt()
    isometry = ((length_now - (rest_sq + 1e-12).sqrt()).abs() * weights).sum() / (batch * scale.sqrt())
    terms = {"rigidity": rigidity, "isometry": isometry}
    if config.displacement:
        rest_anchors = rest[None, :, 0].expand(batch, -1, -1)  # (B, S, 3)
        if carries_whole:
            sample = canonical.map(lambda x: x[anchors].expand(batch, *[-1] * x.dim()))  # (B, S, ...)
            rest_anchors = whole(sample, times).means
        terms["displacement"] = (now[:, :, 0] - rest_anchors).square().sum(-1).mean() / scale
    return terms


def _rotate(quats: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``vectors`` (..., 3) turned by unit quaternions (w, x, y, z) (..., 4) broadcast against them:
    ``v + w t + u x t`` with ``t = 2 u x v``."""
    # torch.broadcast_tensors, not torch.broadcast_shapes: the latter goes through torch._refs, whose
    # first call imports sympy (about 0.7 s) and costs a few hundred microseconds per call after that.
    w = quats[..., :1]
    u, vectors = torch.broadcast_tensors(quats[..., 1:], vectors)
    t = 2.0 * torch.linalg.cross(u, vectors, dim=-1)
    return vectors + w * t + torch.linalg.cross(u, t, dim=-1)
