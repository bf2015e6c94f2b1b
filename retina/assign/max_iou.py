"""RetinaNet's assignment: anchors matched to ground truth by IoU, batched over images."""

from __future__ import annotations

import torch
from torch import Tensor

from retina.assign.common import BACKGROUND, IGNORE, batched_iou


class MaxIoUAssigner:
    """RetinaNet's matcher: IoU >= ``fg_iou`` foreground, < ``bg_iou`` background.

    Anchors in between are ignored. With ``allow_low_quality`` every ground-truth
    box also keeps the anchors at its own highest IoU (all of them on ties), each
    matched to its best box, as in torchvision's ``Matcher`` with one deliberate
    difference: a box whose best IoU with every anchor is 0 (it overlaps none) keeps no
    anchor here. torchvision's ``Matcher`` finds every anchor tied at that 0 and turns each
    into a foreground match of its own best box, background anchors included.

    Args:
        fg_iou: foreground threshold.
        bg_iou: background threshold (<= ``fg_iou``).
        allow_low_quality: keep each box's best anchors.
    """

    def __init__(self, fg_iou: float = 0.5, bg_iou: float = 0.4, allow_low_quality: bool = True):
        if bg_iou > fg_iou:
            raise ValueError(f"bg_iou ({bg_iou}) must not exceed fg_iou ({fg_iou})")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.allow_low_quality = allow_low_quality

    def match(self, iou: Tensor, valid: Tensor) -> Tensor:
        """Match anchors given IoUs.

        Args:
            iou: (B, M, N) IoU of each ground-truth box with each anchor.
            valid: (B, M) bool, False for padding rows.

        Returns:
            (B, N) long: gt index, BACKGROUND or IGNORE.
        """
        b, m, n = iou.shape
        if m == 0:
            return iou.new_full((b, n), BACKGROUND, dtype=torch.long)
        iou = iou.masked_fill(~valid[:, :, None], -1.0)  # padding never wins
        best_iou, best_gt = iou.max(dim=1)  # (B, N): first max on ties
        matches = best_gt.masked_fill(best_iou < self.fg_iou, IGNORE)
        matches = matches.masked_fill(best_iou < self.bg_iou, BACKGROUND)
        if self.allow_low_quality:
            per_gt_best = iou.amax(dim=2, keepdim=True)  # (B, M, 1)
            is_best = (iou == per_gt_best) & valid[:, :, None] & (per_gt_best > 0)
            matches = torch.where(is_best.any(dim=1), best_gt, matches)  # (B, N)
        return matches

    def __call__(
        self, anchors: Tensor, level_sizes: list[int], gt_boxes: Tensor, gt_labels: Tensor
    ) -> Tensor:
        """Assign anchors to padded ground truth (see :mod:`retina.assign`).

        Args:
            anchors: (N, 4) anchors of all levels.
            level_sizes: anchors per level (unused: IoU needs no levels).
            gt_boxes: (B, M, 4) padded ground-truth boxes.
            gt_labels: (B, M) labels, -1 for padding rows.

        Returns:
            (B, N) long: gt index, BACKGROUND or IGNORE.
        """
        return self.match(batched_iou(gt_boxes, anchors), gt_labels >= 0)
