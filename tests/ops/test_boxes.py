"""retina.ops.boxes: the delta coder (RetinaNet) and the distance coder (GFL)."""

import math

import pytest
import torch
import torch.nn.functional as F

from retina.ops.boxes import (
    DELTA_CLAMP,
    DeltaCoder,
    DistanceCoder,
    boxes_to_distances,
    decode_deltas,
    distances_to_boxes,
    encode_deltas,
    integral,
    paired_iou,
)
from tests.helpers import R, gfl_anchors

# ---------------------------------------------------------------- delta coder


def random_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 500
    wh = torch.rand(n, 2, generator=g) * 190 + 10  # ratios < 1000/16: no clamping
    return torch.cat([xy, xy + wh], dim=1)


def test_round_trip():
    # float64 so the check is on the maths, not on float32 rounding of 500-px coordinates
    boxes, anchors = random_boxes(1000, 0).double(), random_boxes(1000, 1).double()
    for weights in [(1, 1, 1, 1), (10, 10, 5, 5)]:
        coder = DeltaCoder(weights)
        torch.testing.assert_close(coder.decode(coder.encode(boxes, anchors), anchors), boxes, atol=1e-5, rtol=1e-5)
        # seeded, and below DELTA_CLAMP (log(1000/16) = 4.14), where decode stops being invertible
        g = torch.Generator().manual_seed(2)
        deltas = torch.randn(1000, 4, generator=g, dtype=torch.float64).clamp(-4, 4)
        torch.testing.assert_close(coder.encode(coder.decode(deltas, anchors), anchors), deltas, atol=1e-5, rtol=1e-5)


def test_encode_hand_computed():
    anchor = torch.tensor([0.0, 0, 10, 20])  # centre (5, 10), w 10, h 20
    box = torch.tensor([2.0, 4, 22, 24])  # centre (12, 14), w 20, h 20
    d = encode_deltas(box, anchor)
    torch.testing.assert_close(d, torch.tensor([7 / 10, 4 / 20, math.log(2), 0.0]))


def test_decode_clamps_large_dw_dh():
    anchor = torch.tensor([[0.0, 0, 16, 16]])
    box = decode_deltas(torch.tensor([[0.0, 0, 50, 50]]), anchor)
    # clamped to log(1000 / 16): a 16-px anchor grows to at most 1000 px
    assert DELTA_CLAMP == math.log(1000 / 16)
    torch.testing.assert_close(box[0, 2] - box[0, 0], torch.tensor(1000.0))


# ---------------------------------------------------------------- integral (distance) coder


def two_bin_logits(t: torch.Tensor, reg_max: int = R) -> torch.Tensor:
    """(...) distances -> (..., R+1) logits of mass (ceil - t) on floor(t), (t - floor) on ceil."""
    lo = t.floor().long()
    w_hi = t - lo
    probs = F.one_hot(lo, reg_max + 1) * (1 - w_hi)[..., None]
    probs = probs + F.one_hot((lo + 1).clamp(max=reg_max), reg_max + 1) * w_hi[..., None]
    return probs.clamp(min=1e-12).log()


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
