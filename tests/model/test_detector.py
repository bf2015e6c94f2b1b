"""retina.model.detector: backbone + FPN + head, forward and backward with the focal criterion."""

from functools import partial

import torch
import torch.nn.functional as F

from retina.losses.retinanet import RetinaNetCriterion
from retina.model.anchors import AnchorGenerator
from retina.model.backbone import resnet
from retina.model.detector import Detector
from retina.model.head import RetinaHead
from retina.ops.levels import flatten_levels


def build(num_classes=3, **head_kw):
    torch.manual_seed(0)
    return Detector(resnet(18), partial(RetinaHead, num_classes, **head_kw), AnchorGenerator())


def targets():
    boxes = torch.tensor([[[10.0, 10, 60, 80], [100, 100, 200, 220]], [[0, 0, 0, 0], [0, 0, 0, 0]]])
    labels = torch.tensor([[0, 2], [-1, -1]])  # image 1 has no boxes
    return boxes, labels


def step(det, images, boxes, labels):
    cls, box = det(images)
    anchors = torch.cat(AnchorGenerator()([c.shape[-2:] for c in cls]))
    k = det.head.num_classes
    return RetinaNetCriterion()(flatten_levels(cls, k), flatten_levels(box, 4), anchors, boxes, labels)


def test_forward_shapes_and_initial_prior():
    det = build(num_classes=5)
    cls, box = det(torch.rand(2, 3, 256, 128))
    assert [tuple(c.shape) for c in cls] == [(2, 45, 256 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    assert [tuple(b.shape[1:2]) for b in box] == [(36,)] * 5
    mean_p = torch.cat([c.flatten() for c in cls]).sigmoid().mean().item()
    assert abs(mean_p - 0.01) < 0.001


def test_forward_loss_backward_resnet18_with_an_empty_image():
    det = build()
    boxes, labels = targets()
    losses = step(det, torch.rand(2, 3, 256, 256), boxes, labels)
    assert losses["num_fg"] > 0
    (losses["loss_cls"] + losses["loss_box"]).backward()
    assert all(torch.isfinite(v).all() for v in losses.values())
    grads = [p.grad for p in det.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_losses_finite_with_no_boxes_at_all_and_under_bf16():
    det = build()
    empty = step(det, torch.rand(2, 3, 128, 128), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert empty["num_fg"] == 0 and empty["loss_box"] == 0 and torch.isfinite(empty["loss_cls"])
    boxes, labels = targets()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # 128 px: bf16 is slow on most CPUs
        losses = step(det, torch.rand(2, 3, 128, 128), boxes / 2, labels)
    (losses["loss_cls"] + losses["loss_box"]).backward()
    assert losses["num_fg"] > 0
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_box"])


def test_p6p7_from_p5_or_c5():
    for src in ("c5", "p5"):
        det = Detector(resnet(18), partial(RetinaHead, 2), AnchorGenerator(), p6p7_from=src)
        assert det.fpn.extra_blocks.p6.in_channels == (512 if src == "c5" else 256)
        assert det.fpn.extra_blocks.use_P5 == (src == "p5")


def test_p7_without_relu():
    torch.manual_seed(0)
    det = Detector(resnet(18), partial(RetinaHead, 2), AnchorGenerator(), p7_relu=False)
    c5, p5 = torch.randn(1, 512, 4, 4), torch.randn(1, 256, 4, 4)
    extra = det.fpn.extra_blocks
    p, _ = extra([p5], [c5], ["p5"])
    p6 = F.conv2d(c5, extra.p6.weight, extra.p6.bias, stride=2, padding=1)
    p7 = F.conv2d(p6, extra.p7.weight, extra.p7.bias, stride=2, padding=1)  # no relu(p6)
    torch.testing.assert_close(p[1], p6)
    torch.testing.assert_close(p[2], p7)
    assert (p6 < 0).any()  # the ReLU would have changed P7


def test_padding_zero_after_normalisation():
    torch.manual_seed(0)
    det = Detector(resnet(18), partial(RetinaHead, 2), AnchorGenerator(), pad_after_norm=True)
    sizes = torch.tensor([[50, 64], [64, 35]])
    images = torch.zeros(2, 3, 64, 64)
    mean_filled = det.pixel_mean.expand(2, 3, 64, 64).clone()  # normalises to exactly 0
    for i, (h, w) in enumerate(sizes.tolist()):
        images[i, :, :h, :w] = mean_filled[i, :, :h, :w] = torch.rand(3, h, w)
    with torch.no_grad():
        ours = det(images, sizes)
        oracle = det(mean_filled)  # no sizes: nothing masked
        plain = det(images)
    for a, b in zip(ours[0] + ours[1], oracle[0] + oracle[1]):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(plain[0][0], ours[0][0])  # zero pixels are not zero features
