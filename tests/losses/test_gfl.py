"""retina.losses.gfl: the GFL criterion (ATSS, QFL, DFL and GIoU)."""

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from retina.losses.functional import distribution_focal_loss, quality_focal_loss
from retina.losses.gfl import GFLCriterion
from retina.model.gfl_head import GFLHead
from retina.ops.boxes import paired_iou
from retina.ops.levels import flatten_levels
from tests.helpers import gfl_anchors


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
