"""retina.losses.functional: focal, quality / distribution focal, softmax focal, OHEM,
GHM-C and box losses; the foreground normalizer."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina.losses.functional import (
    box_regression_loss,
    distribution_focal_loss,
    focal_loss_from_labels,
    ghm_bin_index,
    ghm_c_loss,
    ghm_c_weights,
    hard_negatives,
    normalizer,
    ohem_cross_entropy,
    quality_focal_loss,
    sigmoid_focal_loss,
    softmax_focal_loss,
)
from tests.helpers import R, ghm_example

LN2 = math.log(2.0)


# ---------------------------------------------------------------- sigmoid focal loss and box losses


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (-1.0, 2.0), (0.25, 0.0), (0.75, 0.5), (-1, 5.0)])
def test_focal_matches_torchvision_values_and_grads(alpha, gamma):
    torch.manual_seed(0)
    x = (torch.randn(64, 7) * 4).requires_grad_()
    t = (torch.rand(64, 7) > 0.7).float()
    ours = sigmoid_focal_loss(x, t, alpha, gamma)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = tv_focal(x, t, alpha, gamma)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_focal_soft_targets_and_reductions_match_torchvision():
    torch.manual_seed(1)
    x, t = torch.randn(10, 3) * 3, torch.rand(10, 3)
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(sigmoid_focal_loss(x, t, 0.3, 1.5, red), tv_focal(x, t, 0.3, 1.5, red))
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="avg")


def test_focal_hand_computed():
    # x = 0 -> p = 0.5; t = 1: CE = log 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25
    loss = sigmoid_focal_loss(torch.zeros(1), torch.ones(1), 0.25, 2.0)
    assert loss.item() == pytest.approx(0.25 * 0.25 * 0.6931471805599453)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_finite_for_extreme_low_precision_logits(dtype, gamma):
    x = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0]).repeat(2).to(dtype).requires_grad_()
    t = torch.tensor([0.0] * 5 + [1.0] * 5)
    loss = sigmoid_focal_loss(x, t, 0.25, gamma)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and torch.isfinite(g).all()
    # confidently right entries cost ~0, confidently wrong ones ~|x|
    assert loss[0] < 1e-6 and loss[9] < 1e-6 and loss[4] > 10


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 0.5)])
def test_sparse_focal_equals_dense_on_valid_anchors(alpha, gamma):
    torch.manual_seed(2)
    n, k = 200, 5
    x = (torch.randn(n, k) * 3).requires_grad_()
    labels = torch.randint(-2, k, (n,))  # -2 ignored, -1 background, else class
    ours = focal_loss_from_labels(x, labels, alpha, gamma)
    (g_ours,) = torch.autograd.grad(ours, x)
    valid = labels != -2
    onehot = F.one_hot(labels.clamp(min=0), k).float() * (labels >= 0)[:, None]
    ref = tv_focal(x[valid], onehot[valid], alpha, gamma).sum()
    (g_ref,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)
    assert (g_ours[labels == -2] == 0).all()


def test_sparse_focal_under_bf16_autocast_is_finite():
    x = (torch.randn(50, 4) * 100).bfloat16().requires_grad_()
    labels = torch.randint(-2, 4, (50,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = focal_loss_from_labels(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad.float()).all() and x.grad.dtype == torch.bfloat16


def test_box_losses_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    tgt = torch.tensor([[0.05, -1.0, 0.0, 0.2]])
    # smooth-L1 beta 0.1: 0.5 * 0.05^2 / 0.1 + (1 - 0.05) + 0 + (0.2 - 0.05)
    assert box_regression_loss("smooth_l1", pred, tgt, 0.1).item() == pytest.approx(0.0125 + 0.95 + 0.15)
    assert box_regression_loss("l1", pred, tgt).item() == pytest.approx(1.25)
    # GIoU of [0,0,2,2] vs [1,1,3,3]: IoU 1/7, hull 9, union 7 -> 1 - (1/7 - 2/9)
    a, b = torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 3]])
    assert box_regression_loss("giou", a, b).item() == pytest.approx(1 - (1 / 7 - 2 / 9), abs=1e-6)
    with pytest.raises(ValueError, match="box loss"):
        box_regression_loss("l2", a, b)


def test_class_weights_scale_the_alpha_of_positives_in_sigmoid_focal():
    torch.manual_seed(3)
    x = torch.randn(40, 3) * 2
    labels = torch.randint(-2, 3, (40,))
    w = torch.tensor([0.5, 2.0, 3.0])
    ours = focal_loss_from_labels(x, labels, 0.25, 2.0, class_weights=w)
    valid = labels != -2
    onehot = F.one_hot(labels.clamp(min=0), 3).float() * (labels >= 0)[:, None]
    entry_w = torch.where(onehot > 0, 0.25 * w, 0.75)  # per-class alpha, negatives 1 - alpha
    ref = (tv_focal(x, onehot, alpha=-1, gamma=2.0) * entry_w)[valid].sum()
    torch.testing.assert_close(ours, ref)


# ---------------------------------------------------------------- quality focal loss


def test_qfl_hand_computed():
    # K = 2, beta = 2. Row 0: logits (0, 0), class 0 positive with IoU 0.6.
    #   (0,0): p = 0.5, BCE(0, 0.6) = -(0.6 + 0.4) log 0.5 = ln 2; |0.6 - 0.5|^2 = 0.01
    #   (0,1): negative: BCE(0, 0) = ln 2; p^2 = 0.25
    # Row 1: logits (ln 3, 0), background (label K = 2).
    #   (1,0): p = 0.75, BCE(ln 3, 0) = ln(1 + 3) = ln 4; p^2 = 0.5625
    # Row 2: logits (0, ln 3), class 1 positive with IoU 0.6.
    #   (2,1): BCE = -(0.6 ln 0.75 + 0.4 ln 0.25); |0.6 - 0.75|^2 = 0.0225
    ln3 = math.log(3.0)
    logits = torch.tensor([[0.0, 0.0], [ln3, 0.0], [0.0, ln3]])
    labels = torch.tensor([0, 2, 1])
    scores = torch.tensor([0.6, 0.0, 0.6])
    pos = -(0.6 * math.log(0.75) + 0.4 * math.log(0.25)) * 0.0225
    expected = torch.tensor(
        [
            [LN2 * 0.01, LN2 * 0.25],
            [math.log(4.0) * 0.5625, LN2 * 0.25],
            [LN2 * 0.25, pos],
        ]
    )
    got = quality_focal_loss(logits, labels, scores, beta=2.0)
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32
    # -1 also means background
    as_minus_one = quality_focal_loss(logits, torch.tensor([0, -1, 1]), scores)
    torch.testing.assert_close(as_minus_one, expected)


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_qfl_with_hard_scores_is_the_focal_loss(beta):
    torch.manual_seed(0)
    n, k = 50, 4
    x = (torch.randn(n, k) * 3).requires_grad_()
    labels = torch.randint(0, k + 1, (n,))  # k = background
    scores = torch.randint(0, 2, (n,)).float()  # a positive's IoU target 0 or 1
    target = F.one_hot(labels, k + 1)[:, :k].float() * scores[:, None]
    ours = quality_focal_loss(x, labels, scores, beta)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = tv_focal(x, target, alpha=-1, gamma=beta)
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_qfl_finite_for_extreme_low_precision_logits(dtype):
    x = torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0]).repeat(3, 1).to(dtype).requires_grad_()
    labels = torch.tensor([0, 4, 5])  # row 0 class 0, row 1 class 4, row 2 background
    scores = torch.tensor([0.0, 0.9, 0.0])
    loss = quality_focal_loss(x, labels, scores)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and torch.isfinite(g).all()
    assert loss[2, 0] < 1e-6 and loss[2, 4] > 50  # confident negatives: right ~0, wrong ~|x|


# ---------------------------------------------------------------- distribution focal loss


def test_dfl_is_two_bin_cross_entropy_and_a_step_moves_mass_there():
    torch.manual_seed(0)
    logits = torch.randn(1, R + 1, requires_grad=True)
    loss = distribution_focal_loss(logits, torch.tensor([3.4]))
    # floor 3, ceil 4: (4 - 3.4) CE(bin 3) + (3.4 - 3) CE(bin 4)
    expected = 0.6 * F.cross_entropy(logits, torch.tensor([3])) + 0.4 * F.cross_entropy(
        logits, torch.tensor([4])
    )
    torch.testing.assert_close(loss, expected[None])
    loss.sum().backward()
    with torch.no_grad():
        before = logits.softmax(-1)[0, 3:5].sum()
        after = (logits - 0.5 * logits.grad).softmax(-1)[0, 3:5].sum()
    assert after > before


def test_dfl_integer_target_and_low_precision():
    x = torch.zeros(2, R + 1, dtype=torch.bfloat16)
    loss = distribution_focal_loss(x, torch.tensor([0.0, R - 0.01]))
    # uniform over R+1 bins: every CE is log(R+1), the weights sum to 1
    torch.testing.assert_close(loss, torch.full((2,), math.log(R + 1)))
    assert loss.dtype == torch.float32


# ---------------------------------------------------------------- softmax focal loss


def test_softmax_focal_hand_computed():
    # K = 1, logits (0, 0): p_t = 1/2, CE = ln 2, (1 - p_t)^2 = 1/4
    x = torch.zeros(3, 2)
    labels = torch.tensor([0, -1, -2])  # class 0 (channel 1), background, ignored
    loss = softmax_focal_loss(x, labels, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.25 * 0.25 * LN2, 0.75 * 0.25 * LN2, 0.0]))
    # a class weight of 3 multiplies the foreground alpha only
    weighted = softmax_focal_loss(x, labels, 0.25, 2.0, class_weights=torch.tensor([3.0]))
    torch.testing.assert_close(weighted, loss * torch.tensor([3.0, 1.0, 1.0]))


@pytest.mark.parametrize("alpha", [0.25, -1.0])
def test_softmax_focal_gamma_0_is_alpha_t_cross_entropy(alpha):
    torch.manual_seed(0)
    x = torch.randn(50, 4) * 3  # K = 3
    labels = torch.randint(-2, 3, (50,))
    ce = F.cross_entropy(x, labels + 1, ignore_index=-1, reduction="none")  # bg -> 0, ignored -> -1
    alpha_t = torch.where(labels >= 0, alpha, 1 - alpha) if alpha >= 0 else torch.ones(50)
    torch.testing.assert_close(softmax_focal_loss(x, labels, alpha, 0.0), alpha_t * ce)


def test_softmax_focal_down_weights_easy_anchors():
    # p_t = 0.9: the factor (1 - p_t)^2 = 0.01 relative to the cross-entropy
    x = torch.tensor([[0.0, math.log(9.0)]])  # softmax (0.1, 0.9)
    loss = softmax_focal_loss(x, torch.tensor([0]), alpha=-1, gamma=2.0)
    assert loss.item() == pytest.approx(0.01 * -math.log(0.9), rel=1e-5)


# ---------------------------------------------------------------- OHEM


def test_hard_negatives_pick_3_per_foreground_and_the_minimum_without_foreground():
    loss = torch.tensor([
        [9.0, 0.5, 0.1, 0.9, 0.3, 0.7, 8.0, 0.2],
        [0.4, 0.8, 0.6, 0.1, 0.9, 0.2, 0.3, 0.5],
    ])
    fg = torch.zeros(2, 8, dtype=torch.bool)
    fg[0, 0] = True  # image 0: one foreground anchor
    bg = ~fg
    bg[0, 6] = False  # ignored (its loss is the highest but it is no negative)
    chosen = hard_negatives(loss, fg, bg, neg_pos_ratio=3, min_neg=2)
    # image 0: 3 x 1 negatives, the highest of bg: 0.9 (3), 0.7 (5), 0.5 (1)
    # image 1: no foreground, min_neg = 2: 0.9 (4), 0.8 (1)
    assert chosen[0].nonzero().flatten().tolist() == [1, 3, 5]
    assert chosen[1].nonzero().flatten().tolist() == [1, 4]
    # more negatives wanted than there are: all of them
    assert hard_negatives(loss, fg, bg, neg_pos_ratio=100, min_neg=0)[0].tolist() == bg[0].tolist()


def test_ohem_cross_entropy_sums_foreground_and_hard_negatives():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 3)  # K = 2
    labels = torch.tensor([
        [1, -1, -1, -1, -1, -1, -2, 0],  # two foreground anchors: 6 negatives wanted, 5 exist
        [-1, -1, -1, -1, -1, -1, -1, -1],  # none: min_neg = 2
    ])
    ce = F.cross_entropy(x.view(16, 3), (labels + 1).clamp(min=0).view(16), reduction="none").view(2, 8)
    expected = ce[0, [0, 1, 2, 3, 4, 5, 7]].sum() + ce[1].topk(2).values.sum()
    torch.testing.assert_close(ohem_cross_entropy(x, labels, 3.0, min_neg=2), expected)


# ---------------------------------------------------------------- GHM-C


def test_ghm_weights_are_the_inverse_gradient_density():
    x, t, valid = ghm_example()
    bin_idx = ghm_bin_index(x, t, 4)
    assert bin_idx.tolist() == [0, 0, 0, 2, 3, 0]
    # N = 5 valid; bins 0, 2, 3 not empty (n = 3) with 3, 1, 1 entries: beta = N / (S_b n)
    w = ghm_c_weights(bin_idx, valid, 4)
    torch.testing.assert_close(w, torch.tensor([5 / 9, 5 / 9, 5 / 9, 5 / 3, 5 / 3, 0.0]))
    # loss = sum beta BCE / N, BCE(x, 0) = -ln(1 - g)
    bce = -torch.log(1 - torch.tensor([0.1, 0.1, 0.1, 0.6, 0.9]))
    expected = (w[:5] * bce).sum() / 5
    torch.testing.assert_close(ghm_c_loss(x, t, valid, bins=4), expected)
    # g = 1 (certainly wrong) falls in the last bin
    assert ghm_bin_index(torch.tensor([-100.0]), torch.tensor([1.0]), 4).item() == 3


# ---------------------------------------------------------------- normalizer over two processes


def test_normalizer_is_the_mean_over_processes_floored_at_one(two_processes):
    assert normalizer(torch.tensor(3.0)).item() == 3.0  # one process: the count itself
    for rank in (0, 1):
        assert two_processes[rank]["normalizer"] == 4.5  # (3 + 6) / 2
        assert two_processes[rank]["normalizer_floor"] == 1.0  # (0 + 1) / 2 < 1
