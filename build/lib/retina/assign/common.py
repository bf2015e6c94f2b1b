"""What every assigner shares: the match constants and the batched IoU."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import box_iou

BACKGROUND = -1  # an anchor matched to no box (also the class label of a background anchor)
IGNORE = -2  # an anchor that counts neither as foreground nor as background


def batched_iou(gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """IoU of padded per-image ground truth against shared anchors.

    Args:
        gt_boxes: (B, M, 4).
        anchors: (N, 4).

    Returns:
        (B, M, N).
    """
    b, m, _ = gt_boxes.shape
    return box_iou(gt_boxes.reshape(-1, 4), anchors).reshape(b, m, anchors.shape[0])


def at_least_one_row(gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
    """A batch without any box gets one padding row, so gathers by gt index stay valid."""
    if gt_labels.shape[1] > 0:
        return gt_boxes, gt_labels
    b = gt_labels.shape[0]
    return gt_boxes.new_zeros(b, 1, 4), gt_labels.new_full((b, 1), -1)
