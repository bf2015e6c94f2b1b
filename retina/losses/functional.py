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

from retina.assign import BACKGROUND, IGNORE  # also the class labels of such anchors


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


class _KeptGradient(torch.autograd.Function):
    """Base of the losses below: ``forward`` computes the loss and its gradient with respect to
    the logits (its first input) and keeps that gradient (:meth:`keep`), so that ``backward``
    is a single multiply."""

    @staticmethod
    def keep(ctx, grad: Tensor, logits: Tensor, num_inputs: int) -> None:
        ctx.save_for_backward(grad)
        ctx.in_dtype = logits.dtype
        ctx.num_inputs = num_inputs

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return ((grad * grad_out).to(ctx.in_dtype),) + (None,) * (ctx.num_inputs - 1)


class _FocalLoss(_KeptGradient):
    """Elementwise focal loss with an analytic gradient.

    With p = sigmoid(x), q = 1 - p_t = p + t - 2 p t and ce = BCE(x, t):

        FL = a_t q^g ce
        dFL/dx = a_t [g q^(g-1) (1 - 2t) p (1 - p) ce + q^g (p - t)]

    The gradient is computed in the forward pass and kept (:class:`_KeptGradient`).
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
        _KeptGradient.keep(ctx, grad, logits, num_inputs=4)
        return loss


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


class _SparseFocalLoss(_KeptGradient):
    """Summed focal loss for one-hot targets given as class indices.

    Every valid entry is first treated as a negative; only the N_fg foreground
    entries are then corrected to the positive term. No dense one-hot target is
    built and the work on positives is O(N_fg), not O(N K).
    """

    @staticmethod
    def forward(
        ctx, logits: Tensor, labels: Tensor, alpha: float, gamma: float, class_weights: Tensor | None
    ) -> Tensor:
        x = logits.float()  # (N, K)
        p = torch.sigmoid(x)
        sp = F.softplus(x)  # BCE(x, 0)
        pg = p.pow(gamma)
        neg_w = 1 - alpha if alpha >= 0 else 1.0
        pos_w = alpha if alpha >= 0 else 1.0
        loss_neg = pg * sp  # (N, K)
        grad = pg * (gamma * (1 - p) * sp + p)  # d/dx of p^g sp
        valid = labels != IGNORE  # (N,)
        fg = labels >= 0
        rows = fg.nonzero().squeeze(1)  # (F,)
        cols = labels[rows]
        x_fg, p_fg = x[rows, cols], p[rows, cols]
        q = 1 - p_fg
        qg = q.pow(gamma)
        sp_neg = F.softplus(-x_fg)  # BCE(x, 1)
        loss_pos = qg * sp_neg
        grad_pos = -qg * (gamma * p_fg * sp_neg + q)
        if class_weights is not None:
            pos_w = pos_w * class_weights.to(x)[cols]  # (F,) per-class alpha
        total = neg_w * (loss_neg.sum(dim=1) * valid).sum()
        total = total + (pos_w * loss_pos - neg_w * loss_neg[rows, cols]).sum()
        grad.mul_(neg_w * valid[:, None])
        grad[rows, cols] = pos_w * grad_pos
        _KeptGradient.keep(ctx, grad, logits, num_inputs=5)
        return total


def focal_loss_from_labels(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Sum of :func:`sigmoid_focal_loss` over non-ignored anchors, targets as labels.

    Equals ``sigmoid_focal_loss(logits[valid], one_hot(labels[valid]), ...).sum()``.
    With ``class_weights`` w, the positive entry of an anchor of class c has weight
    alpha w_c instead of alpha (a per-class alpha); negative entries keep 1 - alpha.

    Args:
        logits: (N, K) class logits.
        labels: (N,) long: class in 0..K-1 (foreground), -1 (background) or -2 (ignored).
        alpha: weight of positives (negative: 1 for positives and negatives).
        gamma: focusing parameter >= 0.
        class_weights: (K,) per-class multipliers of the positive weight, or None.

    Returns:
        float32 scalar.
    """
    return _SparseFocalLoss.apply(logits, labels, alpha, gamma, class_weights)


def softmax_targets(labels: Tensor) -> Tensor:
    """Labels (class 0..K-1, -1 background, -2 ignored) -> softmax indices 1..K, 0, 0.

    The (K+1)-way softmax of the losses below has the background as its channel 0 and
    class c as channel c + 1; ignored anchors get 0 here and are masked by the caller.
    """
    return labels.clamp(min=-1) + 1


def softmax_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    class_weights: Tensor | None = None,
) -> Tensor:
    """Softmax focal loss (Detectron's alternative to the sigmoid one), background = channel 0.

    With p = softmax(x) over the K+1 channels and t the target channel:

        FL = -alpha_t (1 - p_t)^gamma log p_t,

    alpha_t = alpha (times ``class_weights[c]`` for class c) for a foreground anchor and
    1 - alpha for background; ``alpha < 0`` sets alpha_t = 1 (class weights still apply).
    With gamma = 0 this is alpha_t times the cross-entropy.

    Args:
        logits: (N, K+1) scores, channel 0 background, any float dtype.
        labels: (N,) long: class in 0..K-1, -1 (background) or -2 (ignored: loss 0).
        alpha: weight of foreground anchors in [0, 1], or negative for none.
        gamma: focusing parameter >= 0.
        class_weights: (K,) per-class multipliers of the foreground weight, or None.

    Returns:
        (N,) float32.
    """
    logp = logits.float().log_softmax(dim=-1)  # (N, K+1)
    logp_t = logp.gather(1, softmax_targets(labels)[:, None]).squeeze(1)  # (N,)
    loss = -logp_t
    if gamma != 0:
        # 1 - p_t without cancellation; the floor keeps d/dq q^gamma finite for gamma < 1
        q = (-torch.expm1(logp_t)).clamp_min(1e-12)
        loss = loss * q.pow(gamma)
    fg = labels >= 0
    weight = torch.ones_like(loss)
    if alpha >= 0:
        weight = torch.where(fg, alpha, 1 - alpha).to(loss)
    if class_weights is not None:
        weight = weight * torch.where(fg, class_weights.to(loss)[labels.clamp(min=0)], 1.0)
    return (loss * weight).masked_fill(labels == IGNORE, 0.0)


def hard_negatives(
    neg_loss: Tensor, fg: Tensor, bg: Tensor, neg_pos_ratio: float = 3.0, min_neg: int = 0
) -> Tensor:
    """Per image, the background anchors of highest loss: ``neg_pos_ratio`` per foreground
    anchor, at least ``min_neg`` (so images without foreground still train the background),
    at most all of them. One top-k over the batch, no loop over images.

    Args:
        neg_loss: (B, N) loss of each anchor as background (only read where ``bg``).
        fg: (B, N) bool foreground anchors.
        bg: (B, N) bool background anchors (not ignored).
        neg_pos_ratio: negatives per foreground anchor (rounded down per image).
        min_neg: negatives of an image with few or no foreground anchors.

    Returns:
        (B, N) bool: the chosen negatives.
    """
    num_neg = (neg_pos_ratio * fg.sum(dim=1)).long().clamp(min=min_neg)  # (B,)
    num_neg = torch.minimum(num_neg, bg.sum(dim=1))
    scores = neg_loss.detach().float().masked_fill(~bg, float("-inf"))  # (B, N)
    idx = scores.topk(int(num_neg.max()), dim=1).indices  # (B, k), each row by loss
    take = torch.arange(idx.shape[1], device=idx.device) < num_neg[:, None]  # (B, k)
    return torch.zeros_like(bg).scatter(1, idx, take)


def ohem_cross_entropy(
    logits: Tensor, labels: Tensor, neg_pos_ratio: float = 3.0, min_neg: int = 0
) -> Tensor:
    """Summed softmax cross-entropy with online hard example mining (SSD, Liu et al. 2016).

    With CE_i = -log softmax(x_i)[t_i] over K+1 channels (background = channel 0):

        L = sum_{i in fg} CE_i + sum_{i in hard negatives} CE_i,

    where the hard negatives of an image are its background anchors of largest CE,
    ``max(neg_pos_ratio * num_fg, min_neg)`` of them (:func:`hard_negatives`); every
    other background anchor, and every ignored one, contributes nothing.

    Args:
        logits: (B, N, K+1) scores, channel 0 background, any float dtype.
        labels: (B, N) long: class in 0..K-1, -1 (background) or -2 (ignored).
        neg_pos_ratio: negatives per foreground anchor and image.
        min_neg: negatives per image at least (e.g. images without boxes).

    Returns:
        float32 scalar (divide by the number of foreground anchors).
    """
    b, n, c = logits.shape
    ce = F.cross_entropy(
        logits.float().reshape(b * n, c), softmax_targets(labels).reshape(-1), reduction="none"
    ).view(b, n)  # (B, N)
    fg = labels >= 0
    chosen = hard_negatives(ce, fg, labels == BACKGROUND, neg_pos_ratio, min_neg)
    return (ce * (fg | chosen)).sum()


def ghm_bin_index(logits: Tensor, targets: Tensor, bins: int) -> Tensor:
    """Bin of the gradient norm g = |sigmoid(x) - t| in ``bins`` equal bins of [0, 1]
    (g = 1 falls in the last bin).

    Args:
        logits: (...) raw scores.
        targets: (...) 0/1.
        bins: number of bins.

    Returns:
        (...) long in 0..bins-1.
    """
    g = (torch.sigmoid(logits.detach().float()) - targets.float()).abs()
    return (g * bins).long().clamp(max=bins - 1)


def ghm_c_weights(bin_idx: Tensor, valid: Tensor, bins: int, counts: Tensor | None = None) -> Tensor:
    """GHM-C weights (Li et al., AAAI 2019): the inverse gradient density.

    beta_i = N_valid / (S_b(i) * n), with S_b the number of valid entries in bin b
    (or the moving average ``counts`` of it) and n the number of bins that are not
    empty in this batch. Over a batch the weights sum to N_valid (without momentum).

    Args:
        bin_idx: (...) bin of each entry (:func:`ghm_bin_index`).
        valid: (...) bool, entries that count.
        bins: number of bins.
        counts: (bins,) entries per bin to use instead of this batch's histogram.

    Returns:
        (...) float32 weights, 0 where not valid.
    """
    batch_counts = torch.bincount(bin_idx[valid], minlength=bins).float()  # (bins,)
    counts = batch_counts if counts is None else counts.float()
    n_valid = valid.sum().float()
    nonempty = (batch_counts > 0).sum().clamp(min=1).float()
    density = counts[bin_idx].clamp(min=1e-12) * nonempty  # (...) no 0 where valid
    return torch.where(valid, n_valid / density, 0.0)


def ghm_c_loss(
    logits: Tensor, targets: Tensor, valid: Tensor, bins: int = 10, counts: Tensor | None = None
) -> Tensor:
    """Gradient harmonizing classification loss (GHM-C), as in the paper:

        L = sum_i beta_i BCE(x_i, t_i) / N_valid,

    beta from :func:`ghm_c_weights` (detached). Entries whose gradient norm is common
    (the many easy negatives, and the outliers near g = 1) are down-weighted.

    Args:
        logits: (...) raw scores, any float dtype.
        targets: (...) 0/1.
        valid: (...) bool, entries that count (e.g. anchors not ignored).
        bins: number of bins of g = |sigmoid(x) - t|.
        counts: (bins,) moving-average histogram to use, or None for this batch's.

    Returns:
        float32 scalar.
    """
    weights = ghm_c_weights(ghm_bin_index(logits, targets, bins), valid, bins, counts)
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return (weights * bce).sum() / valid.sum().clamp(min=1)


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
