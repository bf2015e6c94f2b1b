"""The recall ceiling: which ground-truth boxes an assigner makes positive by its own rule.

A box that no anchor is assigned to is never learned: training never asks any anchor to find
it. The share of boxes that some anchor is assigned to is an upper bound on the recall the
trained model can reach, computed before training from the anchors, the assigner and the
boxes alone. The assigners' low-quality fallback (MaxIoU's ``allow_low_quality``: each box
keeps its best anchors whatever their IoU) is left out (:func:`rule_only`): it gives every
box an anchor, but one that overlaps it poorly, which regresses badly and scores low.

The real assigner objects run on the real anchors (:func:`match_boxes`), so the rule is
theirs, competition between boxes included (an anchor goes to one box only):

- MaxIoU: a box is positive when some anchor has IoU >= ``fg_iou`` with it and with no
  other box more;
- ATSS: when one of its candidates (the ``topk`` anchors nearest its centre on each level)
  has IoU >= the mean + std of the candidates' IoUs and its centre strictly inside the box.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou


def rule_only(assigner):
    """``assigner`` without its low-quality fallback: a copy with ``allow_low_quality=False``
    (MaxIoU), the assigner itself when it has none (ATSS)."""
    if not getattr(assigner, "allow_low_quality", False):
        return assigner
    plain = copy.copy(assigner)
    plain.allow_low_quality = False
    return plain


@dataclass
class BoxMatch:
    """What the anchors do for each box of one image.

    Attributes:
        positive: (M,) bool: some anchor is assigned to the box by the assigner's rule.
        best_iou: (M,) the box's highest IoU with any anchor.
        best_level: (M,) long: the index of the level (0: P3) holding that anchor.
    """

    positive: Tensor
    best_iou: Tensor
    best_level: Tensor


@torch.no_grad()
def match_boxes(assigner, anchors: list[Tensor], boxes: Tensor) -> BoxMatch:
    """Run ``assigner`` (as given: wrap it in :func:`rule_only` for the ceiling) on one image.

    Args:
        assigner: any assigner of :mod:`retina.assign`.
        anchors: per level (N_l, 4) x1y1x2y2 anchors in input pixels, P3 first.
        boxes: (M, 4) x1y1x2y2 ground-truth boxes in input pixels.

    Returns:
        The :class:`BoxMatch` of the M boxes.
    """
    level_sizes = [len(a) for a in anchors]
    flat = torch.cat(anchors)  # (N, 4)
    m = boxes.shape[0]
    if m == 0:
        empty = torch.zeros(0)
        return BoxMatch(empty.bool(), empty, empty.long())
    boxes = boxes.to(flat)
    labels = torch.zeros(1, m, dtype=torch.long)  # the rules read no class
    matches = assigner(flat, level_sizes, boxes[None], labels)[0]  # (N,) box index or < 0
    positive = torch.bincount(matches[matches >= 0], minlength=m) > 0  # (M,)
    best_iou, best = box_iou(boxes, flat).max(dim=1)  # (M,)
    ends = torch.tensor(level_sizes).cumsum(0)  # (L,)
    best_level = torch.bucketize(best, ends, right=True)  # (M,) level of anchor index `best`
    return BoxMatch(positive, best_iou, best_level)
