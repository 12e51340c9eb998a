"""gen4d.eval.split: the one split evaluation (reconstruct, STAG4D, gen4d eval), silhouette IoU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gen4d.cameras import orbit
from gen4d.data.dataset import MultiViewVideo
from gen4d.eval.split import evaluate_splits, silhouette_iou


def _square(top: int, left: int, size: int = 4, shape=(16, 16)) -> torch.Tensor:
    alpha = torch.zeros(*shape, 1)
    alpha[top : top + size, left : left + size] = 1.0
    return alpha


def test_silhouette_iou_known_answers():
    gt = _square(2, 2)[None]
    assert silhouette_iou(gt, gt) == 1.0
    # shifted by 2 columns: intersection 4 x 2 = 8, union 16 + 16 - 8 = 24
    assert silhouette_iou(_square(2, 4)[None], gt) == pytest.approx(8 / 24)
    assert silhouette_iou(_square(0, 0, 1)[None], _square(6, 6, 1)[None]) == 0.0
    # the threshold is 0.5: alpha 0.5 is outside, 0.51 inside
    assert silhouette_iou(gt * 0.5, gt) == 0.0 and silhouette_iou(gt * 0.51, gt) == 1.0
    # pooled over images: (16 + 0) / (16 + 16)
    two_pred = torch.stack([_square(2, 2), torch.zeros(16, 16, 1)])
    two_gt = torch.stack([_square(2, 2), _square(0, 0)])
    assert silhouette_iou(two_pred, two_gt) == pytest.approx(0.5)
    assert silhouette_iou(gt, None) is None
    with pytest.raises(ValueError, match="differ"):
        silhouette_iou(gt, _square(2, 2, shape=(17, 17))[None])


class _Painter:
    """A 'model' that renders a fixed alpha (and white where it is opaque) for every camera."""

    device = torch.device("cpu")

    def __init__(self, alpha: torch.Tensor):
        self.alpha = alpha

    def render(self, cams, background, options):
        alpha = self.alpha.expand(len(cams), *self.alpha.shape)
        return SimpleNamespace(rgb=alpha.expand(*alpha.shape[:-1], 3) + background * (1 - alpha), alpha=alpha)


def test_evaluate_splits_reports_iou_per_split_and_none_without_alpha():
    cams = orbit(0.0, [0.0, 90.0, 180.0], 2.0, 40.0, 16, 16, times=[0.0, 0.5, 1.0])
    gt_alpha = torch.stack([_square(2, 2), _square(2, 4), _square(2, 2)])
    video = MultiViewVideo(
        torch.ones(3, 16, 16, 3), gt_alpha, cams, {"a": torch.tensor([0, 2]), "b": torch.tensor([1])}
    )
    metrics, renders = evaluate_splits(_Painter(_square(2, 2)), video, video.splits, None, background=1.0)
    assert metrics["a"]["iou"] == 1.0 and metrics["b"]["iou"] == pytest.approx(8 / 24)
    assert metrics["a"]["images"] == 2 and renders["a"].shape == (2, 16, 16, 3)
    rgb_only = MultiViewVideo(torch.ones(3, 16, 16, 3), None, cams, video.splits)
    metrics, _ = evaluate_splits(_Painter(_square(2, 2)), rgb_only, video.splits, None)
    assert metrics["a"]["iou"] is None
