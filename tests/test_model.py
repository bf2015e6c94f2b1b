from functools import partial

import pytest
import torch

from retina.losses.retinanet import RetinaNetCriterion
from retina.model.anchors import AnchorGenerator
from retina.model.backbone import mobilenet_v2, resnet
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


def test_flatten_follows_anchor_layout():
    # channel a*K + k at (y, x) must land at row (y*W + x)*A + a
    a, k, h, w = 3, 2, 2, 4
    m = torch.arange(a * k * h * w).float().view(1, a * k, h, w)
    flat = flatten_levels([m], k)
    y, x, ai, ki = 1, 2, 2, 1
    assert flat[0, (y * w + x) * a + ai, ki] == m[0, ai * k + ki, y, x]


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
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = step(det, torch.rand(2, 3, 256, 256), boxes, labels)
    (losses["loss_cls"] + losses["loss_box"]).backward()
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_box"])


def test_freeze_stages_and_frozen_bn():
    bb = resnet(18, freeze_stages=2)
    trainable = [n for n, p in bb.named_parameters() if p.requires_grad]
    assert trainable and not any(n.startswith(("stages.0.", "stages.1.")) for n in trainable)
    assert not any("bn" in n for n in trainable)  # FrozenBatchNorm2d has buffers only
    assert resnet(50).out_channels == (512, 1024, 2048)
    assert mobilenet_v2().out_channels == (32, 96, 1280)


def test_p6p7_from_p5_or_c5():
    for src in ("c5", "p5"):
        det = Detector(resnet(18), partial(RetinaHead, 2), AnchorGenerator(), p6p7_from=src)
        assert det.fpn.extra_blocks.p6.in_channels == (512 if src == "c5" else 256)
        assert det.fpn.extra_blocks.use_P5 == (src == "p5")


def test_local_weights_file_and_offline_error(tmp_path, monkeypatch):
    src = resnet(18, frozen_bn=False)
    state = {k.replace("stages.0.0", "conv1").replace("stages.0.1", "bn1"): v for k, v in src.state_dict().items()}
    state = {k.replace("stages.1", "layer1").replace("stages.2", "layer2").replace("stages.3", "layer3").replace("stages.4", "layer4"): v for k, v in state.items()}
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    loaded = resnet(18, weights=str(path), frozen_bn=False)
    torch.testing.assert_close(loaded.stages[2][0].conv1.weight, src.stages[2][0].conv1.weight)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match=r"Offline\? Put the file at .*resnet18-f37072fd.pth"):
        resnet(18, weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resnet(18, weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="depth"):
        resnet(19)
