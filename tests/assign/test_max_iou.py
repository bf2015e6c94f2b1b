"""retina.assign.max_iou: the IoU matcher against torchvision's and by hand."""

import torch
from torchvision.models.detection._utils import Matcher

from retina.assign import BACKGROUND, IGNORE, MaxIoUAssigner


def test_agrees_with_torchvision_on_random_iou():
    g = torch.Generator().manual_seed(0)
    ours = MaxIoUAssigner(0.5, 0.4, allow_low_quality=True).match
    ref = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    mats = [torch.rand(m, 300, generator=g) ** 3 for m in (1, 5, 12, 12)]
    # batch with padding: pad to 12 rows
    batch = torch.zeros(len(mats), 12, 300)
    valid = torch.zeros(len(mats), 12, dtype=torch.bool)
    for i, m in enumerate(mats):
        batch[i, : len(m)] = m
        valid[i, : len(m)] = True
    got = ours(batch, valid)
    for i, m in enumerate(mats):
        assert torch.equal(got[i], ref(m)), i


def test_hand_built_ignore_band_tie_and_empty_image():
    # image 0: two boxes, five anchors
    iou = torch.tensor(
        [
            [
                [0.6, 0.45, 0.1, 0.3, 0.3],  # box 0
                [0.2, 0.45, 0.7, 0.1, 0.0],  # box 1
            ],
            [[0.0] * 5, [0.0] * 5],  # image 1: padding only
        ]
    )
    valid = torch.tensor([[True, True], [False, False]])
    got = MaxIoUAssigner(0.5, 0.4, allow_low_quality=False).match(iou, valid)
    # anchor 1: tie 0.45 / 0.45 -> first box, in the ignore band
    # anchor 3: 0.3 < 0.4 -> background
    assert got[0].tolist() == [0, IGNORE, 1, BACKGROUND, BACKGROUND]
    assert got[1].tolist() == [BACKGROUND] * 5

    # low quality: a box whose best IoU is 0.3 (anchors 3 and 4 tie) keeps both anchors
    iou2 = torch.tensor([[[0.3, 0.1, 0.0, 0.3], [0.0, 0.9, 0.0, 0.0]]])
    got2 = MaxIoUAssigner(0.5, 0.4, allow_low_quality=True).match(iou2, torch.tensor([[True, True]]))
    assert got2[0].tolist() == [0, 1, BACKGROUND, 0]


def test_no_boxes_at_all():
    m = MaxIoUAssigner()
    out = m(torch.rand(7, 4), [7], torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (2, 7) and (out == BACKGROUND).all()
