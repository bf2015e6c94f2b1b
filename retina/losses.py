"""Loss functions as pure functions of tensors.

All classification losses compute in float32 whatever the autocast dtype, so they
stay finite for logits up to +-100 in fp16 and bf16.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

IGNORE_LABEL = -2  # as a class label: an ignored anchor (-1 is background)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


class _FocalLoss(torch.autograd.Function):
    """Elementwise focal loss with an analytic gradient.

    With p = sigmoid(x), q = 1 - p_t = p + t - 2 p t and ce = BCE(x, t):

        FL = a_t q^g ce
        dFL/dx = a_t [g q^(g-1) (1 - 2t) p (1 - p) ce + q^g (p - t)]

    The gradient is computed in the forward pass and kept (one tensor), so the
    backward pass is a single multiply.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
        x = logits.float()
        t = targets.float()
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        q = p + t - 2 * p * t  # 1 - p_t
        qg = q.pow(gamma)
        loss = qg * ce
        grad = qg * (p - t)
        if gamma != 0:
            # q^(g-1) p (1-p): q is 0 only where p (1-p) is 0 too, so clamping is exact.
            grad += gamma * q.clamp_min(1e-30).pow(gamma - 1) * (1 - 2 * t) * p * (1 - p) * ce
        if alpha >= 0:
            a_t = (1 - alpha) + (2 * alpha - 1) * t
            loss = loss * a_t
            grad = grad * a_t
        ctx.save_for_backward(grad)
        ctx.in_dtype = logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.in_dtype), None, None, None


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Focal loss of Lin et al. (2017), with torchvision.ops.sigmoid_focal_loss's semantics.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), p_t = p if t = 1 else 1 - p,
    alpha_t = alpha if t = 1 else 1 - alpha; ``alpha < 0`` turns the weighting off.

    Args:
        logits: (...) raw scores, any float dtype.
        targets: (...) same shape, 0/1 (soft targets in [0, 1] are allowed).
        alpha: weight of positives in [0, 1], or negative for none.
        gamma: focusing parameter >= 0.
        reduction: "none" | "mean" | "sum".

    Returns:
        float32 loss, shaped like ``logits`` for reduction="none", else a scalar.
    """
    return _reduce(_FocalLoss.apply(logits, targets, alpha, gamma), reduction)


class _SparseFocalLoss(torch.autograd.Function):
    """Summed focal loss for one-hot targets given as class indices.

    Every valid entry is first treated as a negative; only the N_fg foreground
    entries are then corrected to the positive term. No dense one-hot target is
    built and the work on positives is O(N_fg), not O(N K).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, alpha: float, gamma: float) -> Tensor:
        x = logits.float()  # (N, K)
        p = torch.sigmoid(x)
        sp = F.softplus(x)  # BCE(x, 0)
        pg = p.pow(gamma)
        neg_w = 1 - alpha if alpha >= 0 else 1.0
        pos_w = alpha if alpha >= 0 else 1.0
        loss_neg = pg * sp  # (N, K)
        grad = pg * (gamma * (1 - p) * sp + p)  # d/dx of p^g sp
        valid = labels != IGNORE_LABEL  # (N,)
        fg = labels >= 0
        rows = fg.nonzero().squeeze(1)  # (F,)
        cols = labels[rows]
        x_fg, p_fg = x[rows, cols], p[rows, cols]
        q = 1 - p_fg
        qg = q.pow(gamma)
        sp_neg = F.softplus(-x_fg)  # BCE(x, 1)
        loss_pos = qg * sp_neg
        grad_pos = -qg * (gamma * p_fg * sp_neg + q)
        total = neg_w * (loss_neg.sum(dim=1) * valid).sum()
        total = total + (pos_w * loss_pos - neg_w * loss_neg[rows, cols]).sum()
        grad.mul_(neg_w * valid[:, None])
        grad[rows, cols] = pos_w * grad_pos
        ctx.save_for_backward(grad)
        ctx.in_dtype = logits.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return (grad * grad_out).to(ctx.in_dtype), None, None, None



def focal_loss_from_labels(
    logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Sum of :func:`sigmoid_focal_loss` over non-ignored anchors, targets as labels.

    Equals ``sigmoid_focal_loss(logits[valid], one_hot(labels[valid]), ...).sum()``.

    Args:
        logits: (N, K) class logits.
        labels: (N,) long: class in 0..K-1 (foreground), -1 (background) or -2 (ignored).

    Returns:
        float32 scalar.
    """
    return _SparseFocalLoss.apply(logits, labels, alpha, gamma)


def box_regression_loss(
    kind: str, pred: Tensor, target: Tensor, beta: float = 0.1
) -> Tensor:
    """Summed box loss over matched pairs.

    Args:
        kind: "smooth_l1" | "l1" on deltas, or "giou" on decoded boxes x1y1x2y2.
        pred: (F, 4).
        target: (F, 4).
        beta: smooth-L1 transition point.

    Returns:
        float32 scalar.
    """
    pred, target = pred.float(), target.float()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    if kind == "giou":
        return generalized_box_iou_loss(pred, target, reduction="sum")
    raise ValueError(f"box loss must be 'smooth_l1', 'l1' or 'giou', got {kind!r}")


def normalizer(count: Tensor) -> Tensor:
    """Mean over processes of ``count`` (all-reduced under torch.distributed), floored at 1."""
    count = count.detach().float()
    if dist.is_available() and dist.is_initialized():
        count = count.clone()
        dist.all_reduce(count)
        count = count / dist.get_world_size()
    return count.clamp(min=1.0)


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss of GFL (Li et al., 2020): focal loss towards a soft IoU target.

    With p = sigmoid(x): every entry is a negative, BCE(x, 0) p^beta, except each
    positive's own class, BCE(x, s) |s - p|^beta with s its IoU target. With s in {0, 1}
    this is the focal loss with gamma = beta and no alpha.

    Args:
        logits: (N, K) class logits, any float dtype.
        labels: (N,) long: class 0..K-1 for positives; K (or any value outside 0..K-1,
            e.g. -1) for background.
        scores: (N,) IoU target of each positive in [0, 1] (ignored for background).
        beta: focusing parameter, >= 1 for a finite gradient where s = p.

    Returns:
        (N, K) float32 unreduced loss.
    """
    x = logits.float()
    loss = F.softplus(x) * torch.sigmoid(x).pow(beta)  # BCE(x, 0) p^beta, (N, K)
    rows = ((labels >= 0) & (labels < x.shape[1])).nonzero().squeeze(1)  # (F,)
    cols = labels[rows]
    x_fg = x[rows, cols]  # (F,)
    s = scores[rows].float()
    pos = F.binary_cross_entropy_with_logits(x_fg, s, reduction="none")
    pos = pos * (s - torch.sigmoid(x_fg)).abs().pow(beta)
    return loss.index_put((rows, cols), pos)


def distribution_focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss of GFL: cross-entropy on the two bins around the target.

    With l = floor(t), r = l + 1: DFL = (r - t) CE(logits, l) + (t - l) CE(logits, r),
    minimal when the distribution puts mass r - t on bin l and t - l on bin r (whose
    expectation is t).

    Args:
        logits: (N, R+1) bin logits, any float dtype.
        target: (N,) float distances in bins, in [0, R).

    Returns:
        (N,) float32.
    """
    log_probs = logits.float().log_softmax(dim=-1)  # (N, R+1)
    t = target.float()
    left = t.long()
    right = left + 1
    ce_left = -log_probs.gather(1, left[:, None]).squeeze(1)  # (N,)
    ce_right = -log_probs.gather(1, right[:, None]).squeeze(1)
    return (right - t) * ce_left + (t - left) * ce_right
