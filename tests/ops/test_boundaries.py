"""retina.ops.postprocess and retina.ops.boxes at their exact boundaries.

Expected sides from torchvision's documented semantics:

- score threshold: torchvision's RetinaNet keeps ``scores > score_thresh``; a score exactly at
  the threshold is dropped. retina compares logits with the threshold's logit, so "exactly at"
  is a logit equal to it (exact for score_thresh 0.5: the logit 0).
- NMS: ``torchvision.ops.nms`` drops a box whose IoU with a kept, higher-scoring box is
  ``> iou_threshold``; a pair exactly at the threshold both stay. IoU 100 / 200 = 0.5 exactly.
- clipping: to [0, W] in x and [0, H] in y of each image's own size.
"""

import math

import pytest
import torch
from torchvision.ops import nms

from retina.ops.boxes import DELTA_CLAMP, DeltaCoder, DistanceCoder, decode_deltas
from retina.ops.levels import foreground_logits
from retina.ops.postprocess import Postprocess, clip_boxes, nms_rank

# one level of 2 x 2 locations, one anchor each, far apart (no NMS between them)
LEVEL = [torch.tensor([[0.0, 0, 10, 10], [50, 0, 60, 10], [0, 50, 10, 60], [50, 50, 60, 60]])]
SIZES = torch.tensor([[100, 100]])


def f32_above(x: float) -> float:
    """The next float32 above the float32 of ``x``."""
    return float(torch.nextafter(torch.tensor(x), torch.tensor(math.inf)))


def detect(pp: Postprocess, logits: list[list[float]]) -> list[tuple[int, int]]:
    """(location, class) of every detection; ``logits[c]`` are class c's four locations."""
    cls = torch.tensor(logits, dtype=torch.float32).view(1, len(logits), 2, 2)
    (det,) = pp([cls], [torch.zeros(1, 4, 2, 2)], LEVEL, SIZES)
    loc = [int(torch.cdist(b[None, :2], LEVEL[0][:, :2]).argmin()) for b in det["boxes"]]
    return sorted(zip(loc, det["labels"].tolist()))


@pytest.mark.parametrize("score_thresh", [0.5, 0.05, 0.3])
def test_a_score_exactly_at_the_threshold_is_dropped(score_thresh):
    pp = Postprocess(DeltaCoder(), score_thresh=score_thresh)
    at = float(torch.tensor(pp.logit_thresh))  # the threshold's logit in float32
    above = f32_above(pp.logit_thresh)
    if score_thresh == 0.5:
        assert at == 0.0 and torch.sigmoid(torch.tensor(at)) == 0.5  # exactly at, as a score too
    # few pass (the path that looks at passing locations only): location 0 class 0 at the
    # threshold, location 1 class 0 just above; class 1 at location 1 at the threshold
    # (its location passes through class 0, the class itself must not)
    low = -20.0
    assert detect(pp, [[at, above, low, low], [low, at, low, low]]) == [(1, 0)]
    # most pass (the path that takes the top-k of all logits): three locations high, the
    # fourth exactly at the threshold
    assert detect(pp, [[5.0, 5.0, 5.0, at], [low] * 4]) == [(0, 0), (1, 0), (2, 0)]
    # the fixed-size candidates of exported graphs mark the same ones
    cls = torch.tensor([[at, above, low, low], [low, at, low, low]]).view(1, 2, 2, 2)
    _, scores, labels, keep, _ = pp.candidates([cls], [torch.zeros(1, 4, 2, 2)], LEVEL, SIZES)
    assert int(keep.sum()) == 1 and scores[keep].item() == torch.sigmoid(torch.tensor(above)).item()


def test_threshold_zero_keeps_every_score_however_small():
    pp = Postprocess(DeltaCoder(), score_thresh=0.0)
    assert pp.logit_thresh == -math.inf
    assert len(detect(pp, [[-80.0, -90.0, -60.0, -70.0]])) == 4  # sigmoid(-90) > 0


# ---------------------------------------------------------------- NMS at its threshold


A = [0.0, 0.0, 10.0, 10.0]
AT_HALF = [0.0, 0.0, 10.0, 20.0]  # IoU with A: 100 / 200 = 0.5 exactly
ABOVE = [0.0, 0.0, 10.0, 19.0]  # 100 / 190 = 0.526


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
@pytest.mark.parametrize("other,kept", [(AT_HALF, [0, 1]), (ABOVE, [0])], ids=["at", "above"])
def test_nms_keeps_a_pair_exactly_at_the_threshold(other, kept):
    boxes = torch.tensor([A, other])
    scores = torch.tensor([0.9, 0.8])
    zero = torch.zeros(2, dtype=torch.long)
    assert nms(boxes, scores, 0.5).tolist() == kept  # the oracle
    assert nms_rank(boxes, scores, zero, zero, 1, 0.5, 1)[0].tolist() == kept  # eager
    traced = torch.jit.trace(lambda b, s, i, c: nms_rank(b, s, i, c, 1, 0.5, 1)[0],
                             (boxes, scores, zero, zero), check_trace=False)
    assert traced(boxes, scores, zero, zero).tolist() == kept  # the exported graphs' path
    # through the postprocess: two anchors decoded with zero deltas onto these boxes
    anchors = [torch.tensor([A, other, [50.0, 50, 60, 60], [80.0, 80, 90, 90]])]
    cls = torch.tensor([2.0, 1.0, -20.0, -20.0]).view(1, 1, 2, 2)
    pp = Postprocess(DeltaCoder(), nms_thresh=0.5)
    (det,) = pp([cls], [torch.zeros(1, 4, 2, 2)], anchors, SIZES)
    torch.testing.assert_close(det["boxes"], boxes[kept])


def test_nms_is_per_class_at_the_threshold_too():
    # the same two boxes above the threshold, but of different classes: both stay
    boxes = torch.tensor([A, ABOVE])
    kept, _ = nms_rank(boxes, torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.long),
                       torch.tensor([0, 1]), 2, 0.5, 1)
    assert kept.tolist() == [0, 1]


# ---------------------------------------------------------------- clipping


def test_clip_to_each_images_own_height_and_width():
    # image 0: H 50, W 80; image 1: H 120, W 30. x clipped to [0, W], y to [0, H].
    boxes = torch.tensor([[[-5.0, -1, 80, 50], [10, 20, 90, 70]],
                          [[-5.0, -1, 80, 50], [10, 20, 30, 120]]])
    sizes = torch.tensor([[50, 80], [120, 30]])
    got = clip_boxes(boxes, sizes[:, None])
    expected = torch.tensor([[[0.0, 0, 80, 50], [10, 20, 80, 50]],  # at the edge: unchanged
                             [[0.0, 0, 30, 50], [10, 20, 30, 120]]])
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------- coders at their limits


def test_delta_decode_clamp_starts_exactly_at_its_limit():
    # dw = DELTA_CLAMP gives 1000 / 16 times the anchor; above it, the same; just below, less
    anchor = torch.tensor([[0.0, 0, 16, 16]], dtype=torch.float64)
    widths = []
    for dw in (DELTA_CLAMP - 0.01, DELTA_CLAMP, DELTA_CLAMP + 0.01):
        box = decode_deltas(torch.tensor([[0.0, 0, dw, 0]], dtype=torch.float64), anchor)
        widths.append(float(box[0, 2] - box[0, 0]))
    assert widths[0] == pytest.approx(16 * math.exp(DELTA_CLAMP - 0.01))
    assert widths[1] == pytest.approx(1000.0) and widths[2] == pytest.approx(1000.0)
    # the weights divide dw before the clamp: with ww = 5, dw = 5 * DELTA_CLAMP is the limit
    box = DeltaCoder((1.0, 1.0, 5.0, 5.0)).decode(
        torch.tensor([[0.0, 0, 5 * DELTA_CLAMP - 0.05, 0]], dtype=torch.float64), anchor)
    assert float(box[0, 2] - box[0, 0]) == pytest.approx(16 * math.exp(DELTA_CLAMP - 0.01))


def test_delta_coder_weights_hand_computed():
    # anchor centre (5, 10), 10 x 20; box centre (12, 14), 20 x 20
    # deltas (7/10, 4/20, log 2, 0) times the weights (10, 10, 5, 5)
    coder = DeltaCoder((10.0, 10.0, 5.0, 5.0))
    anchor, box = torch.tensor([0.0, 0, 10, 20]), torch.tensor([2.0, 4, 22, 24])
    torch.testing.assert_close(coder.encode(box, anchor), torch.tensor([7.0, 2.0, 5 * math.log(2), 0.0]))
    torch.testing.assert_close(coder.decode(torch.tensor([7.0, 2.0, 5 * math.log(2), 0.0]), anchor), box)


def test_distance_encode_at_the_bin_limits():
    # stride 8, centre (32, 32): a side exactly at the centre is distance 0; a side exactly
    # (R - 0.01) strides away stays; one side R strides away is clamped to R - 0.01
    coder = DistanceCoder(reg_max=16, anchor_scale=8.0)
    anchor = torch.tensor([[0.0, 0, 64, 64]])
    box = torch.tensor([[32.0, 32.0 - 8 * 15.99, 32.0 + 8 * 16, 32.0 + 8 * 3]])
    got = coder.encode(box, anchor)[0].tolist()
    assert got == [0.0, pytest.approx(15.99), pytest.approx(15.99), 3.0]


def test_a_saturated_softmax_gives_a_finite_foreground_logit():
    # background 0, the class 40 higher: p = 1 in float32 (1 - p = e^-40 < 2^-24); its logit
    # log(p / (1 - p)) is clamped at 1 - p = 1.2e-7 (about 15.9), not +inf
    maps = [torch.tensor([0.0, 40.0, -40.0]).view(1, 3, 1, 1)]  # K = 2
    (out,) = foreground_logits(maps, 2)
    assert torch.isfinite(out).all() and 15.0 < out[0, 0, 0, 0] < 17.0
    assert out[0, 1, 0, 0] == pytest.approx(-80.0, abs=1e-3)  # log p - log(1 - p) = -80 - 0
