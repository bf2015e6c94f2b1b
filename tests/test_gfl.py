"""GFL: head, distance coder, ATSS, quality / distribution focal losses, criterion, configs."""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torchvision.ops import generalized_box_iou_loss
from torchvision.ops import sigmoid_focal_loss as tv_focal

from retina.analysis.uncertainty import most_ambiguous, relative_spread
from retina.assign.atss import ATSSAssigner
from retina.assign.max_iou import BACKGROUND
from retina.losses.functional import distribution_focal_loss, quality_focal_loss
from retina.losses.gfl import GFLCriterion
from retina.model.anchors import AnchorGenerator
from retina.model.gfl_head import GFLHead
from retina.ops.boxes import (
    DeltaCoder,
    DistanceCoder,
    boxes_to_distances,
    distances_to_boxes,
    integral,
    paired_iou,
)
from retina.ops.levels import flatten_levels, scale_to_original
from retina.ops.postprocess import Postprocess
from retina.training.run import train

R = 16  # reg_max
LN2 = math.log(2.0)


def gfl_anchors(shapes):
    """GFL's anchors: one square of side 8 * stride per location."""
    return AnchorGenerator(anchor_scale=8, scales_per_octave=1, ratios=(1.0,))(shapes)


def two_bin_logits(t: torch.Tensor, reg_max: int = R) -> torch.Tensor:
    """(...) distances -> (..., R+1) logits of mass (ceil - t) on floor(t), (t - floor) on ceil."""
    lo = t.floor().long()
    w_hi = t - lo
    probs = F.one_hot(lo, reg_max + 1) * (1 - w_hi)[..., None]
    probs = probs + F.one_hot((lo + 1).clamp(max=reg_max), reg_max + 1) * w_hi[..., None]
    return probs.clamp(min=1e-12).log()


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


# ---------------------------------------------------------------- integral coder


def test_integral_of_one_hot_is_the_bin():
    bins = torch.tensor([0, 5, 16])
    got = integral(100.0 * F.one_hot(bins, R + 1).float())  # other bins weigh e^-100
    torch.testing.assert_close(got, torch.tensor([0.0, 5.0, 16.0]))
    assert integral(torch.zeros(R + 1)).item() == pytest.approx(R / 2)


def test_decode_one_hot_and_spread():
    # anchor of side 64 = 8 strides -> stride 8, centre (32, 32); one-hot l, t, r, b = 2, 3, 1, 0
    # -> box (32 - 2*8, 32 - 3*8, 32 + 1*8, 32 + 0*8) = (16, 8, 40, 32)
    coder = DistanceCoder(reg_max=R, anchor_scale=8.0)
    anchor = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    reg = (100.0 * F.one_hot(torch.tensor([2, 3, 1, 0]), R + 1).float()).reshape(1, -1)
    torch.testing.assert_close(coder.decode(reg, anchor), torch.tensor([[16.0, 8.0, 40.0, 32.0]]))
    torch.testing.assert_close(coder.spread(reg, anchor), torch.zeros(1, 4), atol=1e-5, rtol=0)
    # half the mass on bins 2 and 3: mean 2.5, std 0.5 strides = 4 px
    half = two_bin_logits(torch.full((1, 4), 2.5)).reshape(1, -1)
    torch.testing.assert_close(coder.spread(half, anchor), torch.full((1, 4), 4.0))


def test_decode_encode_round_trip():
    coder = DistanceCoder(reg_max=R, anchor_scale=8.0)
    anchors = torch.cat(gfl_anchors([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]))  # (N, 4)
    g = torch.Generator().manual_seed(0)
    strides = (anchors[:, 2] - anchors[:, 0]) / 8
    dist = torch.rand(len(anchors), 4, generator=g) * (R - 0.5)  # strides, inside [0, R)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    boxes = distances_to_boxes(centres, dist * strides[:, None])
    torch.testing.assert_close(boxes_to_distances(centres, boxes) / strides[:, None], dist)
    encoded = coder.encode(boxes, anchors)
    torch.testing.assert_close(encoded, dist, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(coder.decode(two_bin_logits(encoded).flatten(-2), anchors), boxes,
                               atol=1e-2, rtol=1e-5)


def test_encode_clamps_to_the_bins():
    coder = DistanceCoder(reg_max=R, anchor_scale=8.0)
    anchor = torch.tensor([[0.0, 0.0, 64.0, 64.0]])  # stride 8, centre (32, 32)
    box = torch.tensor([[40.0, -1000.0, 30.0, 1000.0]])  # left side right of the centre
    assert coder.encode(box, anchor).tolist() == [[0.0, pytest.approx(R - 0.01), 0.0,
                                                   pytest.approx(R - 0.01)]]


def test_paired_iou_is_the_box_iou_diagonal():
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 4, generator=g) * 50
    b = torch.rand(20, 4, generator=g) * 50
    a = torch.cat([a[:, :2], a[:, :2] + a[:, 2:]], 1)
    b = torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)
    torch.testing.assert_close(paired_iou(a, b), box_iou(a, b).diagonal())
    assert paired_iou(torch.zeros(4), torch.zeros(4)).item() == 0.0


# ---------------------------------------------------------------- head


def test_head_outputs_and_level_scales():
    head = GFLHead(num_classes=3, num_levels=2, in_channels=32, channels=32, num_convs=1, reg_max=7)
    assert (head.num_anchors, head.box_dim, head.num_classes) == (1, 32, 3)
    feats = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    cls, box = head(feats)
    assert [c.shape for c in cls] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [b.shape for b in box] == [(2, 32, 8, 8), (2, 32, 4, 4)]
    prior = torch.tensor(math.log(0.01 / 0.99))
    torch.testing.assert_close(cls[0].mean(), prior, atol=0.05, rtol=0)
    with torch.no_grad():
        head.scales[1] = 2.0
    torch.testing.assert_close(head(feats)[1][1], 2 * box[1])
    with pytest.raises(ValueError, match="zip"):  # 3 feature maps for 2 level scales
        head(feats + feats[:1])


# ---------------------------------------------------------------- ATSS


def test_atss_hand_built_two_levels():
    # Level 0: four 16 px anchors on a row, centres (8, 8) (24, 8) (40, 8) (56, 8).
    # Level 1: two 32 px anchors, centres (16, 16) (48, 16). topk = 2 per level, so each box
    # has 4 candidates; threshold = mean + std (Bessel) of their IoUs.
    anchors = torch.tensor(
        [[0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16], [48, 0, 64, 16],
         [0, 0, 32, 32], [32, 0, 64, 32]], dtype=torch.float32,
    )
    # Image 0: C = (0, 0, 24, 16), A = (0, 0, 16, 16).
    #   C, centre (12, 8): candidates a0 a1 (dist 4, 12), a4 a5. IoU a0 256/384 = .667,
    #     a1 128/512 = .25, a4 384/1024 = .375, a5 0 -> mean .323, std .277, thr .600: a0.
    #   A, centre (8, 8): candidates a0 a1, a4 a5. IoU 1, 0, 256/1024 = .25, 0
    #     -> mean .3125, std .473, thr .786: a0.
    #   a0 is claimed by both: A has the higher IoU (1 > .667) -> gt index 1.
    # Image 1: B = (10, 0, 40, 32), E = (0, 0, 8, 16).
    #   B, centre (25, 16): candidates a1 a2 (dist 8.1, 17), a4 a5. IoU a1 256/960 = .267,
    #     a2 128/1088 = .118, a4 704/1280 = .55, a5 256/1728 = .148
    #     -> mean .271, std .197, thr .468: a4, centre (16, 16) inside B.
    #   E, centre (4, 8): candidates a0 a1, a4 a5. IoU .5, 0, 128/1024 = .125, 0
    #     -> mean .156, std .237, thr .393: a0 passes the IoU test, but its centre (8, 8)
    #     lies on E's right edge x = 8, not strictly inside: E gets no anchor.
    # Image 2: padding only.
    gt_boxes = torch.tensor(
        [
            [[0, 0, 24, 16], [0, 0, 16, 16]],
            [[10, 0, 40, 32], [0, 0, 8, 16]],
            [[0, 0, 0, 0], [0, 0, 0, 0]],
        ], dtype=torch.float32,
    )
    gt_labels = torch.tensor([[0, 1], [0, 0], [-1, -1]])
    got = ATSSAssigner(topk=2)(anchors, [4, 2], gt_boxes, gt_labels)
    bg = BACKGROUND
    assert got.tolist() == [
        [1, bg, bg, bg, bg, bg],
        [bg, bg, bg, bg, 0, bg],
        [bg] * 6,
    ]


def test_atss_no_boxes_and_topk_larger_than_a_level():
    anchors = torch.cat(gfl_anchors([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]))
    sizes = [16, 4, 1, 1, 1]
    no_labels = torch.zeros(2, 0, dtype=torch.long)
    empty = ATSSAssigner()(anchors, sizes, torch.zeros(2, 0, 4), no_labels)
    assert empty.shape == (2, 23) and (empty == BACKGROUND).all()
    got = ATSSAssigner(topk=9)(anchors, sizes, torch.tensor([[[20.0, 20.0, 60.0, 70.0]]]),
                               torch.tensor([[0]]))
    assert got.shape == (1, 23) and (got == 0).any() and ((got == 0) | (got == BACKGROUND)).all()


# ---------------------------------------------------------------- criterion


def tiny_batch(m: int):
    """Two 64 px images: image 0 with ``m`` boxes, image 1 padding only."""
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    level = gfl_anchors(shapes)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]])[:m]
    gt_boxes = torch.zeros(2, m, 4)
    gt_boxes[0] = boxes
    gt_labels = torch.full((2, m), -1)
    gt_labels[0] = torch.arange(m) % 3
    return shapes, level, gt_boxes, gt_labels


@pytest.mark.parametrize("m", [2, 0])
def test_criterion_finite_under_bf16_autocast_and_touches_every_parameter(m):
    shapes, level, gt_boxes, gt_labels = tiny_batch(m)
    torch.manual_seed(0)
    head = GFLHead(num_classes=3, in_channels=32, channels=32, num_convs=1)
    feats = [torch.randn(2, 32, h, w) for h, w in shapes]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cls_maps, box_maps = head(feats)
        cls = flatten_levels(cls_maps, 3)  # (B, N, K)
        box = flatten_levels(box_maps, head.box_dim)  # (B, N, 68)
        sizes = [len(a) for a in level]
        losses = GFLCriterion()(cls, box, torch.cat(level), gt_boxes, gt_labels, sizes)
    assert cls.dtype == torch.bfloat16
    assert set(losses) == {"loss_cls", "loss_box", "loss_dfl", "num_fg"}
    assert (losses["num_fg"] > 0) == (m > 0)
    total = losses["loss_cls"] + losses["loss_box"] + losses["loss_dfl"]
    assert torch.isfinite(total)
    total.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_criterion_finite_for_extreme_low_precision_outputs():
    shapes, level, gt_boxes, gt_labels = tiny_batch(2)
    n = sum(len(a) for a in level)
    sign = torch.where(torch.arange(2 * n * 3) % 2 == 0, 1.0, -1.0)
    cls = (100 * sign).reshape(2, n, 3).to(torch.float16).requires_grad_()
    box = (100 * torch.where(torch.arange(2 * n * 68) % 3 == 0, 1.0, -1.0)).reshape(2, n, 68)
    box = box.to(torch.float16).requires_grad_()
    sizes = [len(a) for a in level]
    losses = GFLCriterion()(cls, box, torch.cat(level), gt_boxes, gt_labels, sizes)
    total = losses["loss_cls"] + losses["loss_box"] + losses["loss_dfl"]
    total.backward()
    assert torch.isfinite(total)
    assert torch.isfinite(cls.grad).all() and torch.isfinite(box.grad).all()


def test_criterion_normalisation():
    shapes, level, gt_boxes, gt_labels = tiny_batch(2)
    anchors, sizes = torch.cat(level), [len(a) for a in level]
    n = len(anchors)
    torch.manual_seed(0)
    box = torch.randn(2, n, 68)
    crit = GFLCriterion()
    # every class logit 3: every positive's weight is sigmoid(3) and the weights sum to >= 1,
    # so the box losses are plain means over positives
    cls = torch.full((2, n, 3), 3.0)
    losses = crit(cls, box, anchors, gt_boxes, gt_labels, sizes)
    matches = crit.assigner(anchors, sizes, gt_boxes, gt_labels)
    b_idx, a_idx = (matches >= 0).nonzero(as_tuple=True)
    num_fg = len(b_idx)
    assert losses["num_fg"] == num_fg and num_fg * torch.sigmoid(torch.tensor(3.0)) >= 1
    pred = crit.coder.decode(box[b_idx, a_idx], anchors[a_idx])
    gt = gt_boxes[b_idx, matches[b_idx, a_idx]]
    giou = generalized_box_iou_loss(pred, gt).mean()
    torch.testing.assert_close(losses["loss_box"], 2.0 * giou)
    dfl = distribution_focal_loss(box[b_idx, a_idx].reshape(-1, 17),
                                  crit.coder.encode(gt, anchors[a_idx]).reshape(-1)).mean()
    torch.testing.assert_close(losses["loss_dfl"], 0.25 * dfl)
    # QFL: summed, divided by the number of positives
    labels = torch.full((2, n), 3)
    labels[b_idx, a_idx] = gt_labels[b_idx, matches[b_idx, a_idx]]
    scores = torch.zeros(2, n)
    scores[b_idx, a_idx] = paired_iou(pred, gt)
    qfl = quality_focal_loss(cls.reshape(-1, 3), labels.reshape(-1), scores.reshape(-1)).sum()
    torch.testing.assert_close(losses["loss_cls"], qfl / num_fg)


def test_criterion_rejects_box_channels_of_another_reg_max():
    shapes, level, gt_boxes, gt_labels = tiny_batch(1)
    n = sum(len(a) for a in level)
    with pytest.raises(ValueError, match="reg_max=16 needs 4 \\* 17"):
        GFLCriterion()(torch.zeros(2, n, 3), torch.zeros(2, n, 4), torch.cat(level), gt_boxes,
                       gt_labels, [len(a) for a in level])


# ---------------------------------------------------------------- postprocess and review


def test_postprocess_gathers_spread_like_the_boxes():
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    level = gfl_anchors(shapes)
    g = torch.Generator().manual_seed(0)
    cls = [torch.randn(2, 2, h, w, generator=g) for h, w in shapes]
    box = [torch.randn(2, 68, h, w, generator=g) for h, w in shapes]
    coder = DistanceCoder()
    sizes = torch.tensor([[1000, 1000], [1000, 1000]])  # clipped only at 0: boxes stay distinct
    dets = Postprocess(coder, score_thresh=0.3, nms_thresh=0.6)(cls, box, level, sizes)
    # reference: every location decoded and clipped; each detection is one of them
    anchors = torch.cat(level)
    for i, det in enumerate(dets):
        assert len(det["boxes"]) > 0 and det["spread"].shape == (len(det["boxes"]), 4)
        reg = flatten_levels([b[i : i + 1] for b in box], 68)[0]  # (N, 68)
        all_boxes = coder.decode(reg, anchors).clamp(0, 1000)
        nearest = torch.cdist(det["boxes"], all_boxes).argmin(dim=1)
        torch.testing.assert_close(det["boxes"], all_boxes[nearest])
        torch.testing.assert_close(det["spread"], coder.spread(reg, anchors)[nearest])
    shapes = [(4, 4), (2, 2), (2, 2), (1, 1), (1, 1)]
    retina = Postprocess(DeltaCoder())(
        [torch.randn(1, 9, h, w, generator=g) for h, w in shapes],
        [torch.zeros(1, 36, h, w) for h, w in shapes],
        AnchorGenerator()(shapes), torch.tensor([[32, 32]]),
    )
    assert set(retina[0]) == {"boxes", "scores", "labels"}


def test_scale_to_original_scales_spread_per_axis():
    det = {"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "scores": torch.tensor([0.9]),
           "labels": torch.tensor([0]), "spread": torch.tensor([[1.0, 2.0, 3.0, 4.0]])}
    # input (H, W) = (100, 200) from original (200, 100): x * 0.5, y * 2
    (out,) = scale_to_original([det], torch.tensor([[100, 200]]), torch.tensor([[200, 100]]))
    torch.testing.assert_close(out["spread"], torch.tensor([[0.5, 4.0, 1.5, 8.0]]))
    torch.testing.assert_close(out["boxes"], torch.tensor([[5.0, 20.0, 10.0, 60.0]]))


def test_most_ambiguous_ranks_by_relative_spread():
    dets = [
        {  # image 10: (1+1+1+1) / 4 / 10 = 0.1 and 5 / 100 = 0.05; a 0.1-score one with 0.5
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 100.0, 100.0],
                                   [0.0, 0.0, 10.0, 10.0]]),
            "spread": torch.tensor([[1.0] * 4, [5.0] * 4, [5.0] * 4]),
            "scores": torch.tensor([0.9, 0.8, 0.1]),
            "labels": torch.tensor([0, 1, 0]),
        },
        {  # image 20: w 20, h 10: (4/20 + 2/10 + 4/20 + 2/10) / 4 = 0.2
            "boxes": torch.tensor([[0.0, 0.0, 20.0, 10.0]]),
            "spread": torch.tensor([[4.0, 2.0, 4.0, 2.0]]),
            "scores": torch.tensor([0.5]),
            "labels": torch.tensor([2]),
        },
        {"boxes": torch.zeros(0, 4), "spread": torch.zeros(0, 4), "scores": torch.zeros(0),
         "labels": torch.zeros(0, dtype=torch.long)},
    ]
    rel = relative_spread(dets[1]["boxes"], dets[1]["spread"])
    torch.testing.assert_close(rel, torch.tensor([0.2]))
    top = most_ambiguous([10, 20, 30], dets, k=5, min_score=0.3)
    assert [(d.image_id, d.label) for d in top] == [(20, 2), (10, 0), (10, 1)]
    assert [d.uncertainty for d in top] == pytest.approx([0.2, 0.1, 0.05])
    assert top[0].score == 0.5 and top[0].spread.tolist() == [4.0, 2.0, 4.0, 2.0]
    assert len(most_ambiguous([10, 20, 30], dets, k=1)) == 1
    with pytest.raises(ValueError, match="spread"):
        most_ambiguous([1], [{k: v for k, v in dets[1].items() if k != "spread"}])


# ---------------------------------------------------------------- configs and training


@pytest.mark.parametrize("experiment", ["neon_gfl", "gfl_r50_1x"])
def test_gfl_experiments_compose_and_build(tiny_cfg, experiment):
    cfg = tiny_cfg(f"experiment={experiment}", "model.detector.backbone.weights=null")
    with open_dict(cfg):
        cfg.model.detector.head.num_classes = 3
    module = instantiate(cfg.model)
    assert isinstance(module.detector.head, GFLHead) and isinstance(module.criterion, GFLCriterion)
    assert module.detector.anchors.num_anchors == 1
    assert module.detector.head.box_dim == 68
    assert module.criterion.coder == module.postprocess.coder == DistanceCoder(16, 8.0)
    if experiment == "gfl_r50_1x":
        assert cfg.optim.lr == 0.01 and cfg.data.min_size == 800 and cfg.trainer.max_epochs == 12
        assert module.detector.backbone.out_channels == (512, 1024, 2048)


def test_neon_gfl_mirrors_neon_retinanet_budget(tiny_cfg):
    def groups(experiment):
        cfg = tiny_cfg(f"experiment={experiment}")
        shared = ("data", "optim", "sched", "trainer")
        return {g: OmegaConf.to_container(cfg[g]) for g in shared}, cfg

    retina, retina_cfg = groups("neon_retinanet")
    gfl, gfl_cfg = groups("neon_gfl")
    assert gfl == retina
    assert gfl_cfg.model.detector.backbone == retina_cfg.model.detector.backbone


def test_model_gfl_alone_selects_the_gfl_loss(tiny_cfg):
    cfg = tiny_cfg("model=gfl")
    assert cfg.loss._target_ == "retina.losses.gfl.GFLCriterion"
    assert cfg.model.detector.head._target_ == "retina.model.gfl_head.GFLHead"
    assert "coder" not in cfg.loss  # the model's one coder: model.coder
    assert cfg.model.coder.anchor_scale == cfg.model.detector.anchors.anchor_scale
    focal = "retina.losses.retinanet.RetinaNetCriterion"
    assert tiny_cfg("model=gfl", "loss=focal").loss._target_ == focal  # the command line wins
    assert tiny_cfg("experiment=neon_retinanet").loss._target_ == focal


def test_fast_dev_run_gfl(tiny_cfg):
    metrics = train(tiny_cfg("debug=fdr", "model=gfl"))
    assert {"val/mAP", "val/mAP_50", "val/AR_100"} <= set(metrics)
