"""Anchor assignment: which ground-truth box, if any, each anchor learns.

One contract for every assigner::

    assigner(anchors (N, 4), level_sizes [N_l], gt_boxes (B, M, 4), gt_labels (B, M))
        -> (B, N) long: index of the assigned box (>= 0), BACKGROUND (-1) or IGNORE (-2)

``gt_labels`` is -1 in padding rows; anchors are all levels concatenated, P3 first.
"""

from retina.assign.atss import ATSSAssigner
from retina.assign.common import BACKGROUND, IGNORE, at_least_one_row, batched_iou
from retina.assign.max_iou import MaxIoUAssigner

__all__ = ["ATSSAssigner", "BACKGROUND", "IGNORE", "MaxIoUAssigner", "at_least_one_row",
           "batched_iou"]
