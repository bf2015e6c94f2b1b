"""retina.assign.atss: adaptive training sample selection."""

import torch

from retina.assign.atss import ATSSAssigner
from retina.assign.max_iou import BACKGROUND
from tests.helpers import gfl_anchors


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
