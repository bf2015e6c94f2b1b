"""retina.ops.inference.detect: network outputs -> detections in the original image's pixels,
in its list form and its fixed-size form (the exported graphs), sigmoid and softmax heads."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from retina.model.anchors import AnchorGenerator
from retina.ops.boxes import DeltaCoder
from retina.ops.inference import detect
from retina.ops.postprocess import Postprocess

A = 9  # anchors per location of the default generator
LOW, HIGH = -20.0, 20.0
SIZE = 256  # network input (padded) side


class StubNetwork:
    """Per-level maps of a 256 x 256 input: every class logit ``LOW`` but for chosen
    (anchor, channel, row, col) entries of P3; box outputs zero (the delta coder then decodes
    every anchor to itself). With ``background``, channel 0 of every anchor is the background,
    ``HIGH`` but where ``hot`` sets it."""

    def __init__(self, num_classes: int, hot: dict[tuple[int, int, int, int], float],
                 background: bool = False) -> None:
        self.anchors = AnchorGenerator()
        channels = num_classes + 1 if background else num_classes
        self.head = SimpleNamespace(num_classes=num_classes, background_class=background)
        self.cls_maps = []
        for s in (8, 16, 32, 64, 128):
            maps = torch.full((2, A, channels, SIZE // s, SIZE // s), LOW)
            if background:
                maps[:, :, 0] = HIGH
            self.cls_maps.append(maps.flatten(1, 2))  # (2, A*K', H, W)
        for (a, k, row, col), logit in hot.items():
            self.cls_maps[0][:, a * channels + k, row, col] = logit
        self.box_maps = [torch.zeros(2, A * 4, SIZE // s, SIZE // s) for s in (8, 16, 32, 64, 128)]

    def __call__(self, images, image_sizes):
        return self.cls_maps, self.box_maps

    def level_anchors(self, maps):
        return self.anchors([tuple(m.shape[-2:]) for m in maps], maps[0].device)


def p3_anchor(a: int, row: int, col: int) -> torch.Tensor:
    """The P3 anchor ``a`` of cell (row, col): positions outer, anchors inner."""
    shapes = [(SIZE // s, SIZE // s) for s in (8, 16, 32, 64, 128)]
    p3 = AnchorGenerator()(shapes, torch.device("cpu"))[0]  # (32*32*A, 4)
    return p3[(row * (SIZE // 8) + col) * A + a]


def run(network, orig_sizes, padded=False):
    post = Postprocess(DeltaCoder(), score_thresh=0.05, nms_thresh=0.5, max_det=10)
    images = torch.zeros(2, 3, SIZE, SIZE)
    image_sizes = torch.tensor([[SIZE, SIZE], [SIZE, SIZE]])
    return detect(network, post, images, image_sizes, orig_sizes, padded=padded)


def test_boxes_come_back_in_each_images_own_pixels_per_axis():
    net = StubNetwork(3, {(4, 2, 10, 12): 2.0})
    orig = torch.tensor([[512, 128], [256, 256]])  # (H, W): image 0 twice as high, half as wide
    dets = run(net, orig)
    anchor = p3_anchor(4, 10, 12)  # decoded to itself (zero deltas), inside the image
    assert anchor.min() >= 0 and anchor.max() <= SIZE
    torch.testing.assert_close(dets[0]["boxes"], (anchor * torch.tensor([0.5, 2, 0.5, 2]))[None])
    torch.testing.assert_close(dets[1]["boxes"], anchor[None])
    for d in dets:
        assert d["labels"].tolist() == [2]
        torch.testing.assert_close(d["scores"], torch.tensor([1 / (1 + math.exp(-2.0))]))


def test_the_fixed_size_form_holds_the_same_detections_in_padded_rows():
    net = StubNetwork(3, {(4, 2, 10, 12): 2.0, (0, 0, 3, 3): 1.0, (8, 1, 20, 5): -1.0})
    orig = torch.tensor([[300, 200], [256, 256]])
    listed = run(net, orig)
    boxes, scores, labels, num_dets = run(net, orig, padded=True)
    assert boxes.shape == (2, 10, 4) and num_dets.tolist() == [3, 3]  # sigmoid(-1) > 0.05
    for i, d in enumerate(listed):
        n = int(num_dets[i])
        torch.testing.assert_close(boxes[i, :n], d["boxes"])
        torch.testing.assert_close(scores[i, :n], d["scores"])
        assert torch.equal(labels[i, :n], d["labels"])
        assert (labels[i, n:] == -1).all() and (boxes[i, n:] == 0).all()


@pytest.mark.parametrize("padded", [False, True])
def test_a_softmax_head_scores_each_class_by_its_softmax_probability(padded):
    # channel 0 of each anchor is the background: logits (bg, c0, c1) = (0.5, 1.0, 3.0) at
    # one anchor; every other anchor (HIGH, LOW, LOW): background. Softmax gives the scores.
    net = StubNetwork(2, {(4, 0, 10, 12): 0.5, (4, 1, 10, 12): 1.0, (4, 2, 10, 12): 3.0},
                      background=True)
    z = torch.tensor([0.5, 1.0, 3.0]).double()
    p = (z.exp() / z.exp().sum()).float()  # (3,) softmax probabilities
    out = run(net, torch.tensor([[SIZE, SIZE]] * 2), padded=padded)
    if padded:
        _, scores, labels, num_dets = out
        got_scores, got_labels = scores[0, : num_dets[0]], labels[0, : num_dets[0]]
    else:
        got_scores, got_labels = out[0]["scores"], out[0]["labels"]
    assert got_labels.tolist() == [1, 0]  # classes 0..K-1: channel 2 is class 1
    torch.testing.assert_close(got_scores, p[[2, 1]])


class StubGFLNetwork(StubNetwork):
    """GFL's layout: one square anchor per location (side 8 strides), one class, and per
    side 17 bin logits; at the hot P3 cell the four sides' distributions differ (a peak with
    spread at bin 2, 3, 4 and 5), so each side has its own non-zero spread."""

    def __init__(self, row: int, col: int) -> None:
        self.anchors = AnchorGenerator(anchor_scale=8.0, scales_per_octave=1, ratios=(1.0,))
        self.head = SimpleNamespace(num_classes=1, background_class=False)
        self.cls_maps = [torch.full((2, 1, SIZE // s, SIZE // s), LOW) for s in (8, 16, 32, 64, 128)]
        self.cls_maps[0][:, 0, row, col] = 2.0
        self.box_maps = [torch.zeros(2, 4 * 17, SIZE // s, SIZE // s) for s in (8, 16, 32, 64, 128)]
        bins = torch.arange(17.0)
        for side in range(4):
            logits = -0.5 * (bins - (2 + side)) ** 2 / (0.5 + 0.25 * side)  # (17,)
            self.box_maps[0][:, side * 17: (side + 1) * 17, row, col] = logits


def test_the_gfl_spread_comes_back_in_each_images_own_pixels_in_both_forms():
    from retina.ops.boxes import DistanceCoder

    net = StubGFLNetwork(10, 12)
    post = Postprocess(DistanceCoder(), score_thresh=0.05, nms_thresh=0.5, max_det=10)
    images = torch.zeros(2, 3, SIZE, SIZE)
    image_sizes = torch.tensor([[SIZE, SIZE], [SIZE, SIZE]])
    orig = torch.tensor([[512, 128], [256, 256]])  # image 0: twice as high, half as wide
    listed = detect(net, post, images, image_sizes, orig)
    *_, num_dets, spread = detect(net, post, images, image_sizes, orig, padded=True)
    unscaled = listed[1]["spread"]  # image 1 is its own network input
    assert unscaled.shape == (1, 4) and (unscaled > 0).all()
    assert len(set(unscaled[0].tolist())) == 4  # four different sides
    # left and right scale by the width ratio (0.5), top and bottom by the height ratio (2)
    torch.testing.assert_close(listed[0]["spread"], unscaled * torch.tensor([0.5, 2, 0.5, 2]))
    for i in range(2):
        assert int(num_dets[i]) == 1
        torch.testing.assert_close(spread[i, :1], listed[i]["spread"])
