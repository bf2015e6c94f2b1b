"""retina.assign: every assigner answers one contract."""

import pytest
import torch

from retina.assign import BACKGROUND, IGNORE, ATSSAssigner, MaxIoUAssigner


@pytest.mark.parametrize("assigner", [MaxIoUAssigner(), ATSSAssigner(topk=3)], ids=["maxiou", "atss"])
def test_every_assigner_answers_one_contract(assigner):
    # two levels of anchors (6 + 2), image 0 with one box on anchor 1, image 1 with padding only
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [0, 10, 10, 20],
                            [10, 10, 20, 20], [20, 10, 30, 20], [0, 0, 20, 20], [10, 0, 30, 20]])
    gt_boxes = torch.tensor([[[10.0, 0, 20, 10]], [[0.0, 0, 0, 0]]])
    gt_labels = torch.tensor([[0], [-1]])
    matches = assigner(anchors, [6, 2], gt_boxes, gt_labels)
    assert matches.shape == (2, 8) and matches.dtype == torch.long
    assert matches[0, 1] == 0  # the anchor equal to the box is matched to it
    assert (matches[1] == BACKGROUND).all()  # padding is never matched
    assert set(matches.unique().tolist()) <= {0, BACKGROUND, IGNORE}
