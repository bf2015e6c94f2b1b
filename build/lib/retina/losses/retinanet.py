"""Training criteria of RetinaNet: anchors assigned by IoU (or any assigner of
:mod:`retina.assign`), a box loss on the foreground anchors and one of several
classification losses.

:class:`AnchorCriterion` does the matching and the box loss; each subclass only
implements ``cls_loss(logits, labels, norm)``:

- :class:`RetinaNetCriterion`: sigmoid focal loss (the paper; ``loss=focal``).
- :class:`SoftmaxFocalCriterion`: (K+1)-way softmax focal loss (``loss=softmax_focal``).
- :class:`OHEMCriterion`: softmax cross-entropy on hard negatives (``loss=ohem``).
- :class:`GHMCriterion`: gradient harmonizing BCE (``loss=ghm``).

Criteria with ``background_class = True`` read K+1 class channels per anchor, channel 0
the background (``retina.training.run.build`` gives the head that channel); the others read
K sigmoid channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from retina.assign import IGNORE, MaxIoUAssigner
from retina.losses.criterion import Criterion
from retina.losses.functional import (
    box_regression_loss,
    focal_loss_from_labels,
    ghm_bin_index,
    ghm_c_loss,
    normalizer,
    ohem_cross_entropy,
    softmax_focal_loss,
)
from retina.ops.boxes import DeltaCoder


def _check_alpha_gamma(alpha: float, gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and gamma >= 0):
        raise ValueError(f"loss.gamma must be a number >= 0, got {gamma!r}")
    if not (isinstance(alpha, (int, float)) and alpha <= 1):
        raise ValueError(f"loss.alpha must be in [0, 1] (or negative: off), got {alpha!r}")


class AnchorCriterion(Criterion):
    """Assignment + box loss over foreground anchors + a classification loss (a hook).

    Both losses are divided by the number of foreground anchors in the batch (mean over
    processes under DDP, floored at 1), unless the hook normalises its own way.

    Args:
        assigner: anchor assignment (RetinaNet's IoU matching by default).
        coder: box coder (deltas for smooth-L1 / L1; the model passes its own).
        box_loss: "smooth_l1" | "l1" | "giou".
        smooth_l1_beta: smooth-L1 transition point.
        box_weight: multiplier of the box loss.
    """

    def __init__(
        self,
        assigner=None,
        coder: DeltaCoder | None = None,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        box_weight: float = 1.0,
    ) -> None:
        super().__init__(assigner or MaxIoUAssigner(), coder or DeltaCoder())
        if box_loss not in ("smooth_l1", "l1", "giou"):
            raise ValueError(f"loss.box_loss must be smooth_l1, l1 or giou, got {box_loss!r}")
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.box_weight = box_weight

    def cls_loss(self, logits: Tensor, labels: Tensor, norm: Tensor) -> Tensor:
        """Classification loss of a batch, normalised.

        Args:
            logits: (B, N, K) or, with ``background_class``, (B, N, K+1) class logits.
            labels: (B, N) long: class 0..K-1, -1 background, -2 ignored.
            norm: number of foreground anchors (all-reduced, floored at 1).

        Returns:
            float32 scalar.
        """
        raise NotImplementedError

    def forward(
        self,
        cls_logits: Tensor,
        box_reg: Tensor,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        level_sizes: list[int] | None = None,
    ) -> dict[str, Tensor]:
        """Losses for one batch (the call of :mod:`retina.losses.criterion`).

        Args:
            cls_logits: (B, N, K) (or (B, N, K+1)) flattened class logits.
            box_reg: (B, N, 4) flattened box deltas.
            anchors: (N, 4) anchors of all levels.
            gt_boxes: (B, M, 4) padded ground-truth boxes.
            gt_labels: (B, M) labels 0..K-1, -1 for padding.
            level_sizes: anchors per level (None: one level; IoU matching needs none).

        Returns:
            ``loss_cls``, ``loss_box`` (normalised) and ``num_fg`` (this process's count).
        """
        t = self.targets(anchors, level_sizes, gt_boxes, gt_labels)
        num_fg = t.b_idx.new_tensor(len(t.b_idx))
        norm = normalizer(num_fg)
        loss_cls = self.cls_loss(cls_logits, t.labels, norm)

        pred = box_reg[t.b_idx, t.a_idx]  # (F, 4)
        fg_anchors = anchors[t.a_idx]
        if self.box_loss == "giou":
            pred, target = self.coder.decode(pred, fg_anchors), t.boxes
        else:
            target = self.coder.encode(t.boxes, fg_anchors)
        loss_box = box_regression_loss(self.box_loss, pred, target, self.smooth_l1_beta)
        # A batch without foreground still touches every box parameter (DDP needs it).
        loss_box = loss_box + 0.0 * box_reg.sum(dtype=torch.float32)
        return {
            "loss_cls": loss_cls,
            "loss_box": self.box_weight * loss_box / norm,
            "num_fg": num_fg,
        }


def _weights_buffer(class_weights: Sequence[float] | str | None) -> Tensor | None:
    if isinstance(class_weights, str):
        raise ValueError(
            f"loss.class_weights={class_weights}: the weights are computed from the training "
            "annotations by retina.training.run.build (or pass a list of per-class weights)"
        )
    return None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)


class RetinaNetCriterion(AnchorCriterion):
    """Sigmoid focal loss over non-ignored anchors (Lin et al. 2017) + box loss.

    Args:
        alpha: focal-loss alpha (negative: off).
        gamma: focal-loss gamma.
        class_weights: (K,) per-class multipliers of alpha for positives (see
            ``retina.data.datamodule.class_frequency_weights``), or None.
        **kwargs: assigner and box loss, see :class:`AnchorCriterion`.
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_alpha_gamma(alpha, gamma)
        self.alpha = alpha
        self.gamma = gamma
        self.register_buffer("class_weights", _weights_buffer(class_weights))

    def cls_loss(self, logits: Tensor, labels: Tensor, norm: Tensor) -> Tensor:
        k = logits.shape[-1]
        loss = focal_loss_from_labels(
            logits.reshape(-1, k), labels.reshape(-1), self.alpha, self.gamma, self.class_weights
        )
        return loss / norm


class SoftmaxFocalCriterion(RetinaNetCriterion):
    """(K+1)-way softmax focal loss over non-ignored anchors + box loss.

    Takes :class:`RetinaNetCriterion`'s ``alpha`` (weight of foreground anchors; background
    ones get 1 - alpha), ``gamma`` and ``class_weights``. Reads the head's background
    channel 0.
    """

    background_class = True

    def cls_loss(self, logits: Tensor, labels: Tensor, norm: Tensor) -> Tensor:
        c = logits.shape[-1]
        loss = softmax_focal_loss(
            logits.reshape(-1, c), labels.reshape(-1), self.alpha, self.gamma, self.class_weights
        )
        return loss.sum() / norm


class OHEMCriterion(AnchorCriterion):
    """Softmax cross-entropy on every foreground anchor and, per image, the hardest
    background anchors (``neg_pos_ratio`` per foreground anchor, at least ``min_neg``),
    divided by the number of foreground anchors (SSD's hard negative mining) + box loss.

    Args:
        neg_pos_ratio: hard negatives per foreground anchor.
        min_neg: hard negatives per image at least (images with few or no boxes).
        **kwargs: assigner and box loss, see :class:`AnchorCriterion`.
    """

    background_class = True

    def __init__(
        self,
        neg_pos_ratio: float = 3.0,
        min_neg: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not (neg_pos_ratio >= 0 and min_neg >= 0):
            raise ValueError(
                f"loss.neg_pos_ratio and loss.min_neg must be >= 0, got {neg_pos_ratio}, {min_neg}"
            )
        self.neg_pos_ratio = neg_pos_ratio
        self.min_neg = min_neg

    def cls_loss(self, logits: Tensor, labels: Tensor, norm: Tensor) -> Tensor:
        return ohem_cross_entropy(logits, labels, self.neg_pos_ratio, self.min_neg) / norm


class GHMCriterion(AnchorCriterion):
    """GHM-C (Li et al., AAAI 2019) on K sigmoid channels of non-ignored anchors + box loss.

    The classification loss is normalised as in the paper, by the number of valid
    (anchor, class) entries (:func:`retina.losses.ghm_c_loss`), not by the foreground
    count. With ``momentum`` > 0 the bin counts are an exponential moving average kept in
    the ``bin_counts`` buffer (saved with the checkpoint): a bin non-empty in the batch is
    updated to m S + (1 - m) S_batch, starting from its first batch count.

    Args:
        bins: number of gradient-norm bins (10 here; the paper's setup uses 30).
        momentum: moving-average factor of the bin counts in [0, 1), 0: this batch only.
        **kwargs: assigner and box loss, see :class:`AnchorCriterion`.
    """

    def __init__(self, bins: int = 10, momentum: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not (isinstance(bins, int) and bins >= 1):
            raise ValueError(f"loss.bins must be an integer >= 1, got {bins!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"loss.momentum must be in [0, 1), got {momentum!r}")
        self.bins = bins
        self.momentum = momentum
        self.register_buffer("bin_counts", torch.zeros(bins))

    def update_counts(self, bin_idx: Tensor, valid: Tensor) -> Tensor:
        """Moving average of the histogram with this batch's (training only); returns it."""
        batch = torch.bincount(bin_idx[valid], minlength=self.bins).float()  # (bins,)
        seen = self.bin_counts > 0
        avg = torch.where(seen, self.momentum * self.bin_counts + (1 - self.momentum) * batch, batch)
        avg = torch.where(batch > 0, avg, self.bin_counts)
        if self.training:
            self.bin_counts.copy_(avg)
        return avg

    def cls_loss(self, logits: Tensor, labels: Tensor, norm: Tensor) -> Tensor:
        k = logits.shape[-1]
        classes = torch.arange(k, device=labels.device)
        targets = (labels[..., None] == classes).to(logits.dtype)  # (B, N, K) one-hot, bg all 0
        valid = (labels != IGNORE)[..., None].expand_as(targets)  # (B, N, K)
        counts = None
        if self.momentum > 0:
            counts = self.update_counts(ghm_bin_index(logits, targets, self.bins), valid)
        return ghm_c_loss(logits, targets, valid, self.bins, counts)
