"""retina.assign.ceiling: which boxes the real assigners make positive by their own rule,
against hand-computed cases."""

import torch

from retina.assign import ATSSAssigner, MaxIoUAssigner
from retina.assign.ceiling import match_boxes, rule_only
from retina.model.anchors import cell_anchors, grid_anchors


def grid(stride: int, side: float, cells: int, offset: float = 0.0) -> torch.Tensor:
    """Square anchors of ``side`` px on a cells x cells grid of step ``stride``."""
    cell = cell_anchors(side, torch.tensor([1.0]), torch.tensor([1.0]))
    return grid_anchors(cell, stride, cells, cells, offset).float()


def test_a_box_equal_to_an_anchor_is_positive_and_one_no_anchor_reaches_is_not():
    anchors = [torch.tensor([[0.0, 0, 32, 32], [32, 0, 64, 32]])]
    boxes = torch.tensor([[0.0, 0, 32, 32],  # the first anchor: IoU 1
                          [40, 8, 44, 12]])  # 4 x 4 inside the second: IoU 16 / 1024
    full = MaxIoUAssigner(fg_iou=0.5, bg_iou=0.4, allow_low_quality=True)
    match = match_boxes(rule_only(full), anchors, boxes)
    assert match.positive.tolist() == [True, False]
    torch.testing.assert_close(match.best_iou, torch.tensor([1.0, 16 / 1024]))
    # the low-quality fallback would have given the small box the second anchor
    assert match_boxes(full, anchors, boxes).positive.tolist() == [True, True]
    assert full.allow_low_quality  # rule_only copies; the assigner is left as it was


def test_an_anchor_goes_to_one_box_only():
    anchors = [torch.tensor([[0.0, 0, 32, 32]])]
    # both overlap the one anchor by IoU >= 0.5 (1 and 768 / 1024): it goes to the first
    boxes = torch.tensor([[0.0, 0, 32, 32], [0, 0, 32, 24]])
    match = match_boxes(rule_only(MaxIoUAssigner()), anchors, boxes)
    assert match.positive.tolist() == [True, False]
    torch.testing.assert_close(match.best_iou, torch.tensor([1.0, 0.75]))


def test_atss_needs_a_candidate_centre_strictly_inside_the_box():
    # 16-px anchors centred on a stride-8 grid at 0, 8, 16, 24 (offset 0)
    anchors = [grid(8, 16.0, 4)]
    boxes = torch.tensor([[1.0, 1, 7, 7],  # centre (4, 4): no anchor centre inside
                          [5, 5, 11, 11]])  # centre (8, 8): the anchor centred there
    match = match_boxes(ATSSAssigner(topk=9), anchors, boxes)
    # both overlap their best anchors by 6 * 6 / (16 * 16): [-8, 8]^2 or [0, 16]^2 and
    # [0, 16]^2. The second box's 9 candidates: that anchor (36 / 256), the 4 at distance 8
    # (3 * 6 / (256 + 36 - 18) = 18 / 274) and the 4 diagonal ones (9 / 283): mean 0.0590,
    # std 0.0350, threshold 0.0940 <= 36 / 256, and the centre (8, 8) is inside the box
    torch.testing.assert_close(match.best_iou, torch.tensor([36 / 256, 36 / 256]))
    assert match.positive.tolist() == [False, True]


def test_the_level_of_each_boxs_best_anchor():
    anchors = [grid(8, 32.0, 8), grid(16, 64.0, 4)]  # P3: 64 anchors, P4: 16
    boxes = torch.tensor([[0.0, 0, 30, 30], [0, 0, 60, 60]])
    match = match_boxes(rule_only(MaxIoUAssigner()), anchors, boxes)
    assert match.best_level.tolist() == [0, 1]
    assert match.positive.tolist() == [True, True]
    empty = match_boxes(ATSSAssigner(), anchors, torch.zeros(0, 4))
    assert empty.positive.shape == (0,)
