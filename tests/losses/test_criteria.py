"""retina.losses.retinanet and .criterion: the RetinaNet criteria's box losses
(``loss.box_loss=smooth_l1|l1|giou``, ``loss.box_weight``), their coder's weights, their
normalisation by the foreground count and the call every criterion answers, on hand-built
anchors and boxes with the expected values worked out in the comments (torchvision's
``sigmoid_focal_loss`` as the oracle of the focal term)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina.losses.gfl import GFLCriterion
from retina.losses.retinanet import (
    GHMCriterion,
    OHEMCriterion,
    RetinaNetCriterion,
    SoftmaxFocalCriterion,
)
from retina.ops.boxes import DeltaCoder
from tests.helpers import gfl_anchors

ANCHORS = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 40, 10, 50],
                        [0, 0, 10, 14]])
# MaxIoU at 0.5 / 0.4: box 0 (1, 1, 11, 11) takes anchor 0 (IoU 81 / 119 = 0.68) and anchor 4
# (0, 0, 10, 14) (IoU 90 / 150 = 0.6); box 1 (20, 20, 32, 30) takes anchor 1 (IoU 100 / 120);
# anchors 2 and 3 touch nothing: background. Three foreground anchors: the normaliser is 3.
GT = torch.tensor([[[1.0, 1, 11, 11], [20, 20, 32, 30]]])
LABELS = torch.tensor([[0, 1]])
# Target deltas (dx, dy, dw, dh) = ((x_b - x_a) / w_a, (y_b - y_a) / h_a, log(w_b / w_a), log(h_b / h_a)):
#   anchor 0: centre (5, 5) 10 x 10 -> box 0 centre (6, 6) 10 x 10: (0.1, 0.1, 0, 0)
#   anchor 1: centre (25, 25) 10 x 10 -> box 1 centre (26, 25) 12 x 10: (0.1, 0, log 1.2, 0)
#   anchor 4: centre (5, 7) 10 x 14 -> box 0: (0.1, -1 / 14, 0, log(10 / 14))
TARGETS = {0: (0.1, 0.1, 0.0, 0.0), 1: (0.1, 0.0, math.log(1.2), 0.0),
           4: (0.1, -1 / 14, 0.0, math.log(10 / 14))}


def losses(box: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    cls = torch.zeros(1, 5, 2)
    return RetinaNetCriterion(**kwargs)(cls, box[None], ANCHORS, GT, LABELS)


def test_l1_on_deltas():
    out = losses(torch.zeros(5, 4), box_loss="l1")
    # |0 - target| summed: 0.2 + (0.1 + log 1.2) + (0.1 + 1/14 + log 1.4), over 3 positives
    expected = (0.4 + math.log(1.2) + 1 / 14 + math.log(1.4)) / 3
    assert int(out["num_fg"]) == 3
    assert out["loss_box"].item() == pytest.approx(expected, rel=1e-5)
    # exact deltas cost nothing, whatever the background anchors predict
    exact = torch.full((5, 4), 7.0)
    for a, d in TARGETS.items():
        exact[a] = torch.tensor(d)
    assert losses(exact, box_loss="l1")["loss_box"].item() == pytest.approx(0.0, abs=1e-6)


def test_smooth_l1_with_its_beta():
    out = losses(torch.zeros(5, 4), box_loss="smooth_l1", smooth_l1_beta=0.5)
    # every |d| < 0.5: 0.5 d^2 / 0.5 = d^2
    expected = sum(d * d for t in TARGETS.values() for d in t) / 3
    assert out["loss_box"].item() == pytest.approx(expected, rel=1e-5)


def test_giou_on_decoded_boxes_and_the_box_weight():
    # deltas 0 decode to the anchors themselves:
    #   anchor 0 vs box 0: IoU 81 / 119, hull (0, 0, 11, 11) = 121 -> 1 - 81/119 + (121 - 119) / 121
    #   anchor 1 vs box 1: IoU 100 / 120, hull = box 1 (120)     -> 1 - 100/120
    #   anchor 4 vs box 0: IoU 90 / 150, hull (0, 0, 11, 14) = 154 -> 1 - 90/150 + 4/154
    zero = (1 - 81 / 119 + 2 / 121) + (1 - 100 / 120) + (1 - 90 / 150 + 4 / 154)
    out = losses(torch.zeros(5, 4), box_loss="giou", box_weight=2.0)
    assert out["loss_box"].item() == pytest.approx(2.0 * zero / 3, rel=1e-5)
    # the exact deltas of anchors 0 and 1 decode onto their boxes: only anchor 4's term is left
    box = torch.zeros(5, 4)
    box[0], box[1] = torch.tensor(TARGETS[0]), torch.tensor(TARGETS[1])
    out = losses(box, box_loss="giou")
    assert out["loss_box"].item() == pytest.approx((1 - 90 / 150 + 4 / 154) / 3, rel=1e-5)


def test_the_coders_weights_scale_the_regression_targets():
    # weights (10, 10, 5, 5): targets (10 dx, 10 dy, 5 dw, 5 dh); L1 against 0:
    #   anchor 0: 1 + 1; anchor 1: 1 + 5 log 1.2; anchor 4: 1 + 10/14 + 5 log 1.4
    out = losses(torch.zeros(5, 4), box_loss="l1", coder=DeltaCoder((10.0, 10.0, 5.0, 5.0)))
    expected = (4 + 10 / 14 + 5 * math.log(1.2) + 5 * math.log(1.4)) / 3
    assert out["loss_box"].item() == pytest.approx(expected, rel=1e-5)
    # and decoding divides them out again: the weighted targets of anchor 1 give box 1
    coder = DeltaCoder((10.0, 10.0, 5.0, 5.0))
    d = torch.tensor([[1.0, 0.0, 5 * math.log(1.2), 0.0]])
    torch.testing.assert_close(coder.decode(d, ANCHORS[1:2]), GT[0, 1:2])
    torch.testing.assert_close(coder.encode(GT[0, 1:2], ANCHORS[1:2]), d)


def test_an_unknown_box_loss_is_refused():
    with pytest.raises(ValueError, match="loss.box_loss must be smooth_l1, l1 or giou, got 'l2'"):
        RetinaNetCriterion(box_loss="l2")


# ---------------------------------------------------------------- classification terms


def test_focal_criterion_divides_the_summed_focal_loss_by_the_foreground_count():
    # one-hot targets: anchor 0 class 0, anchor 1 class 1, anchor 4 class 0; anchors 2 and 3
    # background; three foreground anchors
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(1, 5, 2, generator=g)
    onehot = torch.zeros(5, 2)
    onehot[0, 0] = onehot[1, 1] = onehot[4, 0] = 1.0
    out = RetinaNetCriterion(alpha=0.25, gamma=2.0)(cls, torch.zeros(1, 5, 4), ANCHORS, GT, LABELS)
    torch.testing.assert_close(out["loss_cls"], tv_focal(cls[0], onehot, 0.25, 2.0).sum() / 3)
    # class weights (2, 0.5) multiply alpha of the positives of each class
    out = RetinaNetCriterion(class_weights=[2.0, 0.5])(cls, torch.zeros(1, 5, 4), ANCHORS, GT,
                                                        LABELS)
    weight = torch.where(onehot > 0, 0.25 * torch.tensor([2.0, 0.5]), 0.75)
    expected = (tv_focal(cls[0], onehot, alpha=-1, gamma=2.0) * weight).sum() / 3
    torch.testing.assert_close(out["loss_cls"], expected)


def test_softmax_focal_criterion_divides_by_the_foreground_count():
    # channels (background, class 0, class 1): targets 1, 2, 0, 0, 1 for anchors 0..4
    g = torch.Generator().manual_seed(1)
    cls = torch.randn(1, 5, 3, generator=g)
    target = torch.tensor([1, 2, 0, 0, 1])
    logp = cls[0].log_softmax(-1)[torch.arange(5), target]
    alpha_t = torch.where(target > 0, 0.25, 0.75)
    expected = (-alpha_t * (1 - logp.exp()) ** 2 * logp).sum() / 3
    out = SoftmaxFocalCriterion()(cls, torch.zeros(1, 5, 4), ANCHORS, GT, LABELS)
    torch.testing.assert_close(out["loss_cls"], expected)


def test_ohem_and_ghm_normalisations():
    g = torch.Generator().manual_seed(2)
    # OHEM: both background anchors are the hard negatives (3 x 3 wanted, 2 exist): every
    # anchor's cross-entropy, summed, / 3
    cls = torch.randn(1, 5, 3, generator=g)
    out = OHEMCriterion(min_neg=0)(cls, torch.zeros(1, 5, 4), ANCHORS, GT, LABELS)
    torch.testing.assert_close(out["loss_cls"],
                               F.cross_entropy(cls[0], torch.tensor([1, 2, 0, 0, 1]), reduction="sum") / 3)
    # GHM-C with one bin: every weight N / (N * 1) = 1, the loss the mean BCE over the 10
    # (anchor, class) entries, whatever the foreground count
    cls = torch.randn(1, 5, 2, generator=g)
    onehot = torch.zeros(5, 2)
    onehot[0, 0] = onehot[1, 1] = onehot[4, 0] = 1.0
    out = GHMCriterion(bins=1)(cls, torch.zeros(1, 5, 4), ANCHORS, GT, LABELS)
    torch.testing.assert_close(out["loss_cls"], F.binary_cross_entropy_with_logits(cls[0], onehot))


def test_which_criteria_read_a_background_channel():
    # the softmax losses read K + 1 channels (the head gets channel 0 from this flag)
    assert [c.background_class for c in (RetinaNetCriterion(), GHMCriterion(), GFLCriterion())] \
        == [False, False, False]
    assert SoftmaxFocalCriterion().background_class and OHEMCriterion().background_class


def test_no_level_sizes_is_one_level():
    # ATSS takes topk candidates per level: without level sizes, all anchors are one level
    level = gfl_anchors([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
    anchors = torch.cat(level)
    n = len(anchors)
    gt = torch.tensor([[[4.0, 6.0, 30.0, 40.0]]])
    g = torch.Generator().manual_seed(3)
    cls, box = torch.randn(1, n, 1, generator=g), torch.randn(1, n, 68, generator=g)
    crit = GFLCriterion()
    one = crit(cls, box, anchors, gt, torch.tensor([[0]]))
    assert one["num_fg"] == crit(cls, box, anchors, gt, torch.tensor([[0]]), [n])["num_fg"]
    two = crit(cls, box, anchors, gt, torch.tensor([[0]]), [len(a) for a in level])
    assert int(one["num_fg"]) != int(two["num_fg"])  # per level, other candidates


def test_one_box_in_the_batch_is_assigned():
    # a batch whose images hold one box (M = 1) keeps it: anchors 0 and 4 on box 0
    out = RetinaNetCriterion()(torch.zeros(1, 5, 2), torch.zeros(1, 5, 4), ANCHORS, GT[:, :1],
                               LABELS[:, :1])
    assert int(out["num_fg"]) == 2


# ---------------------------------------------------------------- settings at their limits


@pytest.mark.parametrize("make,error", [
    (lambda: RetinaNetCriterion(gamma=-0.01), "loss.gamma must be a number >= 0, got -0.01"),
    (lambda: RetinaNetCriterion(gamma="2"), "loss.gamma must be a number >= 0, got '2'"),
    (lambda: RetinaNetCriterion(alpha=1.01), r"loss.alpha must be in \[0, 1\]"),
    (lambda: RetinaNetCriterion(alpha="0.25"), r"loss.alpha must be in \[0, 1\]"),
    (lambda: OHEMCriterion(neg_pos_ratio=-1), "must be >= 0, got -1, 32"),
    (lambda: OHEMCriterion(min_neg=-1), "must be >= 0, got 3.0, -1"),
    (lambda: GHMCriterion(bins=0), "loss.bins must be an integer >= 1, got 0"),
    (lambda: GHMCriterion(bins=2.0), "loss.bins must be an integer >= 1, got 2.0"),
    (lambda: GHMCriterion(momentum=1.0), r"loss.momentum must be in \[0, 1\), got 1.0"),
    (lambda: GHMCriterion(momentum=-0.1), r"loss.momentum must be in \[0, 1\), got -0.1"),
])
def test_settings_out_of_range_are_refused(make, error):
    with pytest.raises(ValueError, match=error):
        make()


def test_settings_at_their_limits_are_accepted():
    # gamma 0 (cross-entropy), alpha 1 and negative (off), no hard negatives, one bin, momentum 0
    RetinaNetCriterion(gamma=0, alpha=1.0), RetinaNetCriterion(gamma=0.0, alpha=-1)
    OHEMCriterion(neg_pos_ratio=0, min_neg=0), GHMCriterion(bins=1, momentum=0.0)
    GHMCriterion(momentum=0.999)


# ---------------------------------------------------------------- GHM-C's moving histogram


def background_batch(g: list[float], ignored: int = 0):
    """Class logits (1, N, 1) whose gradient norms are ``g`` (all background: g = p), the
    last ``ignored`` anchors ignored."""
    p = torch.tensor(g)
    labels = torch.full((1, len(g)), -1)
    if ignored:
        labels[0, -ignored:] = -2
    return torch.log(p / (1 - p)).view(1, -1, 1), labels


def test_ghm_criterion_weights_by_the_moving_histogram():
    crit = GHMCriterion(bins=4, momentum=0.75)
    x1, labels1 = background_batch([0.1, 0.1, 0.1, 0.6, 0.9, 0.1], ignored=1)
    crit.cls_loss(x1, labels1, torch.tensor(1.0))  # histogram (3, 0, 1, 1)
    x2, labels2 = background_batch([0.1, 0.3, 0.4, 0.8])  # bins 0, 1, 1, 3: histogram (1, 2, 0, 1)
    # moving counts (.75 * 3 + .25 * 1, 2 (first seen), 1 (empty now: kept), .75 + .25) =
    # (2.5, 2, 1, 1); 3 bins non-empty: beta = 4 / (S n) = 4/7.5, 4/6, 4/6, 4/3; loss = sum
    # beta BCE(x, 0) / 4 with BCE(x, 0) = -log(1 - g)
    bce = -torch.log(1 - torch.tensor([0.1, 0.3, 0.4, 0.8]))
    beta = torch.tensor([4 / 7.5, 4 / 6, 4 / 6, 4 / 3])
    torch.testing.assert_close(crit.cls_loss(x2, labels2, torch.tensor(1.0)), (beta * bce).sum() / 4)
    # without momentum the same batch weighs by its own histogram: 4 / (1 * 3), 4 / (2 * 3), ..
    plain = GHMCriterion(bins=4)
    beta = torch.tensor([4 / 3, 4 / 6, 4 / 6, 4 / 3])
    torch.testing.assert_close(plain.cls_loss(x2, labels2, torch.tensor(1.0)), (beta * bce).sum() / 4)
    assert (plain.bin_counts == 0).all()  # and keeps no histogram


def test_ghm_a_bin_seen_once_is_averaged_not_restarted():
    # first batch: one entry in bin 0; second: three. Moving count .75 * 1 + .25 * 3 = 1.5
    crit = GHMCriterion(bins=2, momentum=0.75)
    crit.update_counts(torch.tensor([0]), torch.tensor([True]))
    got = crit.update_counts(torch.tensor([0, 0, 0]), torch.tensor([True, True, True]))
    torch.testing.assert_close(got, torch.tensor([1.5, 0.0]))
