"""Gradients of the losses: every hand-written backward (the ``autograd.Function`` classes of
retina.losses.functional) against autograd of a plain float64 re-implementation of the paper's
formula written here, for every option that changes it; and what must be detached (the QFL
IoU target, GFL's box weights, GHM's weights, OHEM's choice) is, while what must learn does.

The references share no code with retina.losses: logsigmoid/log_softmax and arithmetic only.
Each gradient is taken of ``(loss * w).sum()`` with random ``w``, so a backward that ignores
or sums its incoming gradient is caught too.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from retina.losses.functional import (
    distribution_focal_loss,
    focal_loss_from_labels,
    ghm_c_loss,
    ohem_cross_entropy,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from retina.losses.gfl import GFLCriterion
from retina.losses.retinanet import (
    GHMCriterion,
    OHEMCriterion,
    RetinaNetCriterion,
    SoftmaxFocalCriterion,
)
from tests.helpers import gfl_anchors

TOL = {"rtol": 1e-4, "atol": 1e-6}  # float32 forward/backward against a float64 reference


def grad_of(fn, x: torch.Tensor, upstream: torch.Tensor | float = 1.0) -> torch.Tensor:
    """d/dx of sum(fn(x) * upstream), x a leaf copy."""
    x = x.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad((fn(x) * upstream).sum(), x)
    return g


# ---------------------------------------------------------------- references (float64)


def focal_ref(x, t, alpha, gamma):
    """Lin et al. 2017, eq. 5: FL = -alpha_t (1 - p_t)^gamma log p_t, written for soft targets
    as torchvision does: p_t = p t + (1 - p)(1 - t), log p_t -> t log p + (1 - t) log(1 - p)."""
    p = torch.sigmoid(x)
    ce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    p_t = p * t + (1 - p) * (1 - t)
    loss = (1 - p_t) ** gamma * ce
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def sparse_focal_ref(x, labels, alpha, gamma, class_weights):
    """The focal loss over every (anchor, class) entry of the anchors not ignored (-2): class
    c of an anchor labelled c is a positive of weight alpha w_c, every other entry a negative
    of weight 1 - alpha (alpha < 0: 1 and w_c)."""
    n, k = x.shape
    t = torch.zeros(n, k, dtype=x.dtype)
    for i, c in enumerate(labels.tolist()):
        if c >= 0:
            t[i, c] = 1.0
    pos_w = (alpha if alpha >= 0 else 1.0) * torch.ones(k, dtype=x.dtype)
    if class_weights is not None:
        pos_w = pos_w * class_weights.double()
    neg_w = 1 - alpha if alpha >= 0 else 1.0
    weight = torch.where(t > 0, pos_w[None, :].expand(n, k), torch.full((n, k), neg_w, dtype=x.dtype))
    valid = (labels != -2).double()[:, None]
    return (focal_ref(x, t, -1, gamma) * weight * valid).sum()


def softmax_focal_ref(x, labels, alpha, gamma, class_weights):
    """Softmax focal loss per anchor: -alpha_t (1 - p_t)^gamma log p_t over K+1 channels,
    channel 0 the background; ignored anchors (-2) 0."""
    out = []
    logp = x.log_softmax(dim=1)
    for i, c in enumerate(labels.tolist()):
        if c == -2:
            out.append(x.new_zeros(()))
            continue
        ch = c + 1 if c >= 0 else 0
        lp = logp[i, ch]
        w = 1.0 if alpha < 0 else (alpha if c >= 0 else 1 - alpha)
        if class_weights is not None and c >= 0:
            w = w * float(class_weights[c])
        out.append(-w * (1 - lp.exp()) ** gamma * lp)
    return torch.stack(out)


def qfl_ref(x, labels, scores, beta):
    """GFL eq. 6: -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log sigma), y the IoU target of a
    positive's own class and 0 for every other entry."""
    n, k = x.shape
    y = torch.zeros(n, k, dtype=x.dtype)
    for i, c in enumerate(labels.tolist()):
        if 0 <= c < k:
            y[i, c] = float(scores[i])
    s = torch.sigmoid(x)
    return -(y - s).abs() ** beta * ((1 - y) * F.logsigmoid(-x) + y * F.logsigmoid(x))


def dfl_ref(x, target):
    """GFL eq. 7: -((y_{i+1} - y) log S_i + (y - y_i) log S_{i+1}), y_i = floor(y)."""
    rows = []
    logp = x.log_softmax(dim=1)
    for i, y in enumerate(target.tolist()):
        lo = math.floor(y)
        rows.append(-((lo + 1 - y) * logp[i, lo] + (y - lo) * logp[i, lo + 1]))
    return torch.stack(rows)


# ---------------------------------------------------------------- sigmoid focal loss (_FocalLoss)


@pytest.mark.parametrize("alpha", [0.25, 0.75, 0.0, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_focal_backward_is_the_papers_gradient(alpha, gamma, soft):
    g = torch.Generator().manual_seed(int(10 * gamma) + 7 * soft)
    x = torch.randn(40, 5, generator=g) * 3
    t = torch.rand(40, 5, generator=g) if soft else (torch.rand(40, 5, generator=g) > 0.6).float()
    w = torch.rand(40, 5, generator=g) + 0.5  # an upstream gradient that is not all ones
    got = grad_of(lambda v: sigmoid_focal_loss(v, t, alpha, gamma), x, w)
    want = grad_of(lambda v: focal_ref(v, t.double(), alpha, gamma), x.double(), w.double())
    torch.testing.assert_close(got, want.float(), **TOL)


def test_focal_backward_keeps_the_input_dtype_and_scales_with_the_incoming_gradient():
    x = torch.tensor([-2.0, 0.5, 3.0]).bfloat16()
    t = torch.tensor([1.0, 0.0, 1.0])
    g1 = grad_of(lambda v: sigmoid_focal_loss(v, t), x)
    g3 = grad_of(lambda v: sigmoid_focal_loss(v, t), x, torch.tensor([3.0, 3.0, 3.0]))
    assert g1.dtype == torch.bfloat16
    torch.testing.assert_close(g3.float(), 3 * g1.float(), rtol=1e-2, atol=0)


# ---------------------------------------------------------------- focal loss from labels (_SparseFocalLoss)


@pytest.mark.parametrize("alpha", [0.25, 0.6, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["no_class_weights", "class_weights"])
def test_sparse_focal_backward_is_the_papers_gradient(alpha, gamma, weighted):
    g = torch.Generator().manual_seed(3)
    n, k = 60, 4
    x = torch.randn(n, k, generator=g) * 3
    labels = torch.randint(-2, k, (n,), generator=g)  # ignored, background and every class
    cw = torch.tensor([0.5, 2.0, 3.0, 1.25]) if weighted else None
    got = grad_of(lambda v: focal_loss_from_labels(v, labels, alpha, gamma, cw), x, 0.37)
    want = grad_of(lambda v: sparse_focal_ref(v, labels, alpha, gamma, cw), x.double(), 0.37)
    torch.testing.assert_close(got, want.float(), **TOL)
    value = focal_loss_from_labels(x, labels, alpha, gamma, cw)
    torch.testing.assert_close(value, sparse_focal_ref(x.double(), labels, alpha, gamma, cw).float(),
                               rtol=1e-5, atol=1e-5)
    assert (got[labels == -2] == 0).all() and (got[labels != -2] != 0).all()


def test_sparse_focal_class_weight_scales_exactly_the_positive_entry_gradient():
    # one anchor of class 1, logits 0 (p = 1/2), gamma 0, alpha 0.25: the positive entry's
    # gradient is alpha w_1 (p - 1) = 0.25 * 4 * -0.5 = -0.5; negatives (1 - alpha) p = 0.375
    x = torch.zeros(1, 3)
    got = grad_of(lambda v: focal_loss_from_labels(v, torch.tensor([1]), 0.25, 0.0,
                                                   torch.tensor([1.0, 4.0, 1.0])), x)
    torch.testing.assert_close(got, torch.tensor([[0.375, -0.5, 0.375]]))


# ---------------------------------------------------------------- autograd losses, checked all the same


@pytest.mark.parametrize("alpha,gamma,weighted", [(0.25, 2.0, False), (0.25, 2.0, True),
                                                  (-1.0, 0.5, True), (0.5, 0.0, False)])
def test_softmax_focal_gradient(alpha, gamma, weighted):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 4, generator=g) * 2  # K = 3
    labels = torch.randint(-2, 3, (30,), generator=g)
    w = torch.rand(30, generator=g) + 0.5
    cw = torch.tensor([2.0, 0.5, 1.5]) if weighted else None
    got = grad_of(lambda v: softmax_focal_loss(v, labels, alpha, gamma, cw), x, w)
    want = grad_of(lambda v: softmax_focal_ref(v, labels, alpha, gamma, cw), x.double(), w.double())
    torch.testing.assert_close(got, want.float(), **TOL)
    assert (got[labels == -2] == 0).all()


@pytest.mark.parametrize("beta", [1.0, 2.0, 2.5])
def test_qfl_gradient_against_the_papers_formula(beta):
    g = torch.Generator().manual_seed(5)
    n, k = 40, 3
    x = torch.randn(n, k, generator=g) * 2
    labels = torch.randint(-1, k + 1, (n,), generator=g)  # -1 and k: background
    scores = torch.rand(n, generator=g)
    w = torch.rand(n, k, generator=g) + 0.5
    got = grad_of(lambda v: quality_focal_loss(v, labels, scores, beta), x, w)
    want = grad_of(lambda v: qfl_ref(v, labels, scores.double(), beta), x.double(), w.double())
    torch.testing.assert_close(got, want.float(), **TOL)
    torch.testing.assert_close(quality_focal_loss(x, labels, scores, beta),
                               qfl_ref(x.double(), labels, scores.double(), beta).float(),
                               rtol=1e-5, atol=1e-6)


def test_dfl_gradient_against_the_papers_formula():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(6, 17, generator=g)
    target = torch.tensor([0.0, 0.3, 3.0, 7.5, 12.25, 15.99])  # integer targets: one bin only
    w = torch.rand(6, generator=g) + 0.5
    got = grad_of(lambda v: distribution_focal_loss(v, target), x, w)
    want = grad_of(lambda v: dfl_ref(v, target.double()), x.double(), w.double())
    torch.testing.assert_close(got, want.float(), **TOL)


def test_ohem_gradient_reaches_foreground_and_the_hard_negatives_only():
    # image 0: 1 foreground (anchor 0) -> the 3 background anchors of largest CE; anchor 6 is
    # ignored. image 1: no foreground, min_neg 2 -> its 2 largest.
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 3, generator=g) * 2
    labels = torch.tensor([[1, -1, -1, -1, -1, -1, -2, -1], [-1] * 8])
    ce = -x.double().log_softmax(-1).gather(2, (labels + 1).clamp(min=0)[..., None])[..., 0]
    chosen = torch.zeros(2, 8, dtype=torch.bool)
    chosen[0, 0] = True
    bg0 = [i for i in range(1, 8) if i != 6]
    for i in sorted(bg0, key=lambda i: -float(ce[0, i]))[:3]:
        chosen[0, i] = True
    for i in ce[1].argsort(descending=True)[:2].tolist():
        chosen[1, i] = True

    def ref(v):
        lp = v.log_softmax(-1).gather(2, (labels + 1).clamp(min=0)[..., None])[..., 0]
        return -(lp * chosen).sum()

    got = grad_of(lambda v: ohem_cross_entropy(v, labels, 3.0, min_neg=2), x)
    torch.testing.assert_close(got, grad_of(ref, x.double()).float(), **TOL)
    assert (got[~chosen] == 0).all() and (got[chosen].abs().sum(-1) > 0).all()


def test_ghm_weights_are_constants_of_the_gradient():
    # 4 bins, targets 0 so g = sigmoid(x): entries in bins 0, 0, 0, 2, 3 (the sixth not valid).
    # beta = N / (S_b n) = 5 / (3 * 3), 5 / 9, 5 / 9, 5 / 3, 5 / 3, 0: dL/dx_i = beta_i p_i / 5
    p = torch.tensor([0.1, 0.1, 0.1, 0.6, 0.9, 0.1])
    x = torch.log(p / (1 - p))
    valid = torch.tensor([True] * 5 + [False])
    beta = torch.tensor([5 / 9, 5 / 9, 5 / 9, 5 / 3, 5 / 3, 0.0])
    got = grad_of(lambda v: ghm_c_loss(v, torch.zeros(6), valid, bins=4), x)
    torch.testing.assert_close(got, beta * p / 5)


# ---------------------------------------------------------------- the criteria: what is detached, what learns


def grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """d loss / d input for each input, zeros where the loss does not depend on it."""
    out = torch.autograd.grad(loss, inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(out, inputs)]


def gfl_batch(seed: int = 0):
    """One 64 px image with two boxes, GFL's anchors, random outputs requiring gradients."""
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    level = gfl_anchors(shapes)
    anchors, sizes = torch.cat(level), [len(a) for a in level]
    g = torch.Generator().manual_seed(seed)
    n = len(anchors)
    cls = torch.randn(1, n, 3, generator=g).requires_grad_()
    box = torch.randn(1, n, 68, generator=g).requires_grad_()
    gt = torch.tensor([[[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]]])
    return cls, box, anchors, sizes, gt, torch.tensor([[0, 2]])


def test_gfl_quality_target_and_box_weights_pass_no_gradient():
    cls, box, anchors, sizes, gt, labels = gfl_batch()
    crit = GFLCriterion()
    out = crit(cls, box, anchors, gt, labels, sizes)
    fg = crit.targets(anchors, sizes, gt, labels).a_idx
    assert len(fg) >= 2
    # QFL: its IoU target is a detached function of the boxes: no gradient to the box outputs
    d_cls, d_box = grads(out["loss_cls"], cls, box)
    assert (d_box == 0).all()
    assert (d_cls != 0).all()  # every anchor and class learns its score
    # GIoU and DFL: weighted by the detached class score: no gradient to the class outputs
    for key in ("loss_box", "loss_dfl"):
        d_cls, d_box = grads(out[key], cls, box)
        assert (d_cls == 0).all(), key
        positive = torch.zeros(box.shape[1], dtype=torch.bool)
        positive[fg] = True
        assert (d_box[0, ~positive] == 0).all(), key  # only positives regress
        assert (d_box[0, positive].abs().sum(-1) > 0).all(), key


def test_gfl_quality_target_is_the_iou_of_the_decoded_box():
    # d loss_cls / d logit of a positive's own class is that of QFL (GFL eq. 6) towards a
    # constant: the IoU of its decoded box (decoded here by hand) with its box, / num_fg
    cls, box, anchors, sizes, gt, labels = gfl_batch(1)
    crit = GFLCriterion()
    out = crit(cls, box, anchors, gt, labels, sizes)
    (d_cls,) = grads(out["loss_cls"], cls)
    t = crit.targets(anchors, sizes, gt, labels)
    for a, j in zip(t.a_idx.tolist(), t.gt_idx.tolist()):
        # decode by hand: anchor side 8 strides, sides l t r b = expectation of each bin softmax
        anc = anchors[a].double()
        stride = float(anc[2] - anc[0]) / 8
        cx, cy = float(anc[0] + anc[2]) / 2, float(anc[1] + anc[3]) / 2
        d = (box[0, a].detach().double().view(4, 17).softmax(-1) * torch.arange(17)).sum(-1) * stride
        pred = [cx - d[0], cy - d[1], cx + d[2], cy + d[3]]
        g = gt[0, j].double().tolist()
        iw = max(0.0, min(pred[2], g[2]) - max(pred[0], g[0]))
        ih = max(0.0, min(pred[3], g[3]) - max(pred[1], g[1]))
        inter = iw * ih
        iou = inter / ((pred[2] - pred[0]) * (pred[3] - pred[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter)
        c = int(labels[0, j])
        x = cls[0, a, c].detach().double().reshape(1, 1).requires_grad_()
        ref = qfl_ref(x, torch.tensor([0]), torch.tensor([float(iou)]), 2.0).sum() / len(t.a_idx)
        (want,) = torch.autograd.grad(ref, x)
        torch.testing.assert_close(d_cls[0, a, c].double(), want[0, 0], rtol=1e-4, atol=1e-7)


RETINA_ANCHORS = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 40, 10, 50],
                               [0, 0, 10, 14]])
# box 0 = anchor 0 moved by (1, 1): IoU 81 / 119 = 0.68 -> foreground; anchor 4 (0, 0, 10, 14) has
# IoU 90 / 150 = 0.6 with it -> foreground too. box 1 = (20, 20, 32, 30): IoU 100 / 120 with
# anchor 1 -> foreground. anchors 2 and 3 overlap nothing -> background.
RETINA_GT = torch.tensor([[[1.0, 1, 11, 11], [20, 20, 32, 30]]])


@pytest.mark.parametrize("make", [
    lambda: RetinaNetCriterion(class_weights=[2.0, 0.5]), lambda: SoftmaxFocalCriterion(),
    lambda: OHEMCriterion(min_neg=1), lambda: GHMCriterion(bins=4),
    lambda: RetinaNetCriterion(box_loss="giou"), lambda: RetinaNetCriterion(box_loss="l1"),
], ids=["focal", "softmax_focal", "ohem", "ghm", "giou", "l1"])
def test_retinanet_criteria_regress_foreground_anchors_only(make):
    crit = make()
    k = 3 if crit.background_class else 2
    g = torch.Generator().manual_seed(8)
    cls = torch.randn(1, 5, k, generator=g).requires_grad_()
    box = (torch.randn(1, 5, 4, generator=g) * 0.1).requires_grad_()
    out = crit(cls, box, RETINA_ANCHORS, RETINA_GT, torch.tensor([[0, 1]]))
    assert int(out["num_fg"]) == 3
    d_cls, d_box = grads(out["loss_box"], cls, box)
    assert (d_cls == 0).all()
    assert (d_box[0, [2, 3]] == 0).all() and (d_box[0, [0, 1, 4]].abs().sum(-1) > 0).all()
    d_cls, d_box = grads(out["loss_cls"], cls, box)
    assert (d_box == 0).all() and (d_cls[0, [0, 1, 4]].abs().sum(-1) > 0).all()
