"""Adaptive training sample selection (ATSS, Zhang et al., 2020), batched over images.

Match convention as in :mod:`retina.assign.max_iou`: one long per anchor, ``>= 0`` the index
of the assigned ground-truth box, :data:`BACKGROUND` (-1) otherwise. ATSS ignores no
anchor.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor

from retina.assign.common import BACKGROUND, batched_iou


def box_centres(boxes: Tensor) -> Tensor:
    """(..., 4) x1y1x2y2 -> (..., 2) xy centres."""
    return (boxes[..., :2] + boxes[..., 2:]) / 2


class ATSSAssigner:
    """Per box: the ``topk`` anchors nearest its centre on each level are candidates.

    A candidate becomes positive if its IoU with the box is at least the mean + std of
    the IoUs of all that box's candidates (std with Bessel's correction, as in the
    reference code) and its centre lies strictly inside the box. An anchor positive for
    several boxes goes to the one with the highest IoU (the first on ties).

    Args:
        topk: candidates per level and box.
    """

    def __init__(self, topk: int = 9) -> None:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.topk = topk

    def candidates(self, anchors: Tensor, level_sizes: list[int], gt_boxes: Tensor) -> Tensor:
        """Indices (B, M, C) of the nearest anchors per level, C = sum_l min(topk, N_l)."""
        dist = torch.cdist(
            box_centres(gt_boxes), box_centres(anchors)[None],
            compute_mode="donot_use_mm_for_euclid_dist",  # exact, so ties rank predictably
        )  # (B, M, N)
        starts = [0, *accumulate(level_sizes)][:-1]
        out = []
        for level_dist, start in zip(dist.split(level_sizes, dim=2), starts):
            k = min(self.topk, level_dist.shape[2])
            out.append(level_dist.topk(k, dim=2, largest=False).indices + start)  # (B, M, k)
        return torch.cat(out, dim=2)

    def __call__(
        self, anchors: Tensor, level_sizes: list[int], gt_boxes: Tensor, gt_labels: Tensor
    ) -> Tensor:
        """Assign anchors to padded ground truth.

        Args:
            anchors: (N, 4) anchors of all levels, P3 first.
            level_sizes: anchors per level, summing to N.
            gt_boxes: (B, M, 4) padded ground-truth boxes.
            gt_labels: (B, M) labels, -1 for padding rows.

        Returns:
            (B, N) long: gt index or BACKGROUND.
        """
        b, m = gt_labels.shape
        n = anchors.shape[0]
        if sum(level_sizes) != n:
            raise ValueError(f"level_sizes sum to {sum(level_sizes)} but there are {n} anchors")
        if m == 0:
            return torch.full((b, n), BACKGROUND, dtype=torch.long, device=anchors.device)
        gt_boxes = gt_boxes.float()
        valid = gt_labels >= 0  # (B, M)
        iou = batched_iou(gt_boxes, anchors)  # (B, M, N)
        cand = self.candidates(anchors, level_sizes, gt_boxes)  # (B, M, C)
        cand_iou = iou.gather(2, cand)  # (B, M, C)
        correction = 1 if cand.shape[2] > 1 else 0
        thresh = cand_iou.mean(dim=2) + cand_iou.std(dim=2, correction=correction)  # (B, M)
        centres = box_centres(anchors)[cand]  # (B, M, C, 2)
        inside = (centres > gt_boxes[:, :, None, :2]) & (centres < gt_boxes[:, :, None, 2:])
        positive = (cand_iou >= thresh[..., None]) & inside.all(dim=3) & valid[..., None]
        # IoU of positive (box, anchor) pairs, -1 elsewhere; candidates never repeat per box
        pos_iou = iou.new_full((b, m, n), -1.0)
        pos_iou.scatter_(2, cand, cand_iou.masked_fill(~positive, -1.0))
        best_iou, best_gt = pos_iou.max(dim=1)  # (B, N): first max on ties
        return best_gt.masked_fill(best_iou < 0, BACKGROUND)
