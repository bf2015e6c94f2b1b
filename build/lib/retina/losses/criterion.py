"""What every training criterion shares: its call, and the targets its assigner gives.

Every criterion is an ``nn.Module`` (state such as class weights or GHM's histogram is a
buffer saved with the checkpoint) answering one call::

    criterion(cls_logits (B, N, K'), box_reg (B, N, C), anchors (N, 4),
              gt_boxes (B, M, 4), gt_labels (B, M), level_sizes [N_l])
        -> {"loss_*": normalised scalars, ..., "num_fg": this process's foreground count}

with K' = K class channels, or K + 1 for a criterion whose ``background_class`` is true
(channel 0 the background of a softmax), and C the box channels of its ``coder``.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from retina.assign import BACKGROUND, IGNORE, at_least_one_row


class Targets(NamedTuple):
    """Per-anchor targets of a batch (see :func:`assign_targets`)."""

    labels: Tensor  # (B, N) long: class of the assigned box, BACKGROUND or IGNORE
    b_idx: Tensor  # (F,) image of each foreground anchor
    a_idx: Tensor  # (F,) index of each foreground anchor
    gt_idx: Tensor  # (F,) index of its box in the image's padded ground truth
    boxes: Tensor  # (F, 4) float32 its box


def assign_targets(
    assigner, anchors: Tensor, level_sizes: list[int], gt_boxes: Tensor, gt_labels: Tensor
) -> Targets:
    """Assign anchors (the :mod:`retina.assign` contract) and gather their targets.

    Args:
        assigner: any assigner of :mod:`retina.assign`.
        anchors: (N, 4) anchors of all levels.
        level_sizes: anchors per level, summing to N.
        gt_boxes: (B, M, 4) padded ground-truth boxes.
        gt_labels: (B, M) labels 0..K-1, -1 for padding.
    """
    gt_boxes, gt_labels = at_least_one_row(gt_boxes, gt_labels)
    matches = assigner(anchors, level_sizes, gt_boxes, gt_labels)  # (B, N)
    labels = gt_labels.gather(1, matches.clamp(min=0))  # (B, N) label of the assigned box
    labels = labels.masked_fill(matches == BACKGROUND, BACKGROUND)
    labels = labels.masked_fill(matches == IGNORE, IGNORE)
    b_idx, a_idx = (matches >= 0).nonzero(as_tuple=True)  # (F,), (F,)
    gt_idx = matches[b_idx, a_idx]
    return Targets(labels, b_idx, a_idx, gt_idx, gt_boxes[b_idx, gt_idx].float())


class Criterion(nn.Module):
    """Base of the criteria: holds the assigner and the box coder.

    Args:
        assigner: anchor assignment (:mod:`retina.assign`).
        coder: box coder of the head's box outputs (the model passes its own).
    """

    background_class = False  # class logits have a background channel 0 (softmax losses)

    def __init__(self, assigner, coder) -> None:
        super().__init__()
        self.assigner = assigner
        self.coder = coder

    def targets(
        self, anchors: Tensor, level_sizes: list[int] | None, gt_boxes: Tensor, gt_labels: Tensor
    ) -> Targets:
        """:func:`assign_targets` with this criterion's assigner (one level when None)."""
        level_sizes = [anchors.shape[0]] if level_sizes is None else level_sizes
        return assign_targets(self.assigner, anchors, level_sizes, gt_boxes, gt_labels)
