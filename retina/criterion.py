"""Training criteria: turn raw head outputs and padded ground truth into losses."""

from __future__ import annotations

import torch
from torch import Tensor

from retina.boxes import DeltaCoder
from retina.losses import box_regression_loss, focal_loss_from_labels, normalizer
from retina.matcher import BACKGROUND, IGNORE, MaxIoUMatcher, at_least_one_row


class RetinaNetCriterion:
    """Focal loss over non-ignored anchors + box loss over foreground anchors.

    Both are summed and divided by the number of foreground anchors in the batch
    (mean over processes under DDP, floored at 1).

    Args:
        matcher: anchor assignment.
        coder: box coder (deltas for smooth-L1 / L1).
        alpha: focal-loss alpha (negative: off).
        gamma: focal-loss gamma.
        box_loss: "smooth_l1" | "l1" | "giou".
        smooth_l1_beta: smooth-L1 transition point.
        box_weight: multiplier of the box loss.
    """

    def __init__(
        self,
        matcher: MaxIoUMatcher | None = None,
        coder: DeltaCoder | None = None,
        alpha: float = 0.25,
        gamma: float = 2.0,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        box_weight: float = 1.0,
    ) -> None:
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"loss.gamma must be a number >= 0, got {gamma!r}")
        if not (isinstance(alpha, (int, float)) and alpha <= 1):
            raise ValueError(f"loss.alpha must be in [0, 1] (or negative: off), got {alpha!r}")
        if box_loss not in ("smooth_l1", "l1", "giou"):
            raise ValueError(f"loss.box_loss must be smooth_l1, l1 or giou, got {box_loss!r}")
        self.matcher = matcher or MaxIoUMatcher()
        self.coder = coder or DeltaCoder()
        self.alpha = alpha
        self.gamma = gamma
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.box_weight = box_weight

    def __call__(
        self,
        cls_logits: Tensor,
        box_reg: Tensor,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        level_sizes: list[int] | None = None,
    ) -> dict[str, Tensor]:
        """Losses for one batch.

        Args:
            cls_logits: (B, N, K) flattened class logits.
            box_reg: (B, N, 4) flattened box deltas.
            anchors: (N, 4) anchors of all levels.
            gt_boxes: (B, M, 4) padded ground-truth boxes.
            gt_labels: (B, M) labels 0..K-1, -1 for padding.
            level_sizes: anchors per level (unused: IoU matching needs no levels).

        Returns:
            ``loss_cls``, ``loss_box`` (normalised) and ``num_fg`` (this process's count).
        """
        gt_boxes, gt_labels = at_least_one_row(gt_boxes, gt_labels)
        matches = self.matcher.match_boxes(gt_boxes, gt_labels, anchors)  # (B, N)
        fg = matches >= 0
        safe = matches.clamp(min=0)
        labels = gt_labels.gather(1, safe)  # (B, N) label of the matched box
        labels = labels.masked_fill(matches == BACKGROUND, BACKGROUND)
        labels = labels.masked_fill(matches == IGNORE, IGNORE)
        num_fg = fg.sum()
        norm = normalizer(num_fg)

        k = cls_logits.shape[-1]
        loss_cls = focal_loss_from_labels(
            cls_logits.reshape(-1, k), labels.reshape(-1), self.alpha, self.gamma
        )

        b_idx, a_idx = fg.nonzero(as_tuple=True)  # (F,), (F,)
        matched = gt_boxes[b_idx, safe[b_idx, a_idx]]  # (F, 4)
        pred = box_reg[b_idx, a_idx]  # (F, 4)
        fg_anchors = anchors[a_idx]
        if self.box_loss == "giou":
            pred, target = self.coder.decode(pred, fg_anchors), matched
        else:
            target = self.coder.encode(matched, fg_anchors)
        loss_box = box_regression_loss(self.box_loss, pred, target, self.smooth_l1_beta)
        # A batch without foreground still touches every box parameter (DDP needs it).
        loss_box = loss_box + 0.0 * box_reg.sum(dtype=torch.float32)
        return {
            "loss_cls": loss_cls / norm,
            "loss_box": self.box_weight * loss_box / norm,
            "num_fg": num_fg,
        }
