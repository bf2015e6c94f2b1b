import math

import torch

from retina.ops.boxes import DELTA_CLAMP, DeltaCoder, decode_deltas, encode_deltas


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
