"""retina.losses.gfl: the GFL criterion (ATSS, QFL, DFL and GIoU)."""

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss

from retina.losses.gfl import GFLCriterion
from retina.model.gfl_head import GFLHead
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
    # two images, the second padding only; every class logit 3: every positive's weight is
    # sigmoid(3) and the weights sum to >= 1, so the box losses are plain means over positives
    shapes, level, gt_boxes, gt_labels = tiny_batch(2)
    anchors, sizes = torch.cat(level), [len(a) for a in level]
    n = len(anchors)
    torch.manual_seed(0)
    box = torch.randn(2, n, 68)
    cls = torch.full((2, n, 3), 3.0)
    losses = GFLCriterion()(cls, box, anchors, gt_boxes, gt_labels, sizes)
    expected = paper_losses(level, cls, box, gt_boxes, gt_labels)
    num_fg = expected["num_fg"]
    assert int(losses["num_fg"]) == num_fg > 0 and num_fg * torch.sigmoid(torch.tensor(3.0)) >= 1
    assert expected["weight_sum"] == pytest.approx(num_fg * float(torch.sigmoid(torch.tensor(3.0))))
    for key in ("loss_cls", "loss_box", "loss_dfl"):
        torch.testing.assert_close(float(losses[key]), expected[key], rtol=1e-4, atol=1e-6)


def test_criterion_rejects_box_channels_of_another_reg_max():
    shapes, level, gt_boxes, gt_labels = tiny_batch(1)
    n = sum(len(a) for a in level)
    with pytest.raises(ValueError, match="reg_max=16 needs 4 \\* 17"):
        GFLCriterion()(torch.zeros(2, n, 3), torch.zeros(2, n, 4), torch.cat(level), gt_boxes,
                       gt_labels, [len(a) for a in level])


def atss_by_loops(anchors: list[torch.Tensor], boxes: torch.Tensor, topk: int = 9) -> dict:
    """ATSS written out per box and level in plain Python: {anchor index: box index}."""
    flat = torch.cat(anchors).double()
    centres = (flat[:, :2] + flat[:, 2:]) / 2
    best: dict[int, tuple[float, int]] = {}
    for j, box in enumerate(boxes.double().tolist()):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cand, start = [], 0
        for level in anchors:
            dist = [((float(x) - cx) ** 2 + (float(y) - cy) ** 2) ** 0.5
                    for x, y in centres[start:start + len(level)].tolist()]
            cand += [start + i for i in sorted(range(len(dist)), key=dist.__getitem__)[:topk]]
            start += len(level)
        ious = []
        for i in cand:
            a = flat[i].tolist()
            iw = max(0.0, min(a[2], box[2]) - max(a[0], box[0]))
            ih = max(0.0, min(a[3], box[3]) - max(a[1], box[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
            ious.append(inter / union)
        mean = sum(ious) / len(ious)
        std = (sum((v - mean) ** 2 for v in ious) / (len(ious) - 1)) ** 0.5
        for i, iou in zip(cand, ious):
            x, y = centres[i].tolist()
            inside = box[0] < x < box[2] and box[1] < y < box[3]
            if iou >= mean + std and inside and iou > best.get(i, (-1.0, -1))[0]:
                best[i] = (iou, j)
    return {i: j for i, (_, j) in best.items()}


def paper_losses(level: list[torch.Tensor], cls: torch.Tensor, box: torch.Tensor,
                 gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> dict:
    """GFL's three losses of a batch from the paper's formulas, per positive in float64: ATSS
    by loops (:func:`atss_by_loops`), boxes decoded by hand, GIoU by torchvision, DFL and QFL
    written out; box terms weighted by the positive's highest class score and divided by the
    sum of those weights floored at 1, QFL summed over every anchor and class and divided by
    the number of positives."""
    anchors = torch.cat(level)
    n, r1 = len(anchors), box.shape[-1] // 4
    giou_sum = dfl_sum = weight_sum = qfl = 0.0
    num_fg = 0
    for b in range(len(cls)):
        valid = gt_labels[b] >= 0
        pairs = atss_by_loops(level, gt_boxes[b][valid]) if valid.any() else {}
        num_fg += len(pairs)
        iou_of = {}
        for i, j in pairs.items():
            a, gt = anchors[i].double(), gt_boxes[b][valid][j].double()
            stride = float(a[2] - a[0]) / 8  # anchor side 8 strides
            cx, cy = float(a[0] + a[2]) / 2, float(a[1] + a[3]) / 2
            probs = box[b, i].double().view(4, r1).softmax(-1)
            dist = (probs * torch.arange(r1)).sum(-1) * stride  # expected l, t, r, b in pixels
            pred = torch.stack([cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]])
            w = float(cls[b, i].double().sigmoid().max())
            giou_sum += w * float(generalized_box_iou_loss(pred[None], gt[None]))
            target = torch.tensor([cx - gt[0], cy - gt[1], gt[2] - cx, gt[3] - cy]) / stride
            target = target.clamp(0, r1 - 1 - 0.01)
            lo = target.floor().long()
            ce = -probs.log()
            dfl = ((lo + 1 - target) * ce[range(4), lo] + (target - lo) * ce[range(4), lo + 1])
            dfl_sum += w * float(dfl.mean())
            weight_sum += w
            iw = (torch.minimum(pred[2], gt[2]) - torch.maximum(pred[0], gt[0])).clamp(min=0)
            ih = (torch.minimum(pred[3], gt[3]) - torch.maximum(pred[1], gt[1])).clamp(min=0)
            inter = iw * ih
            union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + (gt[2] - gt[0]) * (gt[3] - gt[1])
            iou_of[i] = (int(gt_labels[b][valid][j]), float(inter / (union - inter)))
        # QFL over every anchor and class: BCE toward the IoU for a positive's own class,
        # toward 0 elsewhere, times |target - p|^2
        p = cls[b].double().sigmoid()
        for i in range(n):
            for c in range(cls.shape[-1]):
                s = iou_of[i][1] if i in iou_of and iou_of[i][0] == c else 0.0
                bce = -(s * p[i, c].log() + (1 - s) * (1 - p[i, c]).log())
                qfl += float(bce * (s - p[i, c]).abs() ** 2)
    norm = max(weight_sum, 1.0)
    return {"loss_cls": qfl / max(num_fg, 1), "loss_box": 2.0 * giou_sum / norm,
            "loss_dfl": 0.25 * dfl_sum / norm, "num_fg": num_fg, "weight_sum": weight_sum}


def test_criterion_against_the_paper_formulas_with_varied_scores():
    # One image with two boxes; random class logits, so each positive's GIoU and DFL terms
    # carry a different weight (its highest class score), and the weights sum to < 1 or > 1
    # depending on the scale: both normalisations of the paper's code are exercised.
    shapes, level, gt_boxes, gt_labels = tiny_batch(2)
    gt_boxes, gt_labels = gt_boxes[:1], gt_labels[:1]
    anchors, sizes = torch.cat(level), [len(a) for a in level]
    n = len(anchors)
    g = torch.Generator().manual_seed(1)
    box = torch.randn(1, n, 4 * 17, generator=g)
    pairs = atss_by_loops(level, gt_boxes[0])
    assert len(pairs) >= 3 and set(pairs.values()) == {0, 1}
    for scale, floor in ((3.0, False), (-6.0, True)):  # weights sum > 1, then < 1
        cls = scale + torch.randn(1, n, 3, generator=g)
        losses = GFLCriterion()(cls, box, anchors, gt_boxes, gt_labels, sizes)
        expected = paper_losses(level, cls, box, gt_boxes, gt_labels)
        assert (expected["weight_sum"] < 1) == floor
        assert int(losses["num_fg"]) == expected["num_fg"] == len(pairs)
        for key in ("loss_cls", "loss_box", "loss_dfl"):
            torch.testing.assert_close(float(losses[key]), expected[key], rtol=1e-4, atol=1e-6)
