"""GFL's training criterion: ATSS assignment, quality focal loss, GIoU + distribution focal loss."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from retina.assign import ATSSAssigner
from retina.losses.criterion import Criterion
from retina.losses.functional import distribution_focal_loss, normalizer, quality_focal_loss
from retina.ops.boxes import DistanceCoder, paired_iou


class GFLCriterion(Criterion):
    """Losses of Generalized Focal Loss (Li et al., 2020).

    - ``loss_cls``: quality focal loss over all anchors and classes; the target of a
      positive's own class is the IoU of its (detached) decoded box with its gt box.
      Summed and divided by the number of positives (:func:`normalizer`).
    - ``loss_box``: GIoU loss of decoded positives, ``giou_weight`` times.
    - ``loss_dfl``: distribution focal loss averaged over the 4 sides, ``dfl_weight`` times.

    Each positive's box and DFL terms are weighted by its detached highest class score
    and divided by the sum of these weights, all-reduced like the positive count and,
    as in the reference implementation, floored at 1 (:func:`normalizer`): a weighted
    mean whenever the weights sum to at least 1, damped in batches with only a few
    unconfident positives (early training, sparse images).

    Args:
        assigner: anchor assignment (ATSS by default).
        coder: distance coder (its ``reg_max`` fixes the box channels 4 * (R+1); the model
            passes its own).
        beta: quality focal loss beta.
        dfl_weight: multiplier of the DFL.
        giou_weight: multiplier of the GIoU loss.
    """

    def __init__(
        self,
        assigner=None,
        coder: DistanceCoder | None = None,
        beta: float = 2.0,
        dfl_weight: float = 0.25,
        giou_weight: float = 2.0,
    ) -> None:
        super().__init__(assigner or ATSSAssigner(), coder or DistanceCoder())
        self.beta = beta
        self.dfl_weight = dfl_weight
        self.giou_weight = giou_weight

    def forward(
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
            cls_logits: (B, N, K) flattened class-quality logits.
            box_reg: (B, N, 4 * (R+1)) flattened bin logits.
            anchors: (N, 4) anchors of all levels.
            gt_boxes: (B, M, 4) padded ground-truth boxes.
            gt_labels: (B, M) labels 0..K-1, -1 for padding.
            level_sizes: anchors per level (ATSS picks candidates per level; None: one).

        Returns:
            ``loss_cls``, ``loss_box``, ``loss_dfl`` (normalised) and ``num_fg``
            (this process's count).
        """
        bins = self.coder.reg_max + 1
        if box_reg.shape[-1] != 4 * bins:
            raise ValueError(
                f"box outputs have {box_reg.shape[-1]} channels but the coder's reg_max="
                f"{self.coder.reg_max} needs 4 * {bins}"
            )
        b, n, k = cls_logits.shape
        t = self.targets(anchors, level_sizes, gt_boxes, gt_labels)
        b_idx, a_idx, matched = t.b_idx, t.a_idx, t.boxes  # (F,), (F,), (F, 4)
        fg_anchors = anchors[a_idx]  # (F, 4)
        pred_reg = box_reg[b_idx, a_idx]  # (F, 4 * (R+1))
        pred_boxes = self.coder.decode(pred_reg, fg_anchors)  # (F, 4) float32

        labels = t.labels.masked_fill(t.labels < 0, k)  # (B, N) background (and ignored): K
        scores = torch.zeros((b, n), dtype=torch.float32, device=cls_logits.device)
        scores[b_idx, a_idx] = paired_iou(pred_boxes.detach(), matched)
        loss_cls = quality_focal_loss(
            cls_logits.reshape(-1, k), labels.reshape(-1), scores.reshape(-1), self.beta
        ).sum()

        weights = cls_logits[b_idx, a_idx].detach().float().sigmoid().amax(dim=1)  # (F,)
        loss_box = (generalized_box_iou_loss(pred_boxes, matched, reduction="none") * weights).sum()
        targets = self.coder.encode(matched, fg_anchors)  # (F, 4) in bins
        dfl = distribution_focal_loss(pred_reg.reshape(-1, bins), targets.reshape(-1))  # (F*4,)
        loss_dfl = (dfl.view(-1, 4).mean(dim=1) * weights).sum()
        # A batch without positives still touches every box parameter (DDP needs it);
        # summed in float32 so that a large fp16 sum cannot make 0 * inf = NaN.
        touch = 0.0 * box_reg.sum(dtype=torch.float32)

        num_fg = b_idx.new_tensor(len(b_idx))
        norm = normalizer(num_fg)
        weight_norm = normalizer(weights.sum())
        return {
            "loss_cls": loss_cls / norm,
            "loss_box": self.giou_weight * loss_box / weight_norm + touch,
            "loss_dfl": self.dfl_weight * loss_dfl / weight_norm + touch,
            "num_fg": num_fg,
        }
